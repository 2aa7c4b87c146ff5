"""Top-k order, section 3: task probing ("which token is the model determining now?").

Labels come from each position's saturation layers (:func:`core.analyses.topk.task_labels`, after the
0.85·L filter); features are the PRE-final-norm residual after block l0+1 at the same (original) position,
read by re-tracing the text. Per layer the tasks are balanced; the pooled probe (standardise + one-vs-rest
logistic regression, k-fold balanced accuracy, per-task accuracy and AUC) is compared with the reference's
random-feature control and with chance; a per-layer probe shows where the task is decodable.

Cells are addressed by 0-based block index inside (labels, features, the probe's first layer 5, as in the paper);
the frames and the saved probe's metadata give residual layers (layer = block index + 1, :mod:`core.layers`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.analyses.topk.collect import TextRecord, records_for
from core.analyses.topk.params import SECTION_VERSION
from core.analyses.topk.probes import (
    MIN_LAYER_FOR_PROBING,
    Probe,
    balanced_cells,
    evaluate_probe,
    random_feature_control,
    summarise_probe,
    task_labels,
)
from core.analyses.topk.saturation import keep_mask, saturation_layers, slot_match_from_top_ids
from core.cache import stable_key
from core.layers import layer_of_block, layers_of_block_array
from core.model.session import ModelSession
from core.paths import cache_dir
from core.progress import Progress, no_progress

MAX_PER_CLASS = 200  # per layer and task: bounds the pooled probe's size (and fitting time)
CONTROL = "random-feature control"


def text_labels(record: TextRecord, n_tasks: int, ratio: float, min_layer: int = MIN_LAYER_FOR_PROBING) -> np.ndarray:
    """One text -> int [layer, pos] task labels over ALL its positions (BOS and filtered positions: -1)."""
    sat = saturation_layers(slot_match_from_top_ids(record.top_ids))  # [pos, k], every position
    keep = keep_mask(sat, record.n_layers, ratio)
    keep[:record.first_pos] = False
    return task_labels(sat, record.n_layers, n_tasks, min_layer, keep=keep)


def probe_data(session: ModelSession, records: list[TextRecord], n_tasks: int, ratio: float,
               progress: Progress = no_progress) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (X [row, d_model] float32, y [row], layer_of_row [row] 0-based block index): balanced cells over all
    texts, features read at the cell's original (text, position) from a fresh trace."""
    labels = [text_labels(r, n_tasks, ratio) for r in records]
    offsets = np.cumsum([0] + [lab.shape[1] for lab in labels])
    cells = balanced_cells(np.concatenate(labels, axis=1), n_tasks, max_per_class=MAX_PER_CLASS)
    if len(cells) == 0:
        raise ValueError(f"No layer has at least 5 examples of each of the {n_tasks} tasks after the filter: use "
                         "more texts, longer texts or fewer tasks.")
    text_of_cell = np.searchsorted(offsets, cells[:, 1], side="right") - 1
    X = np.zeros((len(cells), session.adapter.d_model), np.float32)
    todo = np.unique(text_of_cell)
    for i, t in enumerate(todo):
        progress(i / len(todo), f"probe features: text {i + 1}/{len(todo)}")
        rows = np.flatnonzero(text_of_cell == t)
        resid = session.trace(torch.as_tensor(records[t].input_ids)).resid  # [layer+1, pos, d_model]
        layer, pos = cells[rows, 0], cells[rows, 1] - offsets[t]
        X[rows] = resid[layer + 1, pos].numpy()  # block output l0 = resid index l0 + 1 (pre-norm)
    y = np.concatenate(labels, axis=1)[cells[:, 0], cells[:, 1]]
    return X, y, cells[:, 0]


def _chance_rows(n_tasks: int) -> pd.DataFrame:
    rows = [{"task": -1, "metric": "balanced_accuracy", "mean": 1 / n_tasks}]
    rows += [{"task": t, "metric": "accuracy", "mean": 1 / n_tasks} for t in range(n_tasks)]
    rows += [{"task": t, "metric": "auc", "mean": 0.5} for t in range(n_tasks)]
    return pd.DataFrame(rows).assign(sem=np.nan, folds=0, source="chance")


def per_layer_frame(X: np.ndarray, y: np.ndarray, layer_of_row: np.ndarray, n_tasks: int, folds: int,
                    seed: int, control: np.ndarray) -> pd.DataFrame:
    """One probe per layer (same folds) -> layer (residual layer), source, mean, sem, rows (balanced accuracy).
    ``layer_of_row`` [row] holds 0-based block indices."""
    rows = []
    for layer in np.unique(layer_of_row):
        at = layer_of_row == layer
        for source, feats in (("probe", X), (CONTROL, control)):
            try:
                folds_frame = evaluate_probe(feats[at], y[at], n_tasks, min(folds, int(at.sum()) // 2), seed)
            except ValueError:
                continue
            summary = summarise_probe(folds_frame).query("metric == 'balanced_accuracy'")
            rows.append({"layer": layer_of_block(layer), "source": source, "mean": float(summary["mean"].iloc[0]),
                         "sem": float(summary["sem"].iloc[0]), "rows": int(at.sum())})
    return pd.DataFrame(rows, columns=["layer", "source", "mean", "sem", "rows"])


def probing_frames(session: ModelSession, records: list[TextRecord], params, progress: Progress = no_progress,
                   per_layer: bool = True) -> dict[str, pd.DataFrame]:
    """Pooled probe vs control vs chance (summary, folds), per-layer probe, and the dataset's make-up."""
    X, y, layer_of_row = probe_data(session, records, params.n_tasks, params.ratio,
                                    lambda f, m: progress(0.5 * f, m))
    progress(0.5, f"pooled probe on {len(y)} examples ({params.folds}-fold)…")
    control = random_feature_control(X, y, params.seed)
    pooled = evaluate_probe(X, y, params.n_tasks, params.folds, params.seed).assign(source="probe")
    progress(0.65, "random-feature control…")
    ctrl = evaluate_probe(control, y, params.n_tasks, params.folds, params.seed).assign(source=CONTROL)
    summary = pd.concat([summarise_probe(pooled).assign(source="probe"),
                         summarise_probe(ctrl).assign(source=CONTROL),
                         _chance_rows(params.n_tasks)], ignore_index=True)
    dataset = pd.DataFrame({"layer": layers_of_block_array(layer_of_row), "task": y}).groupby(["layer", "task"]).size()
    out = {"summary": summary, "folds": pd.concat([pooled, ctrl], ignore_index=True),
           "dataset": dataset.rename("rows").reset_index()}
    if per_layer:
        progress(0.8, "per-layer probes…")
        out["per_layer"] = per_layer_frame(X, y, layer_of_row, params.n_tasks, params.folds, params.seed, control)
    progress(1.0, "probing done")
    return out


def probing_section(session: ModelSession, params, progress: Progress = no_progress) -> dict[str, pd.DataFrame]:
    """Section 3 on the first ``params.n`` texts."""
    records = records_for(session, params, lambda f, m: progress(0.4 * f, m))
    frames = probing_frames(session, records, params, lambda f, m: progress(0.4 + 0.6 * f, m))
    return {name: frames[name] for name in ("summary", "per_layer", "folds", "dataset")}


def probe_path(session: ModelSession, params) -> Path:
    """Where the exit probe of this model + probing setup is stored (cache/probes/<digest>.npz + .json)."""

    key = stable_key("topk-probe", model=session.identity(), n=params.n, seed=params.seed, k=params.k,
                     max_tokens=params.max_tokens, ratio=params.ratio, n_tasks=params.n_tasks,
                     version=SECTION_VERSION)
    return cache_dir() / "probes" / f"{key[:24]}.npz"


def trained_probe(session: ModelSession, params, progress: Progress = no_progress) -> Probe:
    """The task probe fitted on ALL balanced examples of the first ``params.n`` texts, saved as npz + JSON
    under cache/probes (read back without pickle). Its metadata names residual layers: ``layers`` it was
    trained on and ``min_layer``, the first of them it is applied to (the paper's block index 5 -> layer 6)."""
    path = probe_path(session, params)
    if path.is_file():
        return Probe.load(path)
    records = records_for(session, params, lambda f, m: progress(0.5 * f, m), label="probe texts: ")
    X, y, layer_of_row = probe_data(session, records, params.n_tasks, params.ratio,
                                    lambda f, m: progress(0.5 + 0.4 * f, m))  # layer_of_row: block indices
    progress(0.9, f"fitting the exit probe on {len(y)} examples…")
    layers = sorted(set(layers_of_block_array(layer_of_row).tolist()))
    probe = Probe.fit(X, y, meta={"model": session.identity(), "n_texts": params.n, "seed": params.seed,
                                  "n_tasks": params.n_tasks, "min_layer": layer_of_block(MIN_LAYER_FOR_PROBING),
                                  "rows": int(len(y)), "layers": layers,
                                  "layer_convention": "residual layer l = the stream after block l (1-based)"})
    probe.save(path)
    return probe

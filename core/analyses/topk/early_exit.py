"""Top-k order, sections 5-6: early exit with the task probe, and "better language modelling".

Early exit (per position t, label = the actual next token): exit at layer l0, predict the logit lens's
top-1 there, cost l0+1 blocks; never exiting costs L blocks and predicts the output. speedup = L·N / Σ cost.
* baseline: the output (speedup 1); oracle: exit at the true top-1 saturation layer s_0 (same predictions);
* probe: the first l0 >= 5 (the probe's smallest training layer) where the task probe says "task 2" (the
  model has moved on to the 2nd token, so its top-1 is settled) — the paper's rule; "probe (task ≥ 2)" also
  exits when the probe says a later task;
* softmax response: first l0 with p_top1 - p_top2 >= thr; hidden-state saturation: first l0 >= 1 with
  cos(pre-norm block output l0, pre-norm block output l0-1) >= thr.
Every method builds its own exit-layer array (the reference aliased them). The probe is trained on the
first n texts and evaluated on the next n_eval texts, so training and evaluation texts are disjoint.

l0 above and the exit-layer arrays are 0-based block indices (the paper's); the frames give residual layers
(``min_layer`` 6 = the paper's 5, the probe's layers) and costs in blocks run (l0 + 1 = the exit's residual layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core.analyses.topk.collect import TextRecord, records_for
from core.analyses.topk.ordering import two_proportion_z
from core.analyses.topk.probes import MIN_LAYER_FOR_PROBING, Probe
from core.analyses.topk.probing import trained_probe
from core.layers import layer_of_block
from core.model.session import ModelSession
from core.progress import Progress, no_progress

SOFTMAX_THRESHOLDS: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.92, 0.94)
STATE_THRESHOLDS: tuple[float, ...] = (0.986, 0.988, 0.989, 0.99, 0.991, 0.992, 0.993, 0.994, 0.995)
EARLY_MARGIN = 7  # better LM: group B = top-2 saturated early, s_1 <= L-7 (the paper's, on 0-based block indices)


@dataclass(frozen=True)
class ExitInputs:
    """Per layer l0 and evaluated position: top1 [layer, pos] lens top-1 ids; labels [pos] next tokens;
    sat0 [pos] top-1 saturation layers; margin [layer, pos] p_top1 - p_top2; cosine [layer, pos];
    probe_task [layer, pos] the probe's task (-1 below its smallest layer)."""

    top1: np.ndarray
    labels: np.ndarray
    sat0: np.ndarray
    margin: np.ndarray
    cosine: np.ndarray
    probe_task: np.ndarray


def first_exit(condition: np.ndarray, min_layer: int = 0) -> np.ndarray:
    """bool [layer, pos] -> int [pos] (a new array): the first l0 >= min_layer where it holds; L-1 (= the
    output, costing all L blocks) where it never does."""
    cond = np.array(condition, dtype=bool, copy=True)
    cond[:min_layer] = False
    cond[-1] = True
    return cond.argmax(0)


def exit_layers(inputs: ExitInputs, min_layer: int = MIN_LAYER_FOR_PROBING,
                softmax: tuple[float, ...] = SOFTMAX_THRESHOLDS,
                state: tuple[float, ...] = STATE_THRESHOLDS) -> list[tuple[str, float, np.ndarray]]:
    """-> [(method, threshold (NaN if none), exit layer [pos])], each array freshly built."""
    n_layers, n_pos = inputs.top1.shape
    out = [("baseline", math.nan, np.full(n_pos, n_layers - 1)),
           ("oracle", math.nan, np.array(inputs.sat0, dtype=np.int64, copy=True)),
           ("probe", math.nan, first_exit(inputs.probe_task == 1, min_layer)),
           ("probe (task ≥ 2)", math.nan, first_exit(inputs.probe_task >= 1, min_layer))]
    out += [("softmax response", thr, first_exit(inputs.margin >= thr)) for thr in softmax]
    out += [("hidden-state saturation", thr, first_exit(inputs.cosine >= thr, 1)) for thr in state]
    return out


def exit_points(inputs: ExitInputs, min_layer: int = MIN_LAYER_FOR_PROBING) -> pd.DataFrame:
    """-> method, threshold, accuracy, speedup (L·N / Σ(l0+1)), mean_blocks, positions."""
    n_layers, n_pos = inputs.top1.shape
    rows = []
    for method, thr, layer in exit_layers(inputs, min_layer):
        predicted = inputs.top1[layer, np.arange(n_pos)]
        cost = layer + 1
        rows.append({"method": method, "threshold": thr, "accuracy": float(np.mean(predicted == inputs.labels)),
                     "speedup": n_layers * n_pos / float(cost.sum()), "mean_blocks": float(cost.mean()),
                     "positions": n_pos})
    return pd.DataFrame(rows)


def probe_tasks(probe: Probe, resid: torch.Tensor, min_layer: int = MIN_LAYER_FOR_PROBING) -> np.ndarray:
    """[layer+1, pos, d_model] pre-norm residuals -> int [layer, pos] the probe's task at each block output
    l0 >= min_layer (-1 below: the probe never saw those layers)."""
    n_layers, n_pos = resid.shape[0] - 1, resid.shape[1]
    out = np.full((n_layers, n_pos), -1, np.int64)
    if min_layer < n_layers:
        feats = resid[min_layer + 1:].reshape(-1, resid.shape[-1]).numpy()  # [(layer, pos), d_model]
        out[min_layer:] = probe.predict(feats).reshape(n_layers - min_layer, n_pos)
    return out


def record_exit_inputs(session: ModelSession, record: TextRecord, probe: Probe) -> ExitInputs:
    """One evaluation text -> its positions first_pos .. T-2 (those with a next token)."""
    resid = session.trace(torch.as_tensor(record.input_ids)).resid  # [layer+1, pos, d_model]
    ps = slice(record.first_pos, len(record.input_ids) - 1)
    sat = record.saturation()  # [pos - first_pos, k]
    return ExitInputs(top1=record.top_ids[:, ps, 0].astype(np.int64),
                      labels=record.input_ids[record.first_pos + 1:].astype(np.int64),
                      sat0=sat[:len(record.input_ids) - 1 - record.first_pos, 0],
                      margin=record.top_probs[:, ps, 0] - record.top_probs[:, ps, 1], cosine=record.cosine[:, ps],
                      probe_task=probe_tasks(probe, resid)[:, ps])


def concat_inputs(parts: list[ExitInputs]) -> ExitInputs:
    """Stack several texts' positions."""
    return ExitInputs(**{name: np.concatenate([getattr(p, name) for p in parts], axis=-1)
                         for name in ExitInputs.__dataclass_fields__})


def _span(layers: list[int]) -> str:
    return f"{min(layers)}-{max(layers)}" if layers else "unknown"


def early_exit_section(session: ModelSession, params, progress: Progress = no_progress) -> dict[str, pd.DataFrame]:
    """Section 5: probe trained on texts 0..n-1, every method evaluated on texts n..n+n_eval-1."""

    probe = trained_probe(session, params, lambda f, m: progress(0.5 * f, m))
    records = records_for(session, params, lambda f, m: progress(0.5 + 0.3 * f, m), offset=params.n,
                          n=params.n_eval, label="evaluation texts: ")
    parts = []
    for i, record in enumerate(records):
        progress(0.8 + 0.2 * i / len(records), f"probe over evaluation text {i + 1}/{len(records)}")
        parts.append(record_exit_inputs(session, record, probe))
    inputs = concat_inputs(parts)
    points = exit_points(inputs)
    summary = pd.DataFrame([{"layers": inputs.top1.shape[0], "train_texts": params.n, "eval_texts": len(records),
                             "eval_positions": int(inputs.labels.size), "probe_examples": probe.meta.get("rows"),
                             "probe_layers": _span(probe.meta.get("layers", [])),
                             "probe_tasks": len(probe.classes), "min_layer": layer_of_block(MIN_LAYER_FOR_PROBING)}])
    return {"points": points, "summary": summary}


# -- better language modelling -------------------------------------------------------------------------------
def better_lm_frames(records: list[TextRecord], margin: int = EARLY_MARGIN) -> dict[str, pd.DataFrame]:
    """Positions whose final top-1 is wrong: how often the final top-2 is the actual next token when the top-2
    saturated only at the last layer (A: s_1 = L-1) vs early (B: s_1 <= L-margin); two-proportion z-test.

    s_1 is a 0-based block index, as in the paper; the group names give residual layers: A = layer L, B = by
    layer L - margin + 1 (the paper's s_1 <= L - margin)."""
    tops, labels, s1 = [], [], []
    for record in records:
        ps = slice(record.first_pos, len(record.input_ids) - 1)
        tops.append(record.top_ids[-1, ps, :2])
        labels.append(record.input_ids[record.first_pos + 1:])
        s1.append(record.saturation()[:len(record.input_ids) - 1 - record.first_pos, 1])
    top, label, sat1 = np.concatenate(tops), np.concatenate(labels), np.concatenate(s1)
    n_layers = records[0].n_layers
    wrong = top[:, 0] != label
    top2_right = top[:, 1] == label
    # the paper's bound s_1 <= L - margin as a residual layer (0: a model of fewer than margin blocks, none qualify)
    last_early = layer_of_block(n_layers - margin) if n_layers >= margin else 0
    groups = {f"A: top-2 settled only at the last layer, {n_layers}": wrong & (sat1 == n_layers - 1),
              f"B: top-2 settled by layer {last_early} (the paper's s_1 ≤ L−{margin}, 0-based)":
                  wrong & (sat1 <= n_layers - margin)}
    rows = [{"group": name, "positions": int(mask.sum()), "top2_correct": int((mask & top2_right).sum()),
             "share": float((mask & top2_right).sum() / mask.sum()) if mask.any() else math.nan}
            for name, mask in groups.items()]
    (a, b) = rows
    z, p = two_proportion_z(b["top2_correct"], b["positions"], a["top2_correct"], a["positions"])
    test = {"positions": int(len(label)), "top1_wrong": int(wrong.sum()), "share_A": a["share"],
            "share_B": b["share"], "z_B_minus_A": z, "p": p}
    return {"groups": pd.DataFrame(rows), "test": pd.DataFrame([test])}


def better_lm_section(session: ModelSession, params, progress: Progress = no_progress) -> dict[str, pd.DataFrame]:
    """Section 6 on the first ``params.n`` texts."""
    return better_lm_frames(records_for(session, params, progress))

"""Top-k order: task labels, balanced datasets and the task probe with its random-feature control."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from core import atomic
from core.analyses.topk.saturation import _check_sat

MIN_LAYER_FOR_PROBING = 5
MIN_PER_CLASS = 5
PROBE_SUFFIXES = (".npz", ".json")
_REFUSED_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".joblib", ".bin", ".ckpt")


# -- task labels and probes -------------------------------------------------------------------------------------
def task_labels(sat: np.ndarray, n_layers: int, n_tasks: int, min_layer: int = MIN_LAYER_FOR_PROBING,
                keep: np.ndarray | None = None) -> np.ndarray:
    """[pos, k] -> int [layer, pos]: task i (determining the (i+1)-th token) on layers (s_{i-1}, s_i], from
    min_layer on, only where s_i > min_layer; -1 = unlabelled. Positions outside ``keep`` (e.g. the 0.85·L
    filter) stay unlabelled; a cell two tasks claim (out-of-order saturation) is left unlabelled too."""
    sat = _check_sat(sat, n_layers)
    if not 1 <= n_tasks <= sat.shape[1]:
        raise ValueError(f"n_tasks must lie in 1..{sat.shape[1]} (the k saturation layers computed).")
    labels = np.full((n_layers, sat.shape[0]), -1, np.int64)
    claims = np.zeros((n_layers, sat.shape[0]), np.int64)
    for pos, row in enumerate(sat):
        if keep is not None and not keep[pos]:
            continue
        for task in range(n_tasks):
            if row[task] <= min_layer:
                continue
            start = min_layer if task == 0 else max(min_layer, row[task - 1] + 1)
            end = min(row[task] + 1, n_layers)
            labels[start:end, pos] = task
            claims[start:end, pos] += 1
    labels[claims > 1] = -1
    return labels


def balanced_cells(labels: np.ndarray, n_tasks: int, min_per_class: int = MIN_PER_CLASS,
                   max_per_class: int | None = None) -> np.ndarray:
    """[layer, pos] labels -> int [row, 2] (layer, pos) cells: per layer n of each task, n = the smallest task's
    count there (capped at max_per_class), evenly spaced in position order (the reference takes the first n,
    which with pooled texts over-represents the first texts); layers with n < min_per_class are skipped."""
    labels = np.asarray(labels)
    cells = []
    for layer in range(labels.shape[0]):
        members = [np.flatnonzero(labels[layer] == task) for task in range(n_tasks)]
        n = min(len(m) for m in members)
        if n < min_per_class:
            continue
        n = n if max_per_class is None else min(n, max_per_class)
        for m in members:
            chosen = m[np.linspace(0, len(m) - 1, n).round().astype(np.int64)] if n < len(m) else m
            cells.extend((layer, int(pos)) for pos in chosen)
    return np.asarray(cells, dtype=np.int64).reshape(-1, 2)


def probe_dataset(features: np.ndarray, labels: np.ndarray, n_tasks: int | None = None,
                  min_per_class: int = MIN_PER_CLASS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """features [layer, pos, d] + labels [layer, pos] (same position index) -> (X [row, d], y [row],
    layer_of_row [row]), class-balanced per layer and pooled over layers."""
    features, labels = np.asarray(features), np.asarray(labels)
    if features.shape[:2] != labels.shape:
        raise ValueError(f"Features {features.shape[:2]} and labels {labels.shape} must share [layer, pos].")
    n_tasks = int(labels.max()) + 1 if n_tasks is None else n_tasks
    cells = balanced_cells(labels, n_tasks, min_per_class)
    return (features[cells[:, 0], cells[:, 1]].astype(np.float32), labels[cells[:, 0], cells[:, 1]],
            cells[:, 0])


@dataclass(frozen=True)
class Probe:
    """Standardise + one-vs-rest logistic regression, as plain arrays (saved without pickle).

    mean, scale [d]; coef [task, d]; intercept [task]; classes [task]."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    classes: np.ndarray
    meta: dict

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, meta: dict | None = None) -> "Probe":
        """X [row, d], y [row] -> a fitted probe (lbfgs, C = 1, max_iter = 1000, one-vs-rest)."""
        from sklearn.linear_model import LogisticRegression  # heavy optional: only the probe sections need scikit-learn
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.preprocessing import StandardScaler

        if len(np.unique(y)) < 2:
            raise ValueError("A probe needs at least two tasks among its examples; use more texts.")
        scaler = StandardScaler().fit(X)
        model = OneVsRestClassifier(LogisticRegression(max_iter=1000)).fit(scaler.transform(X), y)
        coef = np.concatenate([e.coef_ for e in model.estimators_]) if len(model.classes_) > 2 \
            else np.concatenate([-model.estimators_[0].coef_, model.estimators_[0].coef_])
        intercept = np.concatenate([e.intercept_ for e in model.estimators_]) if len(model.classes_) > 2 \
            else np.concatenate([-model.estimators_[0].intercept_, model.estimators_[0].intercept_])
        return cls(scaler.mean_.astype(np.float64), scaler.scale_.astype(np.float64), coef.astype(np.float64),
                   intercept.astype(np.float64), model.classes_.astype(np.int64), dict(meta or {}))

    def decision(self, X: np.ndarray) -> np.ndarray:
        """[row, d] -> [row, task] one-vs-rest scores."""
        return ((np.asarray(X, np.float64) - self.mean) / self.scale) @ self.coef.T + self.intercept

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """[row, d] -> [row, task]: the one-vs-rest sigmoids, normalised to sum to 1."""
        sig = 1.0 / (1.0 + np.exp(-self.decision(X)))
        return sig / sig.sum(1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """[row, d] -> [row] task labels."""
        return self.classes[self.decision(X).argmax(1)]

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.npz`` (arrays) and ``<path>.json`` (metadata); returns the .npz path."""
        base = _probe_base(path)
        base.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(base.with_suffix(".npz")) as tmp, open(tmp, "wb") as handle:  # whole or absent
            np.savez(handle, mean=self.mean, scale=self.scale, coef=self.coef, intercept=self.intercept,
                     classes=self.classes)
        atomic.write_text(base.with_suffix(".json"), json.dumps({"format": "layerscope-probe-1", **self.meta},
                                                                indent=1))
        return base.with_suffix(".npz")

    @classmethod
    def load(cls, path: str | Path) -> "Probe":
        """Read a probe saved by :meth:`save` (npz with allow_pickle=False + JSON; never unpickles)."""
        base = _probe_base(path)
        try:
            with np.load(base.with_suffix(".npz"), allow_pickle=False) as arrays:
                parts = {name: arrays[name] for name in ("mean", "scale", "coef", "intercept", "classes")}
            meta = json.loads(base.with_suffix(".json").read_text()) if base.with_suffix(".json").is_file() else {}
        except (KeyError, ValueError, OSError) as err:
            raise ValueError(f"{base.with_suffix('.npz')} is not a Layerscope probe file ({err}).") from err
        if parts["coef"].shape != (len(parts["classes"]), len(parts["mean"])):
            raise ValueError(f"{base.with_suffix('.npz')}: inconsistent probe shapes.")
        meta.pop("format", None)
        return cls(**parts, meta=meta)


def _probe_base(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() in _REFUSED_SUFFIXES:
        raise ValueError(f"{path.name}: probes are read only from .npz + .json files; pickled or torch files "
                         "(.pkl, .pt, .joblib, ...) are never loaded, since unpickling can run arbitrary code.")
    return path.with_suffix("") if path.suffix.lower() in PROBE_SUFFIXES else path


def random_feature_control(X: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """[row, d] -> [row, d] the reference's control: per class, i.i.d. Gaussian features with that class's scalar
    mean and std over all its values (it leaks the class through mean/std, so it can beat chance)."""
    rng = np.random.default_rng(seed)
    out = np.empty(X.shape, np.float32)
    for task in np.unique(y):
        rows = y == task
        out[rows] = rng.normal(float(X[rows].mean()), float(X[rows].std()), size=(int(rows.sum()), X.shape[1]))
    return out


def evaluate_probe(X: np.ndarray, y: np.ndarray, n_tasks: int, folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """X [row, d], y [row] -> tidy per-fold metrics: fold, task (-1 = all tasks), metric
    (balanced_accuracy | accuracy | auc), value. Shuffled, seeded k-fold."""
    from sklearn.model_selection import KFold  # heavy optional: only the probe sections need scikit-learn

    if len(y) < folds * 2 or len(np.unique(y)) < 2:
        raise ValueError(f"Too few labelled examples to probe ({len(y)} rows, {len(np.unique(y))} tasks): "
                         "use more texts or fewer tasks.")
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a small fold may miss a task: its metrics are skipped
        for fold, (train, test) in enumerate(KFold(folds, shuffle=True, random_state=seed).split(X)):
            rows += _fold_metrics(X, y, n_tasks, fold, train, test)
    return pd.DataFrame(rows, columns=["fold", "task", "metric", "value"])


def _fold_metrics(X: np.ndarray, y: np.ndarray, n_tasks: int, fold: int, train: np.ndarray,
                  test: np.ndarray) -> list[dict]:
    """One fold: fit on ``train`` rows, score on ``test`` rows -> metric rows."""
    # heavy optional: only the probe sections need scikit-learn
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_auc_score

    if len(np.unique(y[train])) < 2:
        return []
    probe = Probe.fit(X[train], y[train])
    pred, proba = probe.predict(X[test]), probe.predict_proba(X[test])
    rows = [{"fold": fold, "task": -1, "metric": "balanced_accuracy",
             "value": float(balanced_accuracy_score(y[test], pred))}]
    cm = confusion_matrix(y[test], pred, labels=list(range(n_tasks)))
    for task in range(n_tasks):
        col = np.flatnonzero(probe.classes == task)
        truth = y[test] == task
        if truth.any():
            rows.append({"fold": fold, "task": task, "metric": "accuracy", "value": cm[task, task] / truth.sum()})
        if truth.any() and (~truth).any() and len(col):
            rows.append({"fold": fold, "task": task, "metric": "auc",
                         "value": float(roc_auc_score(truth, proba[:, col[0]]))})
    return rows


def summarise_probe(folds_frame: pd.DataFrame) -> pd.DataFrame:
    """Per-fold metrics -> task, metric, mean, sem, folds."""
    grouped = folds_frame.groupby(["task", "metric"], as_index=False)["value"]
    out = grouped.agg(mean="mean", sem=lambda v: float(stats.sem(v)) if len(v) > 1 else math.nan, folds="count")
    return out

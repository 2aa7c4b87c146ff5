"""Top-k order ("Looking Beyond the Top-1", Lioubashevski et al.): the shared definitions module.

Model-agnostic numpy in, numpy/pandas out. The text sections (:mod:`core.analyses.topk_sections`,
:mod:`core.analyses.topk_exit`) and the intervention / ViT / Whisper sections (:mod:`core.analyses.topk_more`)
all use these definitions, so every modality measures the same thing.

Conventions (see RESEARCH.md §1): a *layer* here is the 0-based block-output index l0 = 0..L-1 (l0 = the
residual after block l0+1; the embeddings are not a layer); slot i (0-based) is the i-th best token of the
logit lens at that layer. Reference-code bugs fixed here: a slot held at every layer saturates at layer 0
(not L); ties between saturation layers count as discordant in the strict Kendall's tau; labels and
features are aligned by the ORIGINAL position index (labels are [layer, pos] like the features).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

MAX_TOP1_SATURATION_RATIO = 0.85
MIN_LAYER_FOR_PROBING = 5
MIN_PER_CLASS = 5
N_PERMUTATIONS = 1000
PROBE_SUFFIXES = (".npz", ".json")
_REFUSED_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".joblib", ".bin", ".ckpt")


# -- saturation ---------------------------------------------------------------------------------------------
def slot_match_from_top_ids(top_ids: np.ndarray) -> np.ndarray:
    """[layer, pos, k] top-k ids per block output (last layer = the model's output) -> bool [layer, pos, k]:
    True where slot i at that layer holds the final slot-i token."""
    top_ids = np.asarray(top_ids)
    if top_ids.ndim != 3 or top_ids.shape[0] < 1:
        raise ValueError(f"top_ids must be [layer, pos, k] with at least one layer; got shape {top_ids.shape}.")
    return top_ids == top_ids[-1][None]


def saturation_layers(slot_match: np.ndarray) -> np.ndarray:
    """bool [layer, pos, k] -> int [pos, k]: the earliest layer l0 from which slot i holds its final token
    at every later layer (held everywhere -> 0; only at the last layer -> L-1)."""
    slot_match = np.asarray(slot_match, dtype=bool)
    if slot_match.ndim != 3 or slot_match.shape[0] < 1:
        raise ValueError(f"slot_match must be [layer, pos, k]; got shape {slot_match.shape}.")
    if not slot_match[-1].all():
        raise ValueError("The last layer must hold every final slot (it defines them): build slot_match with "
                         "slot_match_from_top_ids, whose last layer is the model's own output.")
    n_layers = slot_match.shape[0]
    mismatch_rev = ~slot_match[::-1]  # [layer, pos, k], last layer first
    trailing = np.where(mismatch_rev.any(0), mismatch_rev.argmax(0), n_layers)  # [pos, k] layers held at the end
    return (n_layers - trailing).astype(np.int64)


def keep_mask(sat: np.ndarray, n_layers: int, ratio: float = MAX_TOP1_SATURATION_RATIO) -> np.ndarray:
    """[pos, k] saturation layers -> bool [pos]: the top-1 saturates early enough, s_0 <= int(ratio * L)."""
    sat = _check_sat(sat, n_layers)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"The filter ratio must lie in (0, 1]; got {ratio}.")
    return sat[:, 0] <= int(ratio * n_layers)


def _check_sat(sat: np.ndarray, n_layers: int) -> np.ndarray:
    sat = np.asarray(sat)
    if sat.ndim != 2:
        raise ValueError(f"Saturation layers must be [pos, k]; got shape {sat.shape}.")
    if n_layers < 1 or (sat.size and (sat.min() < 0 or sat.max() > n_layers - 1)):
        raise ValueError(f"Saturation layers must lie in 0..{n_layers - 1} for a {n_layers}-layer model.")
    return sat.astype(np.int64)


# -- ordering: rank vs saturation order -----------------------------------------------------------------------
def saturation_order(sat: np.ndarray, n_layers: int) -> np.ndarray:
    """[pos, k] -> float [pos, k]: 1 + the index of s_j among the position's sorted saturation layers (ties:
    first occurrence); NaN where s_j = L-1 (settled only at the output), as the paper's bars exclude them."""
    sat = _check_sat(sat, n_layers)
    ordered = np.sort(sat, axis=1)  # [pos, k]
    order = np.stack([np.searchsorted(row, values, side="left") for row, values in zip(ordered, sat)]) \
        if len(sat) else np.zeros(sat.shape, np.int64)
    return np.where(sat < n_layers - 1, order + 1.0, np.nan)


def stars(p: float) -> str:
    """Significance marks: *** p < 0.001, ** p < 0.01, * p < 0.05, n.s. otherwise ('' when untested)."""
    if p is None or not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "n.s."


def _ttest(a: np.ndarray, b: np.ndarray) -> float:
    """Student's t-test p (equal variances); NaN when a group has < 2 values or both are constant."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=True).pvalue)


def rank_order_table(sat: np.ndarray, n_layers: int) -> pd.DataFrame:
    """[pos, k] saturation layers (of kept positions) -> one row per token rank: rank (1-based), mean_order
    (mean 1-based saturation order), sem, n, p_vs_next (Student's t-test, equal variances, rank vs rank+1),
    stars."""
    order = saturation_order(sat, n_layers)
    rows = []
    for j in range(order.shape[1]):
        values = order[:, j][np.isfinite(order[:, j])]
        following = order[:, j + 1][np.isfinite(order[:, j + 1])] if j + 1 < order.shape[1] else np.array([])
        p = _ttest(values, following)
        rows.append({"rank": j + 1, "mean_order": float(values.mean()) if len(values) else math.nan,
                     "sem": float(stats.sem(values)) if len(values) > 1 else math.nan, "n": int(len(values)),
                     "p_vs_next": p, "stars": stars(p)})
    return pd.DataFrame(rows)


# -- strict Kendall's tau ---------------------------------------------------------------------------------------
def kendall_lengths(sat: np.ndarray, n_layers: int) -> np.ndarray:
    """[pos, k] -> int [pos]: k* = 1 + the last rank whose s_j != L-1 (0 when every slot settles at L-1)."""
    sat = _check_sat(sat, n_layers)
    early = sat != n_layers - 1  # [pos, k]
    last = sat.shape[1] - 1 - early[:, ::-1].argmax(1)
    return np.where(early.any(1), last + 1, 0)


def _tau_prefix(sat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """[..., pos, k] values and [pos] prefix lengths -> [..., pos] strict tau over the first k* values
    against 0..k*-1: concordant iff s_i < s_j for i < j; ties and inversions are discordant."""
    k = sat.shape[-1]
    i, j = np.triu_indices(k, 1)
    in_prefix = (j[None, :] < lengths[:, None])  # [pos, pair]
    concordant = sat[..., i] < sat[..., j]  # [..., pos, pair]
    n_pairs = in_prefix.sum(-1)  # [pos]
    score = np.where(in_prefix, np.where(concordant, 1.0, -1.0), 0.0).sum(-1)  # C - D
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(lengths >= 3, score / n_pairs, np.nan)


def strict_kendall_tau(sat: np.ndarray, n_layers: int) -> np.ndarray:
    """[pos, k] -> float [pos]: the strict Kendall's tau between token rank and saturation layer over the first
    k* ranks; NaN where skipped (k* < 3)."""
    sat = _check_sat(sat, n_layers)
    return _tau_prefix(sat, kendall_lengths(sat, n_layers))


def mean_tau(taus: np.ndarray) -> float:
    """Mean over the evaluated positions (NaN = skipped); NaN if none was evaluated."""
    taus = np.asarray(taus, dtype=float)
    return float(np.nanmean(taus)) if np.isfinite(taus).any() else math.nan


def permutation_test(sat: np.ndarray, n_layers: int, n_perm: int = N_PERMUTATIONS,
                     seed: int = 0) -> tuple[float, np.ndarray, float]:
    """[pos, k] -> (actual mean tau, [n_perm] permuted mean taus, p).

    Each repetition shuffles every position's k saturation layers independently and takes the first k* of
    them (k* from the unpermuted list). p = (1 + #{permuted >= actual}) / (1 + n_perm), so p is never 0 and
    its floor is 1 / (n_perm + 1)."""
    sat = _check_sat(sat, n_layers)
    if n_perm < 1:
        raise ValueError("n_perm must be at least 1.")
    lengths = kendall_lengths(sat, n_layers)
    actual = mean_tau(_tau_prefix(sat, lengths))
    if not np.isfinite(actual):
        return math.nan, np.full(n_perm, np.nan), math.nan
    rng = np.random.default_rng(seed)
    permuted = np.empty(n_perm)
    chunk = max(1, 2_000_000 // max(1, sat.size))
    for start in range(0, n_perm, chunk):
        reps = min(chunk, n_perm - start)
        shuffled = rng.permuted(np.broadcast_to(sat, (reps, *sat.shape)), axis=-1)  # [rep, pos, k]
        permuted[start:start + reps] = np.nanmean(_tau_prefix(shuffled, lengths), axis=-1)
    p = (1.0 + float(np.sum(permuted >= actual))) / (1.0 + n_perm)
    return actual, permuted, p


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
        from sklearn.linear_model import LogisticRegression
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
        np.savez(base.with_suffix(".npz"), mean=self.mean, scale=self.scale, coef=self.coef,
                 intercept=self.intercept, classes=self.classes)
        base.with_suffix(".json").write_text(json.dumps({"format": "layerscope-probe-1", **self.meta}, indent=1))
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
    from sklearn.model_selection import KFold

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


# -- two-proportion test ---------------------------------------------------------------------------------------
def two_proportion_z(hits_a: int, n_a: int, hits_b: int, n_b: int) -> tuple[float, float]:
    """(z, two-sided p) of H0 p_a == p_b with the pooled standard error; NaN when undefined."""
    if min(n_a, n_b) < 1:
        return math.nan, math.nan
    pooled = (hits_a + hits_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return math.nan, math.nan
    z = (hits_a / n_a - hits_b / n_b) / se
    return z, float(2 * (1 - stats.norm.cdf(abs(z))))

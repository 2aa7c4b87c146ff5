"""Top-k order: rank vs saturation order (t-tests), strict Kendall's tau and its permutation test."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from core.analyses.topk.params import N_PERMUTATIONS
from core.analyses.topk.saturation import _check_sat, saturation_order


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

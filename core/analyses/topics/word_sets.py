"""Word sets from an NPMI graph: the star heuristic and the exact max-coherence k-word topic (MEKC).

Both follow ``superposed-topics/algo/extract.py`` (Lim & Lauw 2023); the integer program is solved with
SciPy's ``milp`` (HiGHS) instead of CVXPY + SCIP. Self-pairs are never edges (a word is not its own
neighbour), so a centre cannot appear twice in its set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from core.analyses.topics.params import (  # the paper's settings
    DEFAULT_TIME_LIMIT,
    TOPIC_K,
    check_limits,
)

FUNCTION_THRESHOLDS = (0.0, 1.0)  # star_heuristic's defaults
FUNCTION_SIZE_LIMITS = (10, 32)


@dataclass(frozen=True)
class StarSet:
    """One accepted star: ``members`` are pool indices, the centre last (as in the reference)."""

    members: tuple[int, ...]
    centre: int
    star_weight: float  # mean NPMI of the centre's kept edges (the star's sort key)


@dataclass(frozen=True)
class Topic:
    """The best ``k`` words of one word set. ``status``: optimal | time limit | time limit, no solution |
    too few words | failed."""

    members: tuple[int, ...]  # pool indices, sorted
    coherence: float  # mean pairwise NPMI of the chosen words (nan when none chosen)
    status: str
    seconds: float

    @property
    def found(self) -> bool:
        return bool(self.members)


def star_heuristic(npmi: np.ndarray, thresholds: tuple[float, float] = FUNCTION_THRESHOLDS,
                   size_limits: tuple[int, int] = FUNCTION_SIZE_LIMITS) -> list[StarSet]:
    """[P, P] symmetric NPMI -> disjoint star sets, each of kappa_l..kappa_u pool indices.

    1. keep edges with theta_l <= w <= theta_u (no self-edges); 2. keep nodes of degree >= kappa_l and
    re-filter edges to them; 3. stars = (centre, neighbours, mean edge weight), heaviest first (ties: pool
    order); 4. greedily take each unused centre with its unused neighbours (the kappa_u - 1 heaviest if
    there are >= kappa_u), accept the set if it has >= kappa_l members, mark all of them used either way.
    """
    check_limits(thresholds, size_limits)
    k_lo, k_hi = size_limits
    adj = (npmi >= thresholds[0]) & (npmi <= thresholds[1])  # [P, P]
    np.fill_diagonal(adj, False)
    keep = adj.sum(axis=1) >= k_lo  # [P]
    adj &= keep[:, None] & keep[None, :]
    nodes = np.flatnonzero(keep)
    degree = adj[nodes].sum(axis=1)
    weight_sum = np.where(adj[nodes], npmi[nodes], 0.0).sum(axis=1)
    score = np.where(degree > 0, weight_sum / np.maximum(degree, 1), -1.0)
    order = nodes[np.argsort(-score, kind="stable")]
    score_of = dict(zip(nodes.tolist(), score.tolist()))
    used = np.zeros(len(npmi), dtype=bool)
    sets = []
    for centre in order.tolist():
        if used[centre]:
            continue
        candidates = np.flatnonzero(adj[centre] & ~used)
        if len(candidates) >= k_hi:
            heaviest = np.argsort(-npmi[centre, candidates], kind="stable")[: k_hi - 1]
            candidates = candidates[heaviest]
        members = tuple(int(c) for c in candidates) + (centre,)
        if len(members) >= k_lo:
            sets.append(StarSet(members, centre, float(score_of[centre])))
        used[list(members)] = True
    return sets


def _program(weights: np.ndarray, k: int) -> tuple[np.ndarray, list[LinearConstraint], int]:
    """[n, n] weights -> (objective, constraints, n) of the MEKC program over x [n] and e [n(n-1)/2]."""
    n = len(weights)
    iu, ju = np.triu_indices(n, 1)
    m = len(iu)
    cost = np.concatenate([np.zeros(n), -weights[iu, ju]])  # milp minimises
    edge_cols = n + np.arange(m)
    rows = np.arange(m)
    link = sparse.vstack([  # e_ij - x_i <= 0 and e_ij - x_j <= 0
        sparse.csr_matrix((np.r_[np.ones(m), -np.ones(m)], (np.r_[rows, rows], np.r_[edge_cols, iu])), (m, n + m)),
        sparse.csr_matrix((np.r_[np.ones(m), -np.ones(m)], (np.r_[rows, rows], np.r_[edge_cols, ju])), (m, n + m)),
    ])
    # sum_j e_ij = (k - 1) x_i: implied by the reference's constraints for integer points, but it makes the
    # LP relaxation far tighter, so HiGHS proves optimality quickly.
    deg_rows = np.r_[iu, ju, np.arange(n)]
    deg_cols = np.r_[edge_cols, edge_cols, np.arange(n)]
    degree = sparse.csr_matrix((np.r_[np.ones(2 * m), -(k - 1) * np.ones(n)], (deg_rows, deg_cols)), (n, n + m))
    totals = sparse.csr_matrix(np.vstack([np.r_[np.ones(n), np.zeros(m)], np.r_[np.zeros(n), np.ones(m)]]))
    constraints = [
        LinearConstraint(totals, [k, k * (k - 1) / 2], [k, k * (k - 1) / 2]),
        LinearConstraint(link, -np.inf, 0.0),
        LinearConstraint(degree, 0.0, 0.0),
    ]
    return cost, constraints, n


def coherence(npmi: np.ndarray, members: tuple[int, ...] | list[int]) -> float:
    """Mean NPMI over the unordered pairs of ``members`` (C_NPMI)."""
    idx = np.asarray(members, dtype=int)
    if len(idx) < 2:
        return float("nan")
    sub = npmi[np.ix_(idx, idx)]
    return float(sub[np.triu_indices(len(idx), 1)].mean())


def best_topic(npmi: np.ndarray, members: tuple[int, ...], k: int = TOPIC_K,
               time_limit: float = DEFAULT_TIME_LIMIT) -> Topic:
    """The ``k`` of ``members`` with the largest summed pairwise NPMI (exact MILP, HiGHS) and its coherence.

    On the time limit the best solution found so far is returned, flagged "time limit"; with none, no words.
    """
    start = time.perf_counter()
    members = tuple(int(m) for m in members)
    if len(members) < k:
        return Topic((), float("nan"), "too few words", 0.0)
    if len(members) == k:
        return Topic(tuple(sorted(members)), coherence(npmi, members), "optimal", 0.0)
    weights = npmi[np.ix_(members, members)]
    cost, constraints, n = _program(weights, k)
    res = milp(cost, constraints=constraints, integrality=np.ones(len(cost)), bounds=Bounds(0, 1),
               options={"time_limit": float(time_limit), "disp": False})
    seconds = time.perf_counter() - start
    chosen = () if res.x is None else tuple(sorted(members[i] for i in np.flatnonzero(np.round(res.x[:n]) == 1)))
    if len(chosen) != k:
        status = "time limit, no solution" if res.status == 1 else f"failed ({res.message})"
        return Topic((), float("nan"), status, seconds)
    status = "optimal" if res.status == 0 else "time limit"
    return Topic(chosen, coherence(npmi, chosen), status, seconds)

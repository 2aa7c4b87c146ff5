"""Neuron topics: verdicts on the paper's claims (real neurons vs the random-permutation baseline) and checks
that hold by construction, as verdict rows (core.analyses.uncertainty) from the compare / scan frames.

Pure functions of frames (pandas, NumPy, SciPy; no torch): the page, ``python -m core results`` and the tests
call them on the frames :func:`core.analyses.topics.cached_runs.compare_random` and ``scan_layer`` return.
Findings are judged over neurons (one value per neuron and source, both pools together): the bootstrap interval
of the difference of means, or Wilson intervals for a share; the two-sided Mann-Whitney U test of the paper is
kept as extra evidence.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from core.analyses.uncertainty import difference_verdict, plain_row, verdict_row, wilson

SCORE_TOL = 1e-9  # |MEKC score - mean pairwise NPMI| counted as equal (float64 sums in another order)
CLAIM_SETS = "real neurons give more word sets per neuron than the random baseline"
CLAIM_NPMI = "real neurons' topics have a higher mean NPMI than the random baseline's"
CLAIM_ANY = "a larger share of real neurons than of random baselines yields at least one word set"
CLAIM_SCORE = "each topic's score is the mean of its k(k−1)/2 pairwise NPMIs (45 for k = 10), over k words"
CLAIM_STARS = "star sets are disjoint within a pool, sizes within [κ_l, κ_u], each topic inside its set"
CLAIM_SCAN = "no pool holds more star sets than its size allows (sets × κ_l ≤ pool size)"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def per_neuron(rows: pd.DataFrame, topics: pd.DataFrame) -> pd.DataFrame:
    """Compare frames -> one row per (unit, source): n_sets (both pools), pool_size (mean of the two pools),
    n_topics (found topics) and mean_npmi (mean coherence of its found topics; NaN when it has none)."""
    neurons = rows.groupby(["unit", "source"], as_index=False).agg(n_sets=("n_sets", "sum"),
                                                                   pool_size=("pool_size", "mean"))
    found = topics.dropna(subset=["coherence"]) if "coherence" in topics else pd.DataFrame(
        columns=["unit", "source", "coherence"])
    coh = found.groupby(["unit", "source"], as_index=False).agg(n_topics=("coherence", "size"),
                                                                mean_npmi=("coherence", "mean"))
    out = neurons.merge(coh, on=["unit", "source"], how="left")
    out["n_topics"] = out.n_topics.fillna(0).astype(int)
    return out


def mann_whitney_text(real: np.ndarray, random: np.ndarray) -> str:
    """"Mann-Whitney U = 396, p = 0.0011 (two-sided)", or in words why there is no test."""
    real, random = (np.asarray(v, dtype=float) for v in (real, random))
    real, random = real[np.isfinite(real)], random[np.isfinite(random)]
    if real.size == 0 or random.size == 0:
        return "no Mann-Whitney test: " + ("the real neurons" if real.size == 0 else "the random baseline") \
            + " gave no value"
    values = np.unique(np.r_[real, random])
    if values.size == 1:
        return f"no Mann-Whitney test: every value is {values[0]:g}"
    test = mannwhitneyu(real, random, alternative="two-sided")
    return f"Mann-Whitney U = {test.statistic:.0f}, p = {test.pvalue:.2g} (two-sided)"


def _groups(neurons: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(real, random) values of ``column``, one per neuron."""
    return (neurons.loc[neurons.source == "real", column].to_numpy(float),
            neurons.loc[neurons.source == "random", column].to_numpy(float))


def word_sets_verdict(neurons: pd.DataFrame, context: str = "") -> dict:
    """Mean word sets per neuron, real minus random, on its bootstrap interval over neurons."""
    real, random = _groups(neurons, "n_sets")
    if real.size == 0 or random.size == 0:
        return plain_row(CLAIM_SETS, None, "no neuron compared yet", 0)
    v = difference_verdict(CLAIM_SETS, random, real)
    return verdict_row(v, f"mean word sets per neuron, real minus random: real {real.mean():.2f} over "
                          f"{_count(real.size, 'neuron')}, random {random.mean():.2f} over "
                          f"{_count(random.size, 'baseline')}; {mann_whitney_text(real, random)}" + context, digits=2)


def npmi_verdict(neurons: pd.DataFrame, context: str = "") -> dict:
    """Mean topic NPMI per neuron (neurons with a topic), real minus random; in words when a group has none."""
    real, random = _groups(neurons, "mean_npmi")
    n_real, n_rand = int(np.isfinite(real).sum()), int(np.isfinite(random).sum())
    total = int((neurons.source == "real").sum())
    if n_real == 0 or n_rand == 0:
        empty = [who for who, n in (("the real neurons", n_real), ("the random baselines", n_rand)) if n == 0]
        return plain_row(CLAIM_NPMI, None,
                         f"{' and '.join(empty)} gave no topic in any pool ({_count(total, 'neuron')} per group), "
                         "so there is no topic NPMI to compare" + context, n_real + n_rand)
    v = difference_verdict(CLAIM_NPMI, random, real)
    return verdict_row(v, f"mean topic NPMI per neuron, real minus random, over the neurons with a topic: real "
                          f"{np.nanmean(real):.3f} ({n_real} of {total}), random {np.nanmean(random):.3f} "
                          f"({n_rand} of {total}); {mann_whitney_text(real, random)}" + context)


def any_set_verdict(neurons: pd.DataFrame, context: str = "") -> dict:
    """Share of neurons with at least one word set, real vs random, on their Wilson intervals: holds when the
    intervals are apart with real above, does not hold when real's lies at or below random's."""
    real, random = _groups(neurons, "n_sets")
    n_real, n_rand = real.size, random.size
    if n_real == 0 or n_rand == 0:
        return plain_row(CLAIM_ANY, None, "no neuron compared yet", 0)
    k_real, k_rand = int((real > 0).sum()), int((random > 0).sum())
    (lo_r, hi_r), (lo_b, hi_b) = wilson(k_real, n_real), wilson(k_rand, n_rand)
    holds = True if lo_r > hi_b else False if hi_r <= lo_b else None
    evidence = (f"real {k_real} of {n_real} ({k_real / n_real:.0%}, 95 % CI {lo_r:.0%} to {hi_r:.0%}) vs random "
                f"{k_rand} of {n_rand} ({k_rand / n_rand:.0%}, 95 % CI {lo_b:.0%} to {hi_b:.0%}), Wilson intervals; "
                "holds when the intervals do not overlap" + context)
    return plain_row(CLAIM_ANY, holds, evidence, n_real + n_rand, estimate=k_real / n_real - k_rand / n_rand,
                     low=lo_r - hi_b, high=hi_r - lo_b)


def score_check(topics: pd.DataFrame, k: int) -> dict:
    """Check: every found topic has k words and its score equals the mean of its pairwise NPMIs recomputed from
    the words (column ``pairs_mean``, :func:`core.analyses.topics.cached_runs.recheck_topics`)."""
    found = topics.dropna(subset=["coherence"])
    if "pairs_mean" not in found or found.empty:
        return plain_row(CLAIM_SCORE, None, "no topic found yet" if found.empty else "no recomputed scores stored",
                         len(found), kind="check")
    gap = (found.coherence - found.pairs_mean).abs()
    sizes = found.topic.str.split().str.len()
    ok = (gap <= SCORE_TOL) & (sizes == k)
    evidence = (f"topics with {k} words and a matching score: {int(ok.sum())} of {len(found)}; largest |score − mean "
                f"of {k * (k - 1) // 2} pairwise NPMIs| {gap.max():.1e}")
    return plain_row(CLAIM_SCORE, bool(ok.all()), evidence, len(found), estimate=float(gap.max()), kind="check")


def star_sets_check(sets: pd.DataFrame, size_limits: tuple[int, int]) -> dict:
    """Check: within each pool (unit, source, polarity) the star sets share no word, every set holds between
    κ_l and κ_u words, and its topic's words lie inside it. ``sets``: one row per set with ``words``
    (the set's members) and ``topic`` (its k words; empty when none was found)."""
    if sets.empty or "words" not in sets:
        return plain_row(CLAIM_STARS, None, "no star set found yet" if sets.empty else "no set members stored", 0,
                         kind="check")
    lo, hi = size_limits
    keys = [c for c in ("unit", "source", "polarity") if c in sets]
    members = sets.words.str.split()
    sizes_ok = members.str.len().between(lo, hi)
    inside = [set(t.split()) <= set(m) for t, m in zip(sets.topic.fillna(""), members)]
    overlaps = _pools_sharing(members, [sets[c] for c in keys])
    n_pools = int(sets.groupby(keys).ngroups) if keys else 1
    ok = bool(sizes_ok.all() and all(inside) and overlaps == 0)
    evidence = (f"{_count(len(sets), 'set')} in {_count(n_pools, 'pool')}: sizes in [{lo}, {hi}] for "
                f"{int(sizes_ok.sum())}, topic inside the set for {sum(inside)}, pools with a word in two sets: "
                f"{overlaps}")
    return plain_row(CLAIM_STARS, ok, evidence, len(sets), kind="check")


def _pools_sharing(members: pd.Series, by: list[pd.Series]) -> int:
    """How many pools (groups ``by``; all rows one pool when empty) have a word in two of their sets."""
    groups = members.groupby(by).groups.values() if by else [members.index]
    return sum(len(words) != len(set(words)) for words in ([w for m in members.loc[i] for w in m] for i in groups))


def scan_check(scan: pd.DataFrame, size_limits: tuple[int, int]) -> dict:
    """Check on a scan: disjoint sets of at least κ_l words cannot number more than pool size / κ_l."""
    if scan.empty:
        return plain_row(CLAIM_SCAN, None, "no unit scanned yet", 0, kind="check")
    lo = size_limits[0]
    ok = np.concatenate([(scan[f"{p}_sets"] * lo <= scan[f"{p}_pool"]).to_numpy() for p in ("pos", "neg")])
    evidence = f"{int(ok.sum())} of {_count(len(ok), 'pool')} ({len(scan)} units × 2 polarities) within the bound"
    return plain_row(CLAIM_SCAN, bool(ok.all()), evidence, len(ok), kind="check")


def scan_share(scan: pd.DataFrame) -> str:
    """"412 of 1536 units (27 %, 95 % CI 25 % to 29 %) have at least one word set" (a description, no claim)."""
    k, n = int((scan.n_sets > 0).sum()), len(scan)
    if n == 0:
        return "No unit scanned."
    lo, hi = wilson(k, n)
    return (f"{k} of {_count(n, 'unit')} ({k / n:.0%}, 95 % CI {lo:.0%} to {hi:.0%}, Wilson) have at least one "
            "word set in either pool.")


def compare_verdicts(frames: dict[str, pd.DataFrame], size_limits: tuple[int, int], k: int,
                     context: str = "") -> list[dict]:
    """Real vs random frames (rows, topics) -> the three findings, then the two checks. ``context`` (e.g. "; Hi-C
    neurons of block 13") is appended to the findings' evidence."""
    rows, topics = frames["rows"], frames["topics"]
    neurons = per_neuron(rows, topics)
    return [word_sets_verdict(neurons, context), npmi_verdict(neurons, context), any_set_verdict(neurons, context),
            score_check(topics, k), star_sets_check(topics, size_limits)]

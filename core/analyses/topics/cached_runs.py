"""Neuron topics, long work: preparing a corpus, one unit (cached), scanning a block, real vs random.

Every result is disk-cached (core.cache) under the model identity, the corpus counts' key and all
parameters, so reruns of the page and the CLI are instant.

This module is the analysis's boundary: the page and the CLI give ``block`` 1-based (core/layers.py: block l
writes layer l; Hi modes read the MLP of block l, Lo modes inject into the stream entering it), converted here
once to the 0-based index that core.analyses.topics.neuron and .vocab take.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from core.analyses.topics.corpus import CorpusCounts, corpus_counts, npmi_matrix
from core.analyses.topics.neuron import POLARITIES, NeuronTopics, TopicParams, analyse_pool, neuron_topics
from core.analyses.topics.vocab import WordMap, check_unit, extremes, random_extremes, word_map
from core.cache import cached, is_cached
from core.layers import block_of_layer
from core.model.session import ModelSession
from core.progress import Progress, no_progress


@dataclass(frozen=True)
class Reference:
    """A counted corpus and this tokenizer's map onto its vocabulary."""

    counts: CorpusCounts
    wmap: WordMap


_wmaps: dict[tuple[str, str], WordMap] = {}


def prepare(session: ModelSession, params: TopicParams, progress: Progress = no_progress) -> Reference:
    """Count the corpus (once per corpus and vocabulary size, cached on disk) and map the tokenizer onto it."""
    counts = corpus_counts(params.corpus, params.vocab_size, progress=lambda f, m: progress(0.9 * f, m))
    key = (session.identity(), counts.key)
    if key not in _wmaps:
        progress(0.92, "mapping the tokenizer onto the corpus vocabulary")
        if len(_wmaps) >= 4:
            _wmaps.pop(next(iter(_wmaps)))
        _wmaps[key] = word_map(session, counts)
    progress(1.0, "reference corpus ready")
    return Reference(counts, _wmaps[key])


def unit_result(session: ModelSession, ref: Reference, mode: str, block: int, unit: int, params: TopicParams,
                random_seed: int | None = None) -> NeuronTopics:
    """:func:`neuron_topics` of ``unit`` of 1-based ``block``, disk-cached."""
    params.check()
    b = block_of_layer(block)
    check_unit(session, mode, b, unit)
    return cached("topics-unit", lambda: neuron_topics(session, ref.counts, ref.wmap, mode, b, unit, params,
                                                       random_seed),
                  model=session.identity(), counts_key=ref.counts.key, mode=mode, block=block, unit=unit,
                  random_seed=random_seed, **params.cache_parts())


def _scan(session: ModelSession, ref: Reference, mode: str, block: int, params: TopicParams,
          progress: Progress) -> pd.DataFrame:
    b = block_of_layer(block)
    n_units = check_unit(session, mode, b)
    rows = []
    batch = 256
    for start in range(0, n_units, batch):
        units = list(range(start, min(n_units, start + batch)))
        top, bottom = extremes(session, mode, b, units, params.tau)
        for i, unit in enumerate(units):
            row = {"unit": unit}
            for pol, ranked in zip(POLARITIES, (top[i], bottom[i])):
                res = analyse_pool(ref.counts, ref.wmap, ranked, params, solve=False)
                best = max(res.sets, key=lambda s: s.star_weight, default=None)
                row.update({f"{pol}_pool": len(res.ids), f"{pol}_sets": len(res.sets),
                            f"{pol}_best_star": best.star_weight if best else np.nan,
                            f"{pol}_example": " ".join(str(ref.counts.vocab[res.ids[m]])
                                                       for m in best.members[-1:] + best.members[:7]) if best else ""})
            rows.append(row)
            progress((start + i + 1) / n_units, f"unit {start + i + 1} of {n_units}")
    frame = pd.DataFrame(rows)
    frame["n_sets"] = frame.pos_sets + frame.neg_sets
    return frame.sort_values(["n_sets", "pos_best_star"], ascending=False, kind="stable").reset_index(drop=True)


def scan_layer(session: ModelSession, ref: Reference, mode: str, block: int, params: TopicParams,
               progress: Progress = no_progress) -> pd.DataFrame:
    """Every unit of 1-based ``block``: pool sizes, number of star sets and the best star per polarity (no exact
    topics), most sets first. Columns: unit, {pos,neg}_{pool,sets,best_star,example}, n_sets."""
    params.check()
    return cached("topics-scan", lambda: _scan(session, ref, mode, block, params, progress),
                  **_scan_parts(session, ref, mode, block, params))


def _comparison_rows(session: ModelSession, ref: Reference, mode: str, block_index: int, units: list[int],
                     params: TopicParams, seed: int, progress: Progress) -> tuple[pd.DataFrame, pd.DataFrame]:
    top, bottom = extremes(session, mode, block_index, units, params.tau)
    rows, topics = [], []
    for i, unit in enumerate(units):
        rand_top, rand_bottom = random_extremes(session.adapter.d_vocab, params.tau, seed * 1_000_003 + unit)
        sources = {"real": (top[i], bottom[i]), "random": (rand_top, rand_bottom)}
        for source, pair in sources.items():
            for pol, ranked in zip(POLARITIES, pair):
                res = analyse_pool(ref.counts, ref.wmap, ranked, params)
                found = [t for t in res.topics if t.found]
                rows.append({"unit": unit, "source": source, "polarity": pol, "pool_size": len(res.ids),
                             "n_sets": len(res.sets),
                             "mean_coherence": float(np.mean([t.coherence for t in found])) if found else np.nan})
                for n, (star, t) in enumerate(zip(res.sets, res.topics), 1):
                    words = [str(ref.counts.vocab[res.ids[m]]) for m in t.members]
                    topics.append({"unit": unit, "source": source, "polarity": pol, "set": n,
                                   "coherence": t.coherence, "status": t.status, "topic": " ".join(words),
                                   "pairs_mean": pairs_mean(ref.counts, words, params.min_freq),
                                   "size": len(star.members),
                                   "words": " ".join(str(ref.counts.vocab[res.ids[m]]) for m in star.members)})
        progress((i + 1) / len(units), f"unit {unit}: {i + 1} of {len(units)}")
    topic_cols = ["unit", "source", "polarity", "set", "coherence", "status", "topic", "pairs_mean", "size", "words"]
    return pd.DataFrame(rows), pd.DataFrame(topics, columns=topic_cols)


def pairs_mean(counts: CorpusCounts, words: list[str], min_freq: int) -> float:
    """Mean NPMI over the unordered pairs of ``words``, recomputed from the counts by word (a check of the MEKC
    score, which the solver computes over pool indices); NaN for fewer than two words."""
    if len(words) < 2:
        return float("nan")
    index = counts.index()
    npmi = npmi_matrix(counts, np.array([index[w] for w in words]), min_freq)  # [k, k]
    return float(npmi[np.triu_indices(len(words), 1)].mean())


def mann_whitney(rows: pd.DataFrame, topics: pd.DataFrame) -> pd.DataFrame:
    """Real vs random, two-sided Mann-Whitney U: word sets per pool, pool size, topic coherence (per topic)."""
    tests = [("word sets per pool", rows, "n_sets"), ("pool size", rows, "pool_size"),
             ("topic coherence", topics.dropna(subset=["coherence"]), "coherence")]
    out = []
    for metric, frame, column in tests:
        real = frame.loc[frame.source == "real", column].to_numpy(float)
        rand = frame.loc[frame.source == "random", column].to_numpy(float)
        ok = len(real) > 0 and len(rand) > 0 and not (np.unique(np.r_[real, rand]).size == 1)
        test = mannwhitneyu(real, rand, alternative="two-sided") if ok else None
        out.append({"metric": metric, "n_real": len(real), "n_random": len(rand),
                    "real_mean": real.mean() if len(real) else np.nan,
                    "random_mean": rand.mean() if len(rand) else np.nan,
                    "real_median": np.median(real) if len(real) else np.nan,
                    "random_median": np.median(rand) if len(rand) else np.nan,
                    "U": float(test.statistic) if test else np.nan, "p": float(test.pvalue) if test else np.nan})
    return pd.DataFrame(out)


COMPARE_VERSION = "2"  # compare frames: the topics table holds each set's members and the recomputed score


def sample_units(n_units: int, n: int, seed: int) -> list[int]:
    """``n`` distinct units of ``n_units``, seeded, sorted (ValueError when n is out of range)."""
    if not 1 <= n <= n_units:
        raise ValueError(f"The sample size must lie in 1..{n_units}.")
    return sorted(np.random.default_rng(seed).choice(n_units, n, replace=False).tolist())


def _compare_parts(session: ModelSession, ref: Reference, mode: str, block: int, n: int, seed: int,
                   params: TopicParams) -> tuple[list[int], dict]:
    """(the sampled units, the disk-cache parts of :func:`compare_random`)."""
    params.check()
    n_units = check_unit(session, mode, block_of_layer(block))
    units = sample_units(n_units, n, seed)
    return units, dict(model=session.identity(), counts_key=ref.counts.key, mode=mode, block=block, units=units,
                       seed=seed, compare_version=COMPARE_VERSION, **params.cache_parts())


def compare_random(session: ModelSession, ref: Reference, mode: str, block: int, n: int, seed: int,
                   params: TopicParams, progress: Progress = no_progress) -> dict[str, pd.DataFrame]:
    """``n`` seeded random units of 1-based ``block`` vs the random-permutation baseline (same pipeline).

    -> {"rows": per unit x source x polarity, "topics": per star set (its members, topic, score and the score
    recomputed from the words), "tests": Mann-Whitney per metric}."""
    units, parts = _compare_parts(session, ref, mode, block, n, seed, params)
    b = block_of_layer(block)

    def compute() -> dict[str, pd.DataFrame]:
        rows, topics = _comparison_rows(session, ref, mode, b, units, params, seed, progress)
        return {"rows": rows, "topics": topics, "tests": mann_whitney(rows, topics)}

    return cached("topics-compare", compute, **parts)


def compare_is_cached(session: ModelSession, ref: Reference, mode: str, block: int, n: int, seed: int,
                      params: TopicParams) -> bool:
    """Whether :func:`compare_random` would read its frames from the disk cache (a link reopens them)."""
    try:
        return is_cached("topics-compare", **_compare_parts(session, ref, mode, block, n, seed, params)[1])
    except ValueError:
        return False


def _scan_parts(session: ModelSession, ref: Reference, mode: str, block: int, params: TopicParams) -> dict:
    return dict(model=session.identity(), counts_key=ref.counts.key, mode=mode, block=block, **params.cache_parts())


def scan_is_cached(session: ModelSession, ref: Reference, mode: str, block: int, params: TopicParams) -> bool:
    """Whether :func:`scan_layer` would read its frame from the disk cache."""
    return is_cached("topics-scan", **_scan_parts(session, ref, mode, block, params))

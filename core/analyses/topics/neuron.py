"""Neuron topics (Lim & Lauw, EMNLP 2023): a neuron's vocabulary distribution read as superposed topics."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.analyses.topics.corpus import CorpusCounts, npmi_matrix
from core.analyses.topics.params import TopicParams
from core.analyses.topics.vocab import WordMap, check_unit, extremes, pool_from, random_extremes
from core.analyses.topics.word_sets import best_topic, star_heuristic
from core.model.session import ModelSession

POLARITIES = ("pos", "neg")
MAX_GRAPH_EDGES = 4000


@dataclass(frozen=True)
class PolarityResult:
    """One pool and what was found in it. ``ids`` are corpus word ids (pool order)."""

    ids: np.ndarray
    entry_ranks: np.ndarray
    cut: int
    npmi: np.ndarray  # [P, P]
    sets: list = field(default_factory=list)  # [StarSet]
    topics: list = field(default_factory=list)  # [Topic], one per set (empty when not solved)


@dataclass(frozen=True)
class NeuronTopics:
    """Frames of one unit (see the module docstring)."""

    pools: pd.DataFrame
    sets: pd.DataFrame
    edges: pd.DataFrame
    summary: pd.DataFrame
    notes: tuple[str, ...] = ()


def analyse_pool(counts: CorpusCounts, wmap: WordMap, ranked: np.ndarray, params: TopicParams,
                 solve: bool = True) -> PolarityResult:
    """[tau] token ids best first -> pool, NPMI, star sets and (when ``solve``) their exact topics."""
    ids, ranks, cut = pool_from(wmap, ranked, params.tau)
    npmi = npmi_matrix(counts, ids, params.min_freq)
    sets = star_heuristic(npmi, params.thresholds, params.size_limits)
    topics = [best_topic(npmi, s.members, params.k, params.time_limit) for s in sets] if solve else []
    return PolarityResult(ids, ranks, cut, npmi, sets, topics)


def unit_rankings(session: ModelSession, mode: str, block_index: int, unit: int, tau: int,
                  random_seed: int | None = None) -> dict[str, np.ndarray]:
    """{"pos": [tau], "neg": [tau]} token ids (highest / lowest beta first) of ``unit`` of 0-based block
    ``block_index``, or the random baseline."""
    check_unit(session, mode, block_index, unit)
    if random_seed is not None:
        top, bottom = random_extremes(session.adapter.d_vocab, tau, random_seed)
        return {"pos": top, "neg": bottom}
    top, bottom = extremes(session, mode, block_index, [unit], tau)
    return {"pos": top[0], "neg": bottom[0]}


def _words(counts: CorpusCounts, ids: np.ndarray, members) -> list[str]:
    return [str(counts.vocab[ids[m]]) for m in members]


def _frames(counts: CorpusCounts, results: dict[str, PolarityResult], params: TopicParams) -> NeuronTopics:
    pools, sets, edges, summary, notes = [], [], [], [], []
    for pol, res in results.items():
        words = counts.vocab[res.ids].astype(str)
        pools.append(pd.DataFrame({"polarity": pol, "rank": np.arange(1, len(words) + 1), "word": words,
                                   "entry_rank": res.entry_ranks}))
        set_of = np.zeros(len(words), dtype=int)
        for n, (star, topic) in enumerate(zip(res.sets, res.topics or [None] * len(res.sets)), 1):
            set_of[list(star.members)] = n
            sets.append({"polarity": pol, "set": n, "size": len(star.members),
                         "centre": words[star.centre], "star_weight": star.star_weight,
                         "words": " ".join(_words(counts, res.ids, star.members)),
                         "topic": " ".join(_words(counts, res.ids, topic.members)) if topic else "",
                         "coherence": topic.coherence if topic else np.nan,
                         "status": topic.status if topic else "not solved",
                         "seconds": topic.seconds if topic else 0.0})
            if topic is not None and topic.status.startswith("time limit"):
                notes.append(f"{pol} set {n}: the {params.time_limit:g} s time limit was hit; "
                             + ("the best topic found so far is shown." if topic.found else "no topic was found."))
        edges.append(_edge_frame(pol, words, res.npmi, set_of, params))
        found = [t.coherence for t in res.topics if t.found]
        summary.append({"polarity": pol, "pool_size": len(words), "cut": res.cut, "n_sets": len(res.sets),
                        "n_topics": len(found), "mean_coherence": float(np.mean(found)) if found else np.nan,
                        "max_coherence": float(np.max(found)) if found else np.nan})
    set_columns = ["polarity", "set", "size", "centre", "star_weight", "words", "topic", "coherence", "status",
                   "seconds"]
    return NeuronTopics(pools=pd.concat(pools, ignore_index=True), sets=pd.DataFrame(sets, columns=set_columns),
                        edges=pd.concat(edges, ignore_index=True), summary=pd.DataFrame(summary),
                        notes=tuple(notes))


def _edge_frame(pol: str, words: np.ndarray, npmi: np.ndarray, set_of: np.ndarray,
                params: TopicParams) -> pd.DataFrame:
    """Thresholded edges among nodes of degree >= kappa_l (what the heuristic sees), heaviest first, capped."""
    lo, hi = params.thresholds
    adj = (npmi >= lo) & (npmi <= hi)
    np.fill_diagonal(adj, False)
    keep = adj.sum(axis=1) >= params.size_limits[0]
    adj &= keep[:, None] & keep[None, :]
    a, b = np.nonzero(np.triu(adj, 1))
    order = np.argsort(-npmi[a, b], kind="stable")[:MAX_GRAPH_EDGES]
    a, b = a[order], b[order]
    return pd.DataFrame({"polarity": pol, "a": words[a], "b": words[b], "npmi": npmi[a, b],
                         "set_a": set_of[a], "set_b": set_of[b]})


def neuron_topics(session: ModelSession, counts: CorpusCounts, wmap: WordMap, mode: str, block_index: int,
                  unit: int, params: TopicParams = TopicParams(), random_seed: int | None = None) -> NeuronTopics:
    """The whole pipeline for one unit of 0-based block ``block_index`` (both polarities); ``random_seed`` gives
    the random baseline. The 1-based entry point is :func:`core.analyses.topics.cached_runs.unit_result`."""
    params.check()
    rankings = unit_rankings(session, mode, block_index, unit, params.tau, random_seed)
    results = {pol: analyse_pool(counts, wmap, rankings[pol], params) for pol in POLARITIES}
    return _frames(counts, results, params)

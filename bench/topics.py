"""Benchmark: Neuron topics on the bundled model and the bundled Wikipedia sample.

Times (1) counting the reference corpus from scratch (window counts, no cache), (2) per neuron: beta (one
neuron through the later blocks and the unembedding), word pools + NPMI, star heuristic, exact topics (one
MILP per word set), both polarities, and optionally (3) a whole-block scan ("find interesting neurons":
beta in batches of 256, pools and star sets, no exact topics).

Prints progress on stderr and every figure as the last line on stdout.
Usage: python bench/topics.py [--mode hi-c] [--block 13] [--neurons 10] [--scan]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np

from core.analyses.topics.cached_runs import _scan, prepare
from core.analyses.topics.corpus import corpus_documents, count_corpus, npmi_matrix
from core.analyses.topics.neuron import TopicParams
from core.analyses.topics.vocab import extremes, pool_from
from core.analyses.topics.word_sets import best_topic, star_heuristic
from core.layers import block_of_layer
from core.model.loading import ModelSpec
from core.model.session import ModelSession

log = logging.getLogger("bench.topics")


def time_neuron(session: ModelSession, ref, mode: str, block: int, unit: int, params: TopicParams) -> dict:
    """Seconds of each step for one neuron of 1-based ``block`` (both polarities) and what it found."""
    out = {"beta": 0.0, "pools": 0.0, "stars": 0.0, "exact": 0.0, "sets": 0, "timeouts": 0}
    start = time.perf_counter()
    top, bottom = extremes(session, mode, block_of_layer(block), [unit], params.tau)
    out["beta"] = time.perf_counter() - start
    for ranked in (top[0], bottom[0]):
        start = time.perf_counter()
        ids, _ranks, _cut = pool_from(ref.wmap, ranked, params.tau)
        npmi = npmi_matrix(ref.counts, ids, params.min_freq)
        mid = time.perf_counter()
        sets = star_heuristic(npmi, params.thresholds, params.size_limits)
        end = time.perf_counter()
        topics = [best_topic(npmi, s.members, params.k, params.time_limit) for s in sets]
        out["pools"] += mid - start
        out["stars"] += end - mid
        out["exact"] += time.perf_counter() - end
        out["sets"] += len(sets)
        out["timeouts"] += sum(t.status.startswith("time limit") for t in topics)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="hi-c", choices=("hi-c", "hi-i", "lo-c", "lo-i"))
    parser.add_argument("--block", type=int, default=13, help="block l, 1-based (writes layer l)")
    parser.add_argument("--neurons", type=int, default=10, help="random neurons timed one by one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scan", action="store_true", help="also time a whole-block scan (minutes)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    session = ModelSession.load(ModelSpec())
    params = TopicParams()

    name, docs = corpus_documents(params.corpus)
    start = time.perf_counter()
    counts = count_corpus(docs, name, params.vocab_size)
    count_s = time.perf_counter() - start
    log.info("%s in %.1f s", counts.describe(), count_s)
    ref = prepare(session, params)

    n_units = session.adapter.d_mlp if args.mode.startswith("hi") else session.adapter.d_model
    units = np.random.default_rng(args.seed).choice(n_units, args.neurons, replace=False).tolist()
    rows = []
    for unit in units:
        rows.append(time_neuron(session, ref, args.mode, args.block, unit, params))
        log.info("unit %d: %s", unit, {k: round(v, 3) for k, v in rows[-1].items()})
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    totals = [r["beta"] + r["pools"] + r["stars"] + r["exact"] for r in rows]
    parts = [f"corpus count {count_s:.1f} s ({counts.n_words:,} words, {counts.n_docs} docs)",
             f"per neuron ({args.mode}, block {args.block}, n={len(units)}): mean {np.mean(totals):.2f} s, "
             f"median {np.median(totals):.2f} s, max {np.max(totals):.2f} s = beta {mean['beta']:.3f} + pools/NPMI "
             f"{mean['pools']:.3f} + stars {mean['stars']:.3f} + exact {mean['exact']:.3f}",
             f"{mean['sets']:.1f} word sets per neuron, {sum(r['timeouts'] for r in rows)} time limits hit"]
    if args.scan:
        start = time.perf_counter()
        frame = _scan(session, ref, args.mode, args.block, params,
                      lambda f, m: log.info("scan %s", m) if m.endswith("00 of 1536") else None)
        scan_s = time.perf_counter() - start
        parts.append(f"block scan {len(frame)} units in {scan_s:.0f} s ({1e3 * scan_s / len(frame):.0f} ms/unit)")
    parts.append(f"load avg {os.getloadavg()[1]:.1f} on {os.cpu_count()} cpus")
    print("topics bench: " + " | ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())

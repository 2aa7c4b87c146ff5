"""Benchmark: a corpus pass in padded batches vs one text at a time, on the bundled model.

The texts: the first ``--texts`` paragraphs of the bundled Wikipedia sample's evaluation split, each cut to
``--max-tokens`` tokens. The work per text: the residual stream of every layer captured (a trace), then the
logit lens's top-1 at every (layer, position). Both ways run the same texts in ONE run; the batched way is
:func:`core.model.batch.iter_traces` (sorted by length, right-padded, attention mask), the other one
``session.trace`` per text. Their top-1 ids are compared (they may differ only on near-ties).

Two rates are reported, each batched vs one at a time: the whole work (trace + logit lens), and the traces
alone (what batching changes; the lens's [tile, vocab] products are the same either way). And the ceiling: the
matrix-product work of the traces (2 x the blocks' parameters per token, plus attention's q.k and p.v) at the fp32
GEMM rate measured in the same run, i.e. the least time any batching could take, and the ratio that would give.

Prints progress on stderr and, as its last line on stdout, the rates in texts per second and the ratios.
Usage: python bench/corpus.py [--texts 64] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Callable, Iterable

import numpy as np
import torch

from core.data import evaluation_texts, wikipedia_paragraphs
from core.lenses.stats import logit_lens_top_k
from core.model.batch import iter_traces, token_budget
from core.model.loading import ModelSpec
from core.model.session import ModelSession, Trace

log = logging.getLogger("bench.corpus")


def corpus_ids(session: ModelSession, n: int, max_tokens: int) -> list[torch.Tensor]:
    """[pos] ids of the first ``n`` evaluation paragraphs (at least 8 tokens), cut to ``max_tokens``."""
    out = []
    for text in dict.fromkeys(evaluation_texts(wikipedia_paragraphs())):
        ids = session.tokenizer(text, return_tensors="pt").input_ids[0][:max_tokens]
        if ids.numel() >= 8:
            out.append(ids)
        if len(out) == n:
            break
    return out


def timed(traces: Callable[[], Iterable[tuple[int, Trace]]], session: ModelSession, n: int,
          with_lens: bool) -> tuple[float, list[np.ndarray | None]]:
    """-> (seconds, [layer, pos] top-1 ids per text in input order when ``with_lens``)."""
    top1: list[np.ndarray | None] = [None] * n
    start = time.perf_counter()
    for k, trace in traces():
        if with_lens:
            ids, _ = logit_lens_top_k(session.adapter, trace.resid[1:], 1)  # [layer, pos, 1]
            top1[k] = ids[..., 0]
    return time.perf_counter() - start, top1


def gemm_gflops(d_model: int, d_mlp: int, rows: int = 1024, runs: int = 5) -> float:
    """Best fp32 matrix-product rate of a [rows, d_model] x [d_model, d_mlp] product (the shape of an MLP input
    projection in a batched pass), GFLOP/s."""
    a, b = torch.randn(rows, d_model), torch.randn(d_model, d_mlp)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(20):
            torch.matmul(a, b)
        best = min(best, (time.perf_counter() - start) / 20)
    return 2 * rows * d_model * d_mlp / best / 1e9


def trace_flops(session: ModelSession, seqs: list[torch.Tensor]) -> float:
    """Matrix-product FLOPs of tracing ``seqs`` one at a time: 2 x block parameters per token, plus attention's
    q.k and p.v (2 x 2 x pos x d_model per token and layer, causal: half of the square on average)."""
    params = sum(p.numel() for block in session.adapter.blocks for p in block.parameters())
    d, n_layers = session.adapter.d_model, session.adapter.n_layers
    return float(sum(s.numel() * (2 * params + 2 * n_layers * s.numel() * d) for s in seqs))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    torch.manual_seed(0)
    session = ModelSession.load(ModelSpec())
    seqs = corpus_ids(session, args.texts, args.max_tokens)
    n = len(seqs)
    log.info("%d texts, %d tokens, batch budget %d tokens", n, sum(s.numel() for s in seqs), token_budget(session))

    def one_at_a_time() -> Iterable[tuple[int, Trace]]:
        return ((k, session.trace(ids)) for k, ids in enumerate(seqs))

    def batched() -> Iterable[tuple[int, Trace]]:
        return iter_traces(session, seqs)

    timed(lambda: iter_traces(session, seqs[:4]), session, 4, with_lens=False)  # warm-up, not counted
    seconds = {}
    for name, run in (("batched", batched), ("single", one_at_a_time)):
        seconds[f"{name}_traces"], _ = timed(run, session, n, with_lens=False)
        log.info("%s traces: %.1f s", name, seconds[f"{name}_traces"])
    seconds["batched_lens"], top_batched = timed(batched, session, n, with_lens=True)
    log.info("batched traces + lens: %.1f s", seconds["batched_lens"])
    seconds["single_lens"], top_single = timed(one_at_a_time, session, n, with_lens=True)
    log.info("one-at-a-time traces + lens: %.1f s", seconds["single_lens"])
    agree = float(np.mean(np.concatenate([(a == b).ravel() for a, b in zip(top_batched, top_single)])))

    gflops = gemm_gflops(session.adapter.d_model, session.adapter.d_mlp)
    floor = trace_flops(session, seqs) / (gflops * 1e9)  # seconds: the traces at the measured GEMM rate
    rate = {key: n / value for key, value in seconds.items()}
    print(f"corpus bench: {n} texts <= {args.max_tokens} tokens, top-1 agreement {agree:.5f} | "
          f"traces + logit-lens top-1: batched {rate['batched_lens']:.2f} texts/s, one at a time "
          f"{rate['single_lens']:.2f} texts/s, ratio {rate['batched_lens'] / rate['single_lens']:.2f}x | "
          f"traces only: batched {rate['batched_traces']:.2f} texts/s, one at a time "
          f"{rate['single_traces']:.2f} texts/s, ratio {rate['batched_traces'] / rate['single_traces']:.2f}x | "
          f"matmul limit of the traces {floor:.1f} s at {gflops:.0f} GFLOP/s fp32 (measured): batched traces take "
          f"{seconds['batched_traces'] / floor:.2f}x the limit, so batching can gain at most "
          f"{seconds['single_traces'] / floor:.1f}x on traces here")


if __name__ == "__main__":
    main()

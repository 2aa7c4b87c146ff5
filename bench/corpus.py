"""Benchmark: a corpus pass in padded batches vs one text at a time, on the bundled model.

The texts: the first ``--texts`` paragraphs of the bundled Wikipedia sample's evaluation split, each cut to
``--max-tokens`` tokens. The work per text: the residual stream of every layer captured (a trace), then the
logit lens's top-1 at every (layer, position). Both ways run the same texts in ONE run; the batched way is
:func:`core.model.batch.iter_traces` (sorted by length, right-padded, attention mask), the other one
``session.trace`` per text. Their top-1 ids are compared (they may differ only on near-ties).

Two rates are reported, each batched vs one at a time: the whole work (trace + logit lens), and the traces
alone (what batching changes; the lens's [tile, vocab] products are the same either way).

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

    rate = {key: n / value for key, value in seconds.items()}
    print(f"corpus bench: {n} texts <= {args.max_tokens} tokens, top-1 agreement {agree:.5f} | "
          f"traces + logit-lens top-1: batched {rate['batched_lens']:.2f} texts/s, one at a time "
          f"{rate['single_lens']:.2f} texts/s, ratio {rate['batched_lens'] / rate['single_lens']:.2f}x | "
          f"traces only: batched {rate['batched_traces']:.2f} texts/s, one at a time "
          f"{rate['single_traces']:.2f} texts/s, ratio {rate['batched_traces'] / rate['single_traces']:.2f}x")


if __name__ == "__main__":
    main()

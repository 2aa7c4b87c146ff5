"""The GPU check of issue 13: one script, a few minutes, on a machine with a CUDA GPU.

On the bundled model in bfloat16 on CUDA (``--device`` / ``--dtype`` to change; ``--device cpu --dtype float32``
is a quick dry run of the script itself on a machine without a GPU):

1. lens: trace + logit-lens statistics of a 256- and a 2048-token prompt, bfloat16 vs float32 on the same device,
   time and top-1 agreement (exact, and within near-ties of 1e-3 in probability);
2. corpus: :mod:`bench.corpus`'s texts per second, padded batches vs one text at a time (traces + lens, and traces);
3. concurrency: 8 threads each run the lens on their own prompt over the ONE shared session at once (as Streamlit's
   browser sessions do); every thread's statistics must equal the same prompt run alone.

Prints one line per part and, as its last line, all the figures. Usage: python bench/gpu_check.py
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time

import numpy as np
import torch
from corpus import corpus_ids, timed  # bench/corpus.py (this script runs from bench/)

from core.data import wikipedia_paragraphs
from core.lenses.stats import lens_stats
from core.model.batch import iter_traces
from core.model.loading import ModelSpec
from core.model.session import ModelSession

log = logging.getLogger("bench.gpu_check")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def long_ids(session: ModelSession, n_tokens: int) -> torch.Tensor:
    text = " ".join(wikipedia_paragraphs()[:200])
    return session.tokenizer(text, return_tensors="pt").input_ids[0][:n_tokens]


def lens_time(session: ModelSession, ids: torch.Tensor, device: str) -> tuple[float, np.ndarray, np.ndarray]:
    """(best of 2 seconds, [layer, pos] top-1 ids, [layer, pos] top-1 probabilities)."""
    best, stats = float("inf"), None
    for _ in range(2):
        sync(device)
        start = time.perf_counter()
        stats = lens_stats(session, session.trace(ids), top_k=2)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, stats.top_ids[..., 0], stats.top_probs


def agreement(a_ids: np.ndarray, b_ids: np.ndarray, b_probs: np.ndarray) -> tuple[float, float]:
    """(exact top-1 agreement, agreement counting a near-tie -- top-2 within 1e-3 in probability -- as a tie)."""
    exact = a_ids == b_ids
    near = exact | (np.abs(b_probs[..., 0] - b_probs[..., 1]) < 1e-3)
    return float(exact.mean()), float(near.mean())


def part_lens(device: str, dtype: str) -> str:
    fast = ModelSession.load(ModelSpec(dtype=dtype, device=device).resolved())
    ref = ModelSession.load(ModelSpec(dtype="float32", device=device).resolved())
    out = []
    for n in (256, 2048):
        ids = long_ids(fast, n)
        t_fast, top_fast, _ = lens_time(fast, ids, device)
        t_ref, top_ref, probs_ref = lens_time(ref, ids, device)
        exact, near = agreement(top_fast, top_ref, probs_ref)
        out.append(f"{ids.numel()} tok: {dtype} {t_fast:.2f} s vs float32 {t_ref:.2f} s, top-1 agreement "
                   f"{100 * exact:.1f}% exact / {100 * near:.1f}% up to near-ties")
    del ref
    return "lens: " + "; ".join(out)


def part_corpus(session: ModelSession, device: str) -> str:
    seqs = corpus_ids(session, 64, 128)
    n = len(seqs)
    timed(lambda: iter_traces(session, seqs[:4]), session, 4, with_lens=False)  # warm-up
    rates = {}
    for name, run in (("batched", lambda: iter_traces(session, seqs)),
                      ("single", lambda: ((k, session.trace(ids)) for k, ids in enumerate(seqs)))):
        for lens in (False, True):
            sync(device)
            seconds, _ = timed(run, session, n, with_lens=lens)
            sync(device)
            rates[(name, lens)] = n / seconds
    return (f"corpus: {n} texts <= 128 tok: traces + lens batched {rates[('batched', True)]:.1f} texts/s vs "
            f"{rates[('single', True)]:.1f} one at a time ({rates[('batched', True)] / rates[('single', True)]:.2f}x); "
            f"traces {rates[('batched', False)]:.1f} vs {rates[('single', False)]:.1f} "
            f"({rates[('batched', False)] / rates[('single', False)]:.2f}x)")


def part_threads(session: ModelSession, device: str, n_threads: int = 8) -> str:
    prompts = [f"Fact {i}: the capital of {c} is" for i, c in
               enumerate(["France", "Italy", "Spain", "Peru", "Japan", "Kenya", "Chile", "Egypt"][:n_threads])]
    alone = [lens_stats(session, session.trace(p), top_k=5) for p in prompts]
    got: list = [None] * n_threads
    errors: list[str] = []
    barrier = threading.Barrier(n_threads)

    def work(i: int) -> None:
        try:
            barrier.wait()
            got[i] = lens_stats(session, session.trace(prompts[i]), top_k=5)
        except Exception as err:  # noqa: BLE001 - reported in the line
            errors.append(f"{type(err).__name__}: {err}")

    sync(device)
    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sync(device)
    seconds = time.perf_counter() - start
    same = sum(g is not None and np.array_equal(g.top_ids, a.top_ids) and np.allclose(g.entropy, a.entropy,
                                                                                        atol=1e-4)
               for g, a in zip(got, alone))
    return (f"threads: {n_threads} concurrent lens runs in {seconds:.2f} s, {same}/{n_threads} equal to the same "
            f"prompt alone, {len(errors)} errors{' (' + errors[0][:120] + ')' if errors else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    lines = [part_lens(args.device, args.dtype)]
    print(lines[-1], flush=True)
    session = ModelSession.load(ModelSpec(dtype=args.dtype, device=args.device).resolved())
    for part in (part_corpus, part_threads):
        lines.append(part(session, args.device))
        print(lines[-1], flush=True)
    print(f"gpu check ({name}, bundled model, {args.dtype}): " + " | ".join(lines))


if __name__ == "__main__":
    main()

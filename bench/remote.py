"""Benchmark: what crosses the network when the logit lens runs on NDIF, measured with nnsight's NDIF simulation.

The bundled model answers a ``--tokens``-token prompt (default 256) twice in ONE run:

* locally: ``session.trace`` (the residual stream of every layer) + :func:`core.lenses.stats.lens_stats`;
* as on NDIF: :func:`core.lenses.stats.remote_lens_stats` through an nnsight executor in mode "simulate": the request
  is serialised exactly as for NDIF (nnsight's ``RequestModel.serialize``, zstd), deserialised with Layerscope's
  modules hidden (as on the server) and run here; the reductions run inside the trace, next to the model, and the
  saved statistics are serialised as the server returns them (``torch.save``, then zstd).

Reports the request's bytes, the result's bytes (zstd and raw), what a remote run would move if it downloaded the
residual stream (``--tokens`` x 31 layers x 576 x float32) or the logits instead, the time ratio simulated / local
(the simulation adds serialisation only: there is no network here) and whether the statistics are equal.

Prints, as its last line on stdout, the figures. Usage: python bench/remote.py [--tokens 256] [--top-k 10]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np
import torch

from core.data import wikipedia_paragraphs
from core.lenses.stats import lens_stats, remote_lens_stats
from core.model.executors import NnsightExecutor, import_nnsight
from core.model.loading import ModelSpec
from core.model.session import ModelSession

log = logging.getLogger("bench.remote")
FIELDS = ("top_ids", "top_probs", "entropy", "kl_to_final", "target_ids", "target_rank", "target_prob",
          "next_token_ce")


def prompt_ids(session: ModelSession, n_tokens: int) -> torch.Tensor:
    """[pos] the first ``n_tokens`` tokens of the bundled Wikipedia sample's paragraphs, joined."""
    text = " ".join(wikipedia_paragraphs()[:40])
    ids = session.tokenizer(text, return_tensors="pt").input_ids[0][:n_tokens]
    if ids.numel() < n_tokens:
        raise SystemExit(f"The sample holds only {ids.numel()} tokens.")
    return ids


def best_of(runs: int, fn) -> tuple[float, object]:
    """(best wall seconds of ``runs`` calls, the last result)."""
    best, out = float("inf"), None
    for _ in range(runs):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    torch.manual_seed(0)
    local = ModelSession.load(ModelSpec())
    nnsight = import_nnsight()
    wrapped = nnsight.TransformersModel(local.model, tokenizer=local.tokenizer, task="text-generation")
    remote = local.with_executor(NnsightExecutor(wrapped, "simulate"))
    ids = prompt_ids(local, args.tokens)
    adapter = local.adapter
    log.info("local trace + lens over %d tokens…", ids.numel())
    local_s, want = best_of(args.runs, lambda: lens_stats(local, local.trace(ids), top_k=args.top_k))
    log.info("the same through nnsight's NDIF simulation…")
    remote_s, got = best_of(args.runs, lambda: remote_lens_stats(remote, ids, top_k=args.top_k))
    traffic = remote.executor.traffic
    equal = all(np.array_equal(getattr(want, f), getattr(got, f), equal_nan=True) for f in FIELDS)
    cells = (adapter.n_layers + 1) * ids.numel()
    resid_bytes = cells * adapter.d_model * 4
    logits_bytes = cells * adapter.d_vocab * 4
    print(f"remote bench: {ids.numel()}-token logit lens (top-{args.top_k}), bundled model, nnsight {nnsight.__version__}"
          f" NDIF simulation | returned {traffic.result_bytes / 1e6:.3f} MB zstd ({traffic.result_raw_bytes / 1e6:.3f}"
          f" MB raw) vs {resid_bytes / 1e6:.1f} MB of residuals ({resid_bytes / traffic.result_bytes:.0f}x) and "
          f"{logits_bytes / 1e9:.2f} GB of logits | request {traffic.request_bytes / 1e3:.1f} kB | time simulated/"
          f"local {remote_s / local_s:.2f} (best of {args.runs}) | statistics equal to the local lens: "
          f"{'yes' if equal else 'NO'}")


if __name__ == "__main__":
    main()

"""Benchmark: next-token extraction with batched patchscopes vs one forward per patch.

Bundled model, texts from the bundled Wikipedia sample (evaluation split, Patchscopes length filter), one
random position each. The batched implementation is Layerscope's (all layers of one source position in
ONE forward of the target prompt); the straightforward loop runs one forward per (text, layer). Both
compute the token-identity and "?" patchscopes; their readings are checked to agree.

Prints progress on stderr and, as its last line on stdout, seconds per (text, layer, method) for both and
the ratio. Usage: python bench/extraction.py [--texts 200] [--loop-texts 20]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import torch

from core.analyses.extraction import extraction_rows, pick_positions
from core.data import corpus_texts, evaluation_texts, sample_texts
from core.lenses.patchscope import Patchscope, identity_patchscope, question_patchscope
from core.model.loading import ModelSpec
from core.model.session import ModelSession

log = logging.getLogger("bench.extraction")


def loop_readings(session: ModelSession, scope: Patchscope, ids: torch.Tensor) -> torch.Tensor:
    """[layer, vocab]: the straightforward way, one forward of the target prompt per layer."""
    resid = session.trace(ids).resid[:, -1]  # [layer+1, d_model]
    return torch.cat([scope.patch_positions(resid[[layer]], [layer]) for layer in range(resid.shape[0])])


def batched_readings(session: ModelSession, scope: Patchscope, ids: torch.Tensor) -> torch.Tensor:
    resid = session.trace(ids).resid[:, -1]
    return scope.patch_positions(resid, list(range(resid.shape[0])))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--loop-texts", type=int, default=20, help="texts for the (slow) per-patch loop")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    torch.manual_seed(0)
    session = ModelSession.load(ModelSpec())
    texts = sample_texts(evaluation_texts(corpus_texts("wikipedia")), args.texts, seed=0)
    scopes = {"identity": identity_patchscope(session), "question": question_patchscope(session)}
    n_layers = session.adapter.n_layers + 1

    prefixes = pick_positions(session, texts[: args.loop_texts], seed=0)
    for ids in prefixes[:2]:  # agreement check before timing
        for scope in scopes.values():
            a, b = batched_readings(session, scope, ids), loop_readings(session, scope, ids)
            assert torch.allclose(a, b, atol=1e-3, rtol=1e-3), "batched and looped readings differ"
            assert torch.equal(a.argmax(-1), b.argmax(-1))
    log.info("agreement check passed")

    start = time.perf_counter()
    rows = extraction_rows(session, texts, scopes, seed=0,
                           progress=lambda f, m: log.info("batched %s", m) if m.endswith("0") else None)
    batched_s = time.perf_counter() - start
    n_batched = rows.text.nunique() * n_layers * len(scopes)

    start = time.perf_counter()
    for k, ids in enumerate(prefixes):
        for scope in scopes.values():
            loop_readings(session, scope, ids)
        log.info("loop text %d/%d", k + 1, len(prefixes))
    loop_s = time.perf_counter() - start
    n_loop = len(prefixes) * n_layers * len(scopes)

    per_batched, per_loop = batched_s / n_batched, loop_s / n_loop
    print(f"extraction bench: {rows.text.nunique()} texts x {n_layers} layers x {len(scopes)} patchscopes | "
          f"batched {1e3 * per_batched:.2f} ms per (text, layer, method) ({batched_s:.0f} s total) | "
          f"loop {1e3 * per_loop:.2f} ms ({len(prefixes)} texts, {loop_s:.0f} s) | "
          f"speedup {per_loop / per_batched:.1f}x")


if __name__ == "__main__":
    main()

"""Benchmark: the token-identity patchscope's lens statistics, one forward of the whole target prompt per source
position (the implementation before issue 14, part 3) vs the cached target prefix with (layer, position) rows
batched (:class:`core.lenses.patchscope.Patchscope`).

Bundled SmolLM2-135M, the first bundled Wikipedia paragraph cut to 8, 20 and 48 tokens; for each, the time of
``session.trace`` + ``lens_stats(session, trace, scope, top_k=10)`` over every layer x position, the old way and the
new way, in one process (each warmed up first), and the agreement of their statistics: top-1 ids, a differing id
counted as a tie when its old probability lies within :data:`TIE` nats of the old top-1's, and the largest
entropy / KL differences. The machine may be shared: each measurement runs ``--repeats`` times, old and new
alternating, and the least wall time counts (other load only adds time); the process CPU time of those runs is
reported too.

    .venv/bin/python bench/patchscope.py [--lengths 8 20 48] [--repeats 2]

Progress goes to stderr; stdout's last line holds every figure.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from typing import Sequence

import numpy as np
import torch

from core.data import wikipedia_paragraphs
from core.lenses.patchscope import Patchscope, identity_patchscope
from core.lenses.stats import LensStats, lens_stats
from core.model.executors import Pass
from core.model.hooks import residual_patch
from core.model.loading import ModelSpec
from core.model.session import ModelSession

TIE = 1e-3  # nats: two computations of the same logits (other shapes, a cache) differ by ~2e-6 of |logit| <= ~30
log = logging.getLogger("bench.patchscope")


class OnePerPosition(Patchscope):
    """The patchscope before the cache: per source position ONE forward of the whole target prompt, one batch row
    per layer (what :meth:`logits` ran for each position of a call)."""

    def logits(self, resid: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        out = [self.one_position(resid[:, p], layers) for p in range(resid.shape[1])]
        return torch.stack(out, dim=1)  # [layer, pos, vocab]

    @torch.no_grad()
    def one_position(self, vectors: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        """[layer, d_model] source vectors -> [layer, vocab] logits at the last target position."""
        session = self.session
        ids = self.target_ids.to(session.device)[None].expand(len(layers), -1)  # [layer, target_pos]
        last = ids.shape[1] - 1
        rows_by_layer: dict[int, list[int]] = {}
        for row, layer in enumerate(layers):
            rows_by_layer.setdefault(int(layer), []).append(row)
        vectors = vectors.to(session.device, session.model.dtype)
        patches = [residual_patch(layer, vectors[rows], position=last, rows=rows)
                   for layer, rows in rows_by_layer.items()]
        return session.run(Pass(ids, patches=patches, logits=True)).logits  # [layer, vocab]


def timed(session: ModelSession, ids: torch.Tensor, scope: Patchscope) -> tuple[float, float, LensStats]:
    """-> (wall seconds, process CPU seconds, statistics) of the trace and the lens statistics."""
    wall, cpu = time.perf_counter(), time.process_time()
    stats = lens_stats(session, session.trace(ids), scope, top_k=10)
    return time.perf_counter() - wall, time.process_time() - cpu, stats


def agreement(old: LensStats, new: LensStats) -> tuple[int, int, int]:
    """-> (cells, exact top-1 matches, near-ties): a differing new top-1 is a near-tie when it is in the old top-k
    with a log-probability within :data:`TIE` of the old top-1's."""
    same = old.top_ids[..., 0] == new.top_ids[..., 0]
    ties = 0
    for cell in zip(*np.nonzero(~same)):
        hit = np.flatnonzero(old.top_ids[cell] == new.top_ids[cell][0])
        if hit.size and math.log(old.top_probs[cell][0]) - math.log(old.top_probs[cell][hit[0]]) <= TIE:
            ties += 1
    return int(same.size), int(same.sum()), ties


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", type=int, nargs="+", default=[8, 20, 48])
    parser.add_argument("--repeats", type=int, default=2, help="runs of each measurement; the least time counts")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    torch.manual_seed(0)
    session = ModelSession.load(ModelSpec())
    text = next(p for p in wikipedia_paragraphs() if len(session.tokenizer(p).input_ids) >= max(args.lengths))
    all_ids = session.tokenize(text)
    old_scope = OnePerPosition(session, identity_patchscope(session).target_prompt, "identity")
    new_scope = identity_patchscope(session)
    log.info("bundled model: %d layers, vocab %d, %s; target prompt %d tokens", session.adapter.n_layers,
             session.adapter.d_vocab, session.model.dtype, new_scope.target_ids.numel())
    for scope in (old_scope, new_scope):  # warm-up (and the new scope's prefix cache: its first call encodes it)
        timed(session, all_ids[:2], scope)

    stats: dict[str, LensStats] = {}
    figures, cpu_figures, cells, exact, ties, d_entropy, d_kl = [], [], 0, 0, 0, 0.0, 0.0
    for n in args.lengths:
        ids = all_ids[:n]
        best = {"old": (math.inf, math.inf), "new": (math.inf, math.inf)}
        for repeat in range(args.repeats):
            for label, scope in (("old", old_scope), ("new", new_scope)):
                wall, cpu, stats[label] = timed(session, ids, scope)
                best[label] = (min(best[label][0], wall), min(best[label][1], cpu))
                log.info("%d positions, run %d: %s %.2f s (CPU %.2f s)", n, repeat + 1, label, wall, cpu)
        (old_s, old_cpu), (new_s, new_cpu) = best["old"], best["new"]
        c, e, t = agreement(stats["old"], stats["new"])
        cells, exact, ties = cells + c, exact + e, ties + t
        d_entropy = max(d_entropy, float(np.abs(stats["old"].entropy - stats["new"].entropy).max()))
        d_kl = max(d_kl, float(np.abs(stats["old"].kl_to_final - stats["new"].kl_to_final).max()))
        figures.append(f"{n} pos: {old_s:.1f} s -> {new_s:.2f} s ({old_s / new_s:.0f}x)")
        cpu_figures.append(f"{old_cpu / new_cpu:.0f}x")
    agree = 100 * (exact + ties) / cells
    print(f"identity patchscope, bundled model, {torch.get_num_threads()} threads, best of {args.repeats} | "
          f"{' | '.join(figures)} | CPU time ratios {', '.join(cpu_figures)} | top-1 agree {agree:.1f}% "
          f"({exact}/{cells} exact, {ties} near-ties within {TIE:g} nats) | max |d entropy| {d_entropy:.1e}, "
          f"max |d KL| {d_kl:.1e} nats")


if __name__ == "__main__":
    main()

"""Benchmark: the batched activation-patching grid against one forward pass per cell.

One 30-token prompt pair on the bundled SmolLM2-135M (clean: the Eiffel Tower, corrupted: the Colosseum; both
subjects are 3 tokens, so the prompts pair position for position), metric logit(' Paris') - logit(' Rome'),
residual patching at every layer (embeddings + 30 blocks = 31 layers) x every position (930 cells).

* batched: :func:`core.analyses.patching.patching_grid` as the page and the CLI run it (batch size from the memory
  budget, each batch continuing the corrupted run's key/value cache up to its first position and, on this Llama
  model, starting at the first block its patches can change). Timed whole: the clean and corrupted passes
  included, model load excluded. Wall time and the process's CPU time (all threads) are both printed: on a loaded
  machine the wall time grows with the other work, the CPU time much less.
* ``--compare``: the same grid again with block skipping off (every batch runs every block, as before it existed),
  for the ratio on the same machine in the same run.
* per cell: :func:`core.analyses.patching.patch_cells`, one full forward pass per cell, timed on a subset of
  ``--sample`` cells spread over the grid and **extrapolated** to all 930 (the per-cell time hardly depends on the
  cell: every pass runs the whole prompt); the subset's values are checked against the batched grid's.

The issue's target: the full batched grid in <= 10 s on 2 CPU cores. The load average printed with the figures says
how much other work shared the cores during the run.

    .venv/bin/python bench/patching.py [--sample 24] [--batch-size N] [--compare] [--threads N]

Progress goes to stderr; stdout's last line holds every figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


import numpy as np
import torch

from core.analyses import patching
from core.analyses.patching import patch_cells, patching_grid, resolve_metric
from core.model.loading import ModelSpec
from core.model.session import ModelSession

TAIL = (", the famous old iron landmark built for a world fair in the nineteenth century, stands today right in "
        "the middle of the city of")
CLEAN = "The Eiffel Tower" + TAIL
CORRUPT = "The Colosseum" + TAIL
TARGET_S = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample", type=int, default=24, help="cells of the per-cell loop (extrapolated)")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per batched pass (default: budget)")
    parser.add_argument("--compare", action="store_true", help="also time the grid without block skipping")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    session = ModelSession.load(ModelSpec())
    n_clean, n_corrupt = session.tokenize(CLEAN).numel(), session.tokenize(CORRUPT).numel()
    if n_clean != n_corrupt:
        raise SystemExit(f"the prompts tokenise to {n_clean} and {n_corrupt} tokens; edit TAIL")
    metric = resolve_metric(session, "logit_diff", " Paris", " Rome")
    n_layers = session.adapter.n_layers
    print(f"{n_clean} tokens, {n_layers + 1} layers, {torch.get_num_threads()} torch threads", file=sys.stderr)
    patching_grid(session, CLEAN, CORRUPT, metric, layers=[n_layers], positions=[0])  # warm-up

    start, cpu_start = time.perf_counter(), time.process_time()
    grid = patching_grid(session, CLEAN, CORRUPT, metric, batch_size=args.batch_size,
                         progress=lambda f: print(f"\rbatched {f:.0%}", end="", file=sys.stderr))
    batched_s, batched_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(file=sys.stderr)
    cells = len(grid.frame)
    compared = ""
    if args.compare:
        skipping = patching.starts_at_block
        patching.starts_at_block = lambda _session: False
        try:
            start, cpu_start = time.perf_counter(), time.process_time()
            full = patching_grid(session, CLEAN, CORRUPT, metric, batch_size=args.batch_size,
                                 progress=lambda f: print(f"\rall blocks {f:.0%}", end="", file=sys.stderr))
            full_s, full_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        finally:
            patching.starts_at_block = skipping
        print(file=sys.stderr)
        diff = float(np.abs(full.frame.value.to_numpy() - grid.frame.value.to_numpy()).max())
        compared = (f" | all blocks {full_s:.1f} s, cpu {full_cpu:.1f} s ({full.n_passes} passes): skipping "
                    f"{full_s / batched_s:.1f}x faster, max |diff| {diff:.1e}")

    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(cells, size=min(args.sample, cells), replace=False))
    subset = [(int(grid.frame.layer[i]), int(grid.frame.position[i])) for i in pick]
    start = time.perf_counter()
    values = patch_cells(session, CLEAN, CORRUPT, metric, "resid", subset)
    sample_s = time.perf_counter() - start
    per_cell_s = sample_s / len(subset) * cells
    max_diff = float(np.abs(values - grid.frame.value.to_numpy()[pick]).max())

    last = grid.frame[(grid.frame.layer == n_layers) & (grid.frame.position == n_clean - 1)].effect.iloc[0]
    verdict = "met" if batched_s <= TARGET_S else "MISSED"
    print(f"clean {grid.clean_value:.3f}, corrupted {grid.corrupt_value:.3f}, effect at the last layer x position "
          f"{last:.4f}; per-cell sample of {len(subset)} took {sample_s:.1f} s; max |batched - per cell| "
          f"{max_diff:.2e}")
    print(f"patching bench: {cells} cells ({n_layers + 1} layers x {n_clean} positions) | batched {batched_s:.1f} s "
          f"(cpu {batched_cpu:.1f} s, batch {grid.batch_size}, {grid.n_passes} passes, skips blocks "
          f"{grid.skips_blocks}){compared} | per cell {per_cell_s:.1f} s (extrapolated from {len(subset)} cells) | "
          f"ratio {per_cell_s / batched_s:.1f}x | target <= {TARGET_S:g} s {verdict} | load avg "
          f"{os.getloadavg()[1]:.1f} on {os.cpu_count()} cpus, {torch.get_num_threads()} torch threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())

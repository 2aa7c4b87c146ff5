"""Bench: the Lens page's Contributions and Attention views on the bundled model, a 30-token prompt.

Times to first result (each measured after one warm-up call, best of ``--repeats``): the decomposition with
per-head DLA (one pass, stopped after the last block it needs), the contribution graph (one eager pass with every
block's attention weights, then the proximity weights), the attention view of one block; and one plain forward
pass of the same prompt, so the ratios say what the analyses add over the model itself on a loaded machine.
Issue target: <= 2 s each on 2 cores. The last line holds the figures.

    python bench/contributions.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time


TARGET_S = 2.0
PROMPT = ("The Eiffel Tower was built for the 1889 World's Fair in Paris. At first many artists disliked it, but "
          "today it is the most visited monument in")


def best(fn, repeats: int) -> float:
    fn()  # warm-up: vocabulary strings, kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    from core.analyses.attention_heads import attention_at
    from core.analyses.contributions import contribution_graph, decompose
    from core.model.loading import ModelSpec
    from core.model.session import ModelSession

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    session = ModelSession.load(ModelSpec())
    ids = session.tokenize(PROMPT)[:30]
    n = session.adapter.n_layers

    def forward() -> None:
        with torch.no_grad():
            session.model(ids[None])

    timings = {
        "forward": best(forward, args.repeats),
        "decompose+heads": best(lambda: decompose(session, ids, n, -1, target=" Paris", other=" London"),
                                args.repeats),
        "graph": best(lambda: contribution_graph(session, ids, -1, layer=n, threshold=0.04), args.repeats),
        "attention": best(lambda: attention_at(session, ids, n - 6, -1), args.repeats),
    }
    missed = [name for name, s in timings.items() if name != "forward" and s > TARGET_S]
    figures = " | ".join(f"{name} {s:.2f} s ({s / timings['forward']:.1f}x fwd)" if name != "forward"
                         else f"forward {s:.2f} s" for name, s in timings.items())
    print(f"contributions bench: {ids.numel()} tok, bundled SmolLM2-135M | {figures} | target <= {TARGET_S:g} s: "
          + ("met" if not missed else "MISSED " + ", ".join(missed))
          + f" | load avg {os.getloadavg()[1]:.1f} on {os.cpu_count()} cpus")
    return 0


if __name__ == "__main__":
    sys.exit(main())

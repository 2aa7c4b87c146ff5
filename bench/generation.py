"""Benchmark: greedy generation with the key/value cache against full recomputation, on the bundled model.

A 30-token prompt (the first 30 tokens of a fixed English text), 20 new greedy tokens (end-of-sequence ignored: both
runs make exactly 20), each way through :func:`core.analyses.generation.generate` (``use_cache`` True: the prompt
once, then one token per pass over the cache; False: the whole sequence every step). Both run once to warm up, then
``--repeats`` times alternately; the best time of each is reported, with their ratio, all from this one run (other
work on the machine falls on both). The two continuations must be the same tokens.

    .venv/bin/python bench/generation.py [--prompt-tokens 30] [--new-tokens 20] [--repeats 3] [--device cpu]

Stdout's last line holds every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TEXT = ("The Eiffel Tower was built for the 1889 World's Fair in Paris. At first many artists disliked it, but "
        "today it is the most visited paid monument in the world, and its lights sparkle every evening over the "
        "river Seine, where boats carry visitors past the old bridges.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompt-tokens", type=int, default=30)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    from core.analyses.generation import generate
    from core.model.loading import ModelSpec
    from core.model.session import ModelSession

    session = ModelSession.load(ModelSpec(device=args.device).resolved())
    ids = session.tokenize(TEXT)[: args.prompt_tokens]
    if ids.numel() < args.prompt_tokens:
        raise SystemExit(f"The text has only {ids.numel()} tokens.")

    def run(use_cache: bool) -> tuple[float, list[int]]:
        start = time.perf_counter()
        gen = generate(session, ids, args.new_tokens, use_cache=use_cache)
        return time.perf_counter() - start, gen.ids.tolist()

    import core.analyses.generation as generation

    generation.stop_ids = lambda _session: set()  # end-of-sequence ignored: both runs make exactly N tokens
    with torch.inference_mode():
        _, cached_ids = run(True)
        _, full_ids = run(False)
        if cached_ids != full_ids:
            print(json.dumps({"warning": "the cached and recomputed continuations differ",
                              "cached": cached_ids[-args.new_tokens:], "full": full_ids[-args.new_tokens:]}),
                  file=sys.stderr)
        cached_s, full_s = [], []
        for _ in range(args.repeats):
            cached_s.append(run(True)[0])
            full_s.append(run(False)[0])
    best_cached, best_full = min(cached_s), min(full_s)
    figures = {
        "model": "bundled SmolLM2-135M-Instruct", "device": str(session.device), "threads": torch.get_num_threads(),
        "prompt_tokens": int(ids.numel()), "new_tokens": args.new_tokens, "same_tokens": cached_ids == full_ids,
        "kv_cache_s": round(best_cached, 4), "full_recompute_s": round(best_full, 4),
        "ms_per_token_cached": round(1000 * best_cached / args.new_tokens, 2),
        "ms_per_token_full": round(1000 * best_full / args.new_tokens, 2),
        "speedup_full_over_cached": round(best_full / best_cached, 2),
    }
    print(f"generation: {args.prompt_tokens}-token prompt + {args.new_tokens} greedy tokens, best of "
          f"{args.repeats}: KV cache {best_cached:.3f} s vs full recompute {best_full:.3f} s = "
          f"{best_full / best_cached:.2f}x  {json.dumps(figures)}")


if __name__ == "__main__":
    main()

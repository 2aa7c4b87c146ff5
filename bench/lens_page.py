"""Benchmark: how long the Lens page makes a researcher wait, on the bundled model (issue 14, parts 1 and 2).

Measured in one process, model loaded and warmed up first, on real Wikipedia text (gensim's bundled dump):

* **first heatmap**: a prompt the page has not seen, at 512 and 2048 tokens: the page's own path
  (:func:`ui.cached.lens_trace` = one forward pass keeping its key/value cache, then the statistics of the shown
  window: the last 24 positions x every layer, what a long prompt opens on) against the forward pass alone and
  against the old path (every layer x every position before anything shows; 512 tokens only);
* **what-if edit**: a 200-token prompt with its last word changed: the page's path (continue the base prompt's cache,
  reuse the statistics of the shared positions, compute the rest of the window) against recomputing the edited prompt
  from scratch the new way and the old way;
* **the page itself**: Streamlit's AppTest running app_pages/1_Lens.py on a fresh 512-token prompt (everything the page
  draws, cell details included), after a warm-up run on the default prompt.

    .venv/bin/python bench/lens_page.py [--skip-page]

Progress goes to stderr; stdout's last line holds every figure (times in seconds, measured in this run).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lens_bench():
    """bench/lens.py as a module (it is a script, not a package member): its bundled-Wikipedia text picker."""
    spec = importlib.util.spec_from_file_location("bench_lens", ROOT / "bench" / "lens.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wiki_ids = _lens_bench().wiki_ids  # the same text as the lens benchmark

WINDOW = 24  # positions a long prompt's heatmap opens on (ui.views.lens.DEFAULT_SHOWN_POSITIONS)
log = logging.getLogger("bench.lens_page")


def best_of(n: int, fn) -> tuple[float, object]:
    """(fastest wall time of ``n`` calls, the last result)."""
    best, out = float("inf"), None
    for _ in range(n):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-page", action="store_true", help="skip the AppTest run of the whole page")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    import torch

    from core.analyses.lens import run_lens, run_lens_edit
    from core.model.loading import ModelSpec
    from core.model.session import ModelSession

    torch.manual_seed(0)
    session = ModelSession.load(ModelSpec())
    n_layers = session.adapter.n_layers
    session.trace("warm up the kernels"), run_lens(session, "warm up the kernels")
    figures: list[str] = []
    for n in (512, 2048):
        ids = torch.tensor(wiki_ids(session.tokenizer, n))
        window = list(range(n - WINDOW, n))
        forward, _ = best_of(2, lambda: session.trace(ids))

        def page_path():
            trace = session.trace(ids, keep_cache=True)
            return run_lens(session, "", trace=trace, positions=window, top_k=10)

        first, _ = best_of(2, page_path)
        text = f"{n} tok: first heatmap {first:.2f} s (forward alone {forward:.2f} s, +{first - forward:.2f} s"
        if n <= 512:  # the old path (every layer x position first) takes minutes at 2048 tokens
            old, _ = best_of(1, lambda: run_lens(session, "", trace=session.trace(ids), top_k=10))
            text += f"; old path {old:.2f} s, {old / first:.0f}x"
        log.info(text)
        figures.append(text + ")")
    # what-if: a 200-token prompt, its last word changed
    base_ids = torch.tensor(wiki_ids(session.tokenizer, 200))
    edited = torch.cat([base_ids[:-1], torch.tensor(session.tokenizer(" however").input_ids[:1])])
    window = list(range(200 - WINDOW, 200))
    base_trace = session.trace(base_ids, keep_cache=True)
    base = run_lens(session, "", trace=base_trace, positions=window, top_k=10)

    def edit_path():
        trace, _ = session.trace_edit(base_trace, edited)
        return run_lens_edit(session, base_trace, base, trace, top_k=10, positions=window)

    edit, (result, reused) = best_of(3, edit_path)
    scratch, _ = best_of(2, lambda: run_lens(session, "", trace=session.trace(edited, keep_cache=True),
                                             positions=window, top_k=10))
    old_edit, _ = best_of(1, lambda: run_lens(session, "", trace=session.trace(edited), top_k=10))
    log.info("what-if: edit %.3f s (reused %d), from scratch %.2f s, old %.2f s", edit, reused, scratch, old_edit)
    figures.append(f"what-if at the end of 200 tok: {edit:.2f} s ({reused} positions reused; from scratch "
                   f"{scratch:.2f} s, old path {old_edit:.2f} s, {old_edit / edit:.0f}x)")
    if not args.skip_page:
        figures.append(page_run(session.tokenizer))
    print(f"Lens page, bundled model ({n_layers} blocks), {torch.get_num_threads()} threads | " + " | ".join(figures))


def page_run(tokenizer) -> str:
    """Wall time of AppTest running the Lens page on a fresh 512-token prompt, after a warm-up run."""
    from streamlit.testing.v1 import AppTest

    script = str(ROOT / "app_pages" / "1_Lens.py")
    warm = AppTest.from_file(script, default_timeout=600)
    warm.run()
    text = tokenizer.decode(wiki_ids(tokenizer, 512))
    at = AppTest.from_file(script, default_timeout=600)
    at.query_params["prompt"] = text
    start = time.perf_counter()
    at.run()
    took = time.perf_counter() - start
    failed = [e.value for e in at.exception] + [e.value for e in at.error]
    log.info("page: %.2f s, %s", took, failed or "clean")
    return f"whole page, fresh 512-token prompt: {took:.2f} s{' (ERRORS: ' + str(failed) + ')' if failed else ''}"


if __name__ == "__main__":
    main()

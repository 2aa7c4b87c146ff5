"""Benchmark: Layerscope's chunked lens statistics against tuned-lens's ``PredictionTrajectory``.

Both compute, for every layer x position of the bundled SmolLM2-135M on real Wikipedia text (gensim's
bundled enwiki dump), the logit lens's max probability, entropy, forward KL -- KL(final || layer), i.e.
sum p_final * (log p_final - log p_layer), the direction of tuned-lens's ``forward_kl`` and of Layerscope's
``kl_to_final`` -- cross-entropy of the next token and a target rank. Each implementation runs in its own
subprocess; we time the statistics (model load excluded; for tuned-lens the trajectory's forward pass
and its five statistic methods, labels included as the library computes them when given a tokenizer)
and read the process's peak RSS (VmHWM).

Matmul limit: the same child process then measures what the same work costs as plain float32 matrix products
(:func:`matmul_limit`): the forward pass plus the unembedding of every layer x position, as ``torch.matmul`` of the
shapes of ``lens_stats``'s own unembedding products, each the best of a few warm runs. Layerscope's time (trace +
statistics, as timed above: a cold first call) over that limit is the ratio reported and checked, next to the same
work's best of a few warm runs over it; all come from one run, so load from other work on the machine falls on
each (the best-of figures are the ones it touches least).

Rank targets: tuned-lens takes one target array ([pos]) for both ``rank`` and ``cross_entropy``, so the
timed tuned-lens run ranks the next token; ``core.lenses.stats.lens_stats`` takes position-independent targets
(or None: the final layer's top-1), so Layerscope ranks the final top-1. The work is the same; the
agreement check compares ranks with tuned-lens's targets set to the final top-1.

Precision: the same run times Layerscope's trace + statistics on the bundled model in bfloat16 against
float32 (one process, both warmed up) and reports the logit lens's top-1 agreement over all layers x positions,
a bfloat16 top-1 within :data:`BF16_TIE` of the float32 row's best logit counted as a tie.

    .venv/bin/python bench/lens.py [--tokens 256] [--long-tokens 2048] [--precision-tokens 256] [--skip-tuned-lens]

Progress goes to stderr; stdout's last line holds every figure, the line before it how the limit was measured.
"""

from __future__ import annotations

import argparse
import bz2
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
TUNED_LENS_MAX_BYTES = 20 * 2**30  # address-space guard: fail with MemoryError, not the OOM killer
RTOL, ATOL = 1e-3, 1e-4  # agreement of entropy / KL / CE / max prob (ATOL for values near 0, e.g. KL)
MIN_SPEEDUP, MAX_GB_SHORT, MAX_GB_LONG = 10.0, 2.0, 3.0  # the targets
MAX_LIMIT_RATIO = 2.0  # the target: Layerscope's trace + statistics within 2x of the matmul limit
LIMIT_REPEATS = 3  # each limit figure is the best of this many warm runs
REL_FLOOR = 1e-2  # relative errors are reported where |value| >= this (near 0 only ATOL makes sense)
RANK_TIE = 1e-4  # log-probs this close count as tied: two computations of the same logits (another product
# shape or kernel) differ by ~2e-6 of |logit| <= ~30 here, so 1e-4 leaves a margin; ranks are compared only
# where no other token lies within RANK_TIE of the target, and the near-tied cells are counted and reported
BF16_TIE = 1e-2  # of each row's largest |logit|: bfloat16 keeps 8 significant bits (a rounding of up to 0.2% per
# operation, adding up over 30 blocks), so float32 logits closer than this are ties for a bfloat16 run
log = logging.getLogger("bench.lens")


def peak_rss_gb() -> float:
    """This process's peak resident set size (VmHWM) in GB, falling back to ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def wiki_ids(tokenizer: Any, n_tokens: int) -> list[int]:
    """Exactly ``n_tokens`` ids: the start of the first bundled Wikipedia article that has that many."""
    # in the measuring child process only, so each peak-memory figure is its own
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki
    from gensim.test.utils import datapath  # in the measuring child process only, so each peak-memory figure is its own

    with bz2.BZ2File(datapath(WIKI)) as dump:
        for title, markup, _ in extract_pages(dump):
            text = filter_wiki(markup).strip()
            if text.startswith("#REDIRECT") or len(text) < n_tokens:
                continue
            ids = tokenizer(text).input_ids
            if len(ids) >= n_tokens:
                log.info("text: %r, first %d of %d tokens", title, n_tokens, len(ids))
                return [int(i) for i in ids[:n_tokens]]
    raise ValueError(f"No bundled Wikipedia article has {n_tokens} tokens.")


def _session(dtype: str = "float32") -> Any:
    import torch  # in the measuring child process only, so each peak-memory figure is its own

    # in the measuring child process only, so each peak-memory figure is its own
    from transformers.utils import logging as hf_logging

    # in the measuring child process only, so each peak-memory figure is its own
    from core.model.loading import ModelSpec
    from core.model.session import ModelSession

    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    return ModelSession.load(ModelSpec(dtype=dtype))


def precision(n_tokens: int) -> dict[str, Any]:
    """bfloat16 vs float32 on ``n_tokens`` tokens: time of trace + statistics (each warmed up on 16 tokens
    first) and the logit lens's top-1 agreement over every layer x position (exact, and up to near-ties)."""
    import torch  # in the measuring child process only, so each peak-memory figure is its own

    # in the measuring child process only, so each peak-memory figure is its own
    from core.lenses.stats import output_logits

    sessions = {dtype: _session(dtype) for dtype in ("float32", "bfloat16")}
    ids = wiki_ids(sessions["float32"].tokenizer, n_tokens)
    seconds, results = {}, {}
    for dtype, session in sessions.items():
        layerscope_stats(session, ids[:16])  # warm-up: first-call allocations and kernel choice
        start = time.perf_counter()
        results[dtype] = layerscope_stats(session, ids)
        seconds[dtype] = time.perf_counter() - start
    ref_trace = sessions["float32"].trace(torch.tensor(ids))
    top1 = results["bfloat16"].top_ids[..., 0]  # [layer, pos]
    exact = int((top1 == results["float32"].top_ids[..., 0]).sum())
    tied = 0
    for layer in range(top1.shape[0]):  # one layer at a time: [pos, vocab] float32 logits
        logits = output_logits(sessions["float32"].adapter, ref_trace.resid[layer]).double()
        best = logits.amax(-1)
        chosen = logits.gather(-1, torch.as_tensor(top1[layer])[:, None])[:, 0]
        tied += int((best - chosen <= BF16_TIE * logits.abs().amax(-1)).sum())
    return {"impl": "precision", "tokens": n_tokens, "fp32_seconds": seconds["float32"],
            "bf16_seconds": seconds["bfloat16"], "cells": int(top1.size), "exact": exact, "within_ties": tied,
            "peak_gb": peak_rss_gb()}


def layerscope_stats(session: Any, ids: list[int]) -> Any:
    """One forward pass, then every statistic in one chunked pass over layers x positions."""
    import torch  # in the measuring child process only, so each peak-memory figure is its own

    # in the measuring child process only, so each peak-memory figure is its own
    from core.lenses.stats import lens_stats

    trace = session.trace(torch.tensor(ids))
    return lens_stats(session, trace, targets=None)  # rank target: the final layer's top-1


def matmul_limit(session: Any, ids: list[int]) -> dict[str, Any]:
    """The float32 matrix-product limit of :func:`layerscope_stats`'s work on ``ids``, measured in this process.

    Unembedding: a plain ``torch.matmul(x, W.T, out=...)`` (random [rows, d_model] x, the model's own [vocab,
    d_model] unembedding W, a preallocated output) for every product of the lens call pattern -- one per layer
    group x position tile of :func:`core.lenses.reduce.layer_groups` / ``position_tiles``, and the final layer's
    rows once per tile: (layers + 1) x positions rows in all -- each shape timed warm, best of
    :data:`LIMIT_REPEATS`. Forward pass: the faster of ``model(ids)`` (warm, best of :data:`LIMIT_REPEATS`) and
    2 x parameters x tokens FLOP at the unembedding's rate. Returns the limit in seconds and how it was obtained.
    """
    from collections import Counter

    import torch  # in the measuring child process only, so each peak-memory figure is its own

    # in the measuring child process only, so each peak-memory figure is its own
    from core.lenses.reduce import layer_groups, position_tiles

    def best(fn: Any) -> float:
        fn()  # warm-up
        times = []
        for _ in range(LIMIT_REPEATS):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    adapter, n = session.adapter, len(ids)
    weight = adapter.unembed_weight().float()  # [vocab, d_model]
    vocab, d_model = weight.shape
    shapes: Counter[int] = Counter()  # product rows -> how many such products
    for ps in position_tiles(n):
        tile = ps.stop - ps.start
        shapes.update(len(group) * tile for group in layer_groups(adapter.n_layers, tile, vocab))
        shapes[tile] += 1  # the final layer's rows: the model's output, once per tile
    rows = sum(r * c for r, c in shapes.items())
    with torch.no_grad():
        unembed_s = 0.0
        for r, count in shapes.items():
            x, out = torch.randn(r, d_model), torch.empty(r, vocab)
            unembed_s += count * best(lambda x=x, out=out: torch.matmul(x, weight.T, out=out))
        rate = 2 * rows * d_model * vocab / unembed_s  # FLOP/s
        model_s = best(lambda: session.model(torch.tensor([ids])))
    n_params = sum(p.numel() for p in session.model.parameters())  # tied weights once
    flop_s = 2 * n_params * n / rate
    forward_s = min(model_s, flop_s)
    products = ", ".join(f"{c} x [{r}, {d_model}] @ [{d_model}, {vocab}]" for r, c in sorted(shapes.items()))
    how = (f"matmul limit {forward_s + unembed_s:.2f} s = forward {forward_s:.2f} s (the faster of model(ids) "
           f"{model_s:.2f} s and 2 x {n_params / 1e6:.0f}M params x {n} tok at the unembedding's rate {flop_s:.2f} s) "
           f"+ unembedding {unembed_s:.2f} s ({rows} rows = {rows // n} layers x {n} positions: {products}, plain "
           f"fp32 torch.matmul into a preallocated output, {rate / 1e9:.0f} GFLOP/s); each best of {LIMIT_REPEATS} "
           f"warm runs on {torch.get_num_threads()} threads")
    return {"limit_s": forward_s + unembed_s, "limit_how": how}


def tuned_lens_stats(session: Any, ids: list[int], targets: list[int]) -> tuple[Any, dict[str, np.ndarray]]:
    """tuned-lens's logit-lens trajectory and its five statistics ([layer+1, pos] each)."""
    from tuned_lens.nn import LogitLens  # in the measuring child process only, so each peak-memory figure is its own

    # in the measuring child process only, so each peak-memory figure is its own
    from tuned_lens.plotting import PredictionTrajectory

    traj = PredictionTrajectory.from_lens_and_model(
        lens=LogitLens.from_model(session.model), model=session.model, input_ids=ids,
        tokenizer=session.tokenizer, targets=targets)
    stats = {name: getattr(traj, name)().stats
             for name in ("rank", "entropy", "forward_kl", "cross_entropy", "max_probability")}
    return traj, stats


def next_token_targets(ids: list[int]) -> list[int]:
    """[pos] the next token; the last position has none, so it gets its own id (ignored in checks)."""
    return ids[1:] + ids[-1:]


def check(n_tokens: int) -> dict[str, Any]:
    """Run both on ``n_tokens`` tokens and compare every statistic; raise AssertionError on mismatch."""
    session = _session()
    ids = wiki_ids(session.tokenizer, n_tokens)
    ours = layerscope_stats(session, ids)
    traj, theirs = tuned_lens_stats(session, ids, next_token_targets(ids))
    pairs = {
        "entropy": (ours.entropy, theirs["entropy"]),
        "forward_kl": (ours.kl_to_final, theirs["forward_kl"]),
        "cross_entropy": (ours.next_token_ce[:, :-1], theirs["cross_entropy"][:, :-1]),
        "max_probability": (ours.top_probs[..., 0], theirs["max_probability"]),
    }
    report: dict[str, Any] = {"tokens": n_tokens, "shape": list(ours.entropy.shape)}
    for name, (a, b) in pairs.items():
        assert a.shape == b.shape, f"{name}: shapes {a.shape} vs {b.shape}"
        err, big = np.abs(a.astype(np.float64) - b), np.abs(b) >= REL_FLOOR
        report[name] = {"max_abs": float(err.max()), "max_rel": float((err[big] / np.abs(b[big])).max(initial=0))}
        assert np.allclose(a, b, rtol=RTOL, atol=ATOL), f"{name} disagrees: {report[name]}"
    # Ranks: point tuned-lens's targets at our final top-1, which is what lens_stats(targets=None) ranks; the
    # model's own top-1 (its forward pass: another computation) may differ from it only at a near-tie.
    top1 = ours.target_ids[:, 0]
    model_lp = traj.model_log_probs  # [pos, vocab]
    gap = model_lp.max(-1) - np.take_along_axis(model_lp, top1[:, None], -1)[:, 0]
    assert (gap <= RANK_TIE).all(), f"final top-1 differs from the model's beyond a near-tie (gap {gap.max():.2g})"
    traj.targets = top1
    their_rank = traj.rank().stats
    t_lp = np.take_along_axis(traj.log_probs, top1[None, :, None], axis=-1)  # [layer, pos, 1]
    near = (np.abs(traj.log_probs - t_lp) <= RANK_TIE).sum(-1) - 1  # [layer, pos] other near-tied tokens
    diff = np.abs(ours.target_rank[..., 0] - their_rank)
    untied = near == 0
    report["rank"] = {"cells": int(diff.size), "untied": int(untied.sum()),
                      "untied_equal": int((diff[untied] == 0).sum()),
                      "tied": int((~untied).sum()), "tied_equal": int((diff[~untied] == 0).sum()),
                      "final_rank_1": bool((ours.target_rank[-1, :, 0] == 1).all())}
    assert (diff[untied] == 0).all() and (diff <= near).all(), f"ranks disagree: {report['rank']}"
    assert report["rank"]["final_rank_1"], "the final layer's rank of its own top-1 is not 1"
    return report


def worker(which: str, n_tokens: int, limit: bool = False) -> dict[str, Any]:
    """Load the model (untimed), then time one implementation's statistics on ``n_tokens`` tokens (the first call:
    cold); ``limit``: then time it warm (best of :data:`LIMIT_REPEATS`) and measure :func:`matmul_limit`, after the
    peak memory is read."""
    if which == "check":
        return check(n_tokens)
    if which == "precision":
        return precision(n_tokens)
    if which == "tuned-lens":
        resource.setrlimit(resource.RLIMIT_AS, (TUNED_LENS_MAX_BYTES, TUNED_LENS_MAX_BYTES))
    session = _session()
    ids = wiki_ids(session.tokenizer, n_tokens)
    log.info("%s: %d tokens, model loaded (%.2f GB so far)", which, n_tokens, peak_rss_gb())
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        if which == "layerscope":
            layerscope_stats(session, ids)
        else:
            tuned_lens_stats(session, ids, next_token_targets(ids))
    except (MemoryError, RuntimeError) as err:  # torch reports a failed allocation as RuntimeError
        if not isinstance(err, MemoryError) and "alloc" not in str(err):
            raise
        return {"impl": which, "tokens": n_tokens, "error": f"out of memory: {str(err)[:80]}", "peak_gb": peak_rss_gb()}
    result = {"impl": which, "tokens": n_tokens, "seconds": time.perf_counter() - start,
              "cpu_seconds": time.process_time() - cpu_start, "peak_gb": peak_rss_gb()}
    if limit:
        warm = []
        for _ in range(LIMIT_REPEATS):  # the same work warm, best of: what the limit is compared with too
            start = time.perf_counter()
            layerscope_stats(session, ids)
            warm.append(time.perf_counter() - start)
        result.update(matmul_limit(session, ids), warm_seconds=min(warm))
        result["limit_ratio"] = result["seconds"] / result["limit_s"]
        result["warm_limit_ratio"] = result["warm_seconds"] / result["limit_s"]
        log.info("%s", result["limit_how"])
    return result


def run_worker(which: str, n_tokens: int, limit: bool = False) -> dict[str, Any]:
    """Run ``worker`` in a fresh interpreter; its stdout's last line is the JSON result."""
    log.info("running %s on %d tokens…", which, n_tokens)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", which, "--tokens", str(n_tokens)]
    cmd += ["--limit"] if limit else []
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"impl": which, "tokens": n_tokens, "error": f"exit code {proc.returncode}"}
    result = json.loads(lines[-1])
    log.info("%s", result)
    return result


def describe(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"{result['impl']} failed ({result['error']})"
    text = f"{result['impl']} {result['seconds']:.1f} s {result['peak_gb']:.2f} GB"  # wall time, peak RSS
    if "limit_s" in result:
        text += (f" ({result['limit_ratio']:.2f}x the matmul limit {result['limit_s']:.2f} s; warm best of "
                 f"{LIMIT_REPEATS} {result['warm_seconds']:.1f} s, {result['warm_limit_ratio']:.2f}x)")
    return text


def _precision_summary(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"bf16 vs fp32 failed ({result['error']})"
    fp32, bf16, cells = result["fp32_seconds"], result["bf16_seconds"], result["cells"]
    return (f"bf16 vs fp32 {result['tokens']} tok {bf16:.1f} s vs {fp32:.1f} s (time ratio {bf16 / fp32:.2f}), "
            f"logit-lens top-1 agreement {result['exact'] / cells:.1%} exact, {result['within_ties'] / cells:.1%} "
            f"up to near-ties (within {BF16_TIE:g} of |logit| max) over {cells} layer x position cells")


def _agreement_summary(report: dict[str, Any]) -> str:
    errs = [v for v in report.values() if isinstance(v, dict) and "max_rel" in v]
    rel, abs_ = max(v["max_rel"] for v in errs), max(v["max_abs"] for v in errs)
    r = report["rank"]
    return (f"ok (max rel err {rel:.0e}, max abs {abs_:.0e}, ranks {r['untied_equal']}/{r['untied']} equal "
            f"where no token ties within {RANK_TIE:g}; {r['tied']} near-tied cells excluded, {r['tied_equal']} "
            f"of them equal anyway)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=256, help="tokens for the head-to-head run")
    parser.add_argument("--long-tokens", type=int, default=2048, help="tokens for Layerscope alone (0: skip)")
    parser.add_argument("--check-tokens", type=int, default=16, help="tokens for the agreement check (0: skip)")
    parser.add_argument("--precision-tokens", type=int, default=256,
                        help="tokens for the bfloat16 vs float32 comparison (0: skip)")
    parser.add_argument("--skip-tuned-lens", action="store_true", help="time Layerscope only (quick)")
    parser.add_argument("--worker", choices=("layerscope", "tuned-lens", "check", "precision"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--limit", action="store_true", help=argparse.SUPPRESS)  # worker: measure the matmul limit
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    if args.worker:
        print(json.dumps(worker(args.worker, args.tokens, args.limit)))
        return 0
    if args.tokens > 256 and not args.skip_tuned_lens:
        parser.error("tuned-lens needs about 13 GB at 256 tokens and is killed for memory at 512: keep --tokens <= 256")
    parts: list[str] = []
    missed: list[str] = []
    ok = True
    if args.check_tokens:
        agreement = run_worker("check", args.check_tokens)
        ok = "error" not in agreement
        parts.append(f"agreement {args.check_tokens} tok " + (_agreement_summary(agreement) if ok else "FAILED"))
    ours = run_worker("layerscope", args.tokens, limit=True)
    if "limit_how" in ours:
        print(f"{args.tokens} tok: {ours['limit_how']}")
    head = f"{args.tokens} tok {describe(ours)}"
    if not args.skip_tuned_lens:
        theirs = run_worker("tuned-lens", args.tokens)
        head += f" | {describe(theirs)}"
        if "seconds" in ours and "seconds" in theirs:
            speedup = theirs["seconds"] / ours["seconds"]
            head += f" | speedup {speedup:.1f}x"
            missed += [f"speedup < {MIN_SPEEDUP:g}x"] if speedup < MIN_SPEEDUP else []
    missed += [f"{args.tokens} tok peak > {MAX_GB_SHORT:g} GB"] if ours.get("peak_gb", 0) > MAX_GB_SHORT else []
    missed += ["layerscope failed"] if "error" in ours else []
    ratio = ours.get("limit_ratio", 0)
    missed += [f"{args.tokens} tok > {MAX_LIMIT_RATIO:g}x the matmul limit"] if ratio > MAX_LIMIT_RATIO else []
    parts.insert(0, head)
    if args.long_tokens:
        long = run_worker("layerscope", args.long_tokens)
        parts.append(f"{args.long_tokens} tok {describe(long)}")
        missed += [f"{args.long_tokens} tok peak > {MAX_GB_LONG:g} GB"] if long.get("peak_gb", 0) > MAX_GB_LONG else []
    if args.precision_tokens:
        parts.append(_precision_summary(run_worker("precision", args.precision_tokens)))
    parts.append("targets " + ("met" if not missed else "MISSED: " + ", ".join(missed)))
    parts.append(f"load avg {os.getloadavg()[1]:.1f} on {os.cpu_count()} cpus")
    print("lens bench: " + " | ".join(parts))
    return 0 if ok and "error" not in ours else 1


if __name__ == "__main__":
    sys.exit(main())

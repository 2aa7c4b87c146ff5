"""`python -m core patch`: activation patching from a clean into a corrupted prompt, or the patch lens.

Grid mode (the default) prints one row per (layer, position): the metric of the corrupted run with that cell's
activation taken from the clean run, and its effect (0 = nothing restored, 1 = the clean value)::

    python -m core patch --prompt "The Eiffel Tower is in the city of" --corrupt "The Colosseum is in the city of" \\
        --metric logit_diff --token " Paris" --other " Rome" --site resid --layers 0,10,20,30

Patch-lens mode (``--source-cell L,P --target-cell L,P``) runs the target prompt (``--corrupt``, default the
``--prompt`` itself) with its residual at the target cell replaced by the ``--prompt``'s residual at the source cell
and prints the lens of the patched run (layers are residual layers: 0 = embeddings, l = after block l; a negative
position counts from the end).
"""

from __future__ import annotations

import argparse

from core import validate
from core.analyses.params import DEFAULT_TOP_K, MAX_TOP_K
from core.cli.common import Bar, add_model, check_model, check_sizes, load_session, log, print_frame

# The analysis's names, repeated so that parsing loads no torch (tests/unit/test_patching.py checks they match
# core.analyses.patching.METRIC_KINDS / PATCH_SITES).
METRICS = ("logit_diff", "prob", "logprob", "rank")
SITES = ("resid", "attn_out", "mlp_out")
PATCH_FORMATS = ("json", "csv", "table")
MAX_BATCH = 1024


def parse_cell(flag: str, text: str) -> tuple[int, int]:
    """``"12,-1"`` -> (12, -1); ValueError naming ``flag`` for anything else."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        layer, pos = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"{flag} must be LAYER,POSITION (two whole numbers, e.g. 12,-1); got {text!r}.") from None
    return layer, pos


def check_args(args: argparse.Namespace) -> None:
    """Every flag of ``patch``, before torch or the model loads (layers against config.json when it is here)."""
    dims = check_model(args.model)
    check_sizes(args, {"top_k": (1, MAX_TOP_K), "batch_size": (1, MAX_BATCH)})
    if not args.prompt.strip():
        raise ValueError("--prompt is empty: give the clean (or source) text.")
    lens_mode = args.source_cell is not None or args.target_cell is not None
    n = dims.n_layers if dims is not None else None
    if lens_mode:
        if args.source_cell is None or args.target_cell is None:
            raise ValueError("The patch lens needs both --source-cell L,P and --target-cell L,P.")
        if args.corrupt is not None and not args.corrupt.strip():
            raise ValueError("--corrupt (the target prompt) is empty: leave it out to patch within --prompt.")
        for flag, text in (("--source-cell", args.prompt), ("--target-cell", args.corrupt or args.prompt)):
            layer, pos = parse_cell(flag, getattr(args, flag[2:].replace("-", "_")))
            if layer < 0 or (n is not None and layer > n):
                top = n if n is not None else "L"
                raise ValueError(f"{flag} layer {layer} does not exist: residual layers are 0..{top} "
                                 "(0 = embeddings, l = after block l).")
            validate.position(f"{flag} position", pos, text)
        if args.token == "":
            raise ValueError("--token is empty: give one token such as ' Paris' (mind the leading space).")
        return
    if args.corrupt is None or not args.corrupt.strip():
        raise ValueError("--corrupt is missing: give the corrupted prompt (the same number of tokens as --prompt).")
    if args.metric != "logit_diff" and args.other is not None:
        raise ValueError(f"--other applies to --metric logit_diff only; --metric {args.metric} reads --token alone.")
    if args.token == "" or args.other == "":
        raise ValueError("--token / --other is empty: give one token such as ' Paris' (mind the leading space).")
    first = 0 if args.site == "resid" else 1
    for flag in ("--layers", "--positions"):
        text = getattr(args, flag[2:])
        if text is not None and not validate.int_list(flag, text):
            raise ValueError(f"{flag} is empty: give comma-separated whole numbers, or leave it out for all.")
    for pos in validate.int_list("--positions", args.positions or ""):
        validate.position("--positions: position", pos, args.prompt, args.corrupt)
    if args.layers is not None and n is not None:
        for layer in validate.int_list("--layers", args.layers):
            if not first <= layer <= n:
                what = "residual layers" if first == 0 else "blocks"
                raise ValueError(f"--layers {layer} does not exist for --site {args.site}: this model has {what} "
                                 f"{first}..{n}.")


def cmd_patch(args: argparse.Namespace) -> None:
    check_args(args)
    from core.analyses import patching  # torch: only once the input is checked

    session = load_session(args.model)
    if args.source_cell is not None:
        result = patching.patch_lens(session, args.prompt, args.corrupt or args.prompt,
                                     parse_cell("--source-cell", args.source_cell),
                                     parse_cell("--target-cell", args.target_cell), top_k=args.top_k,
                                     targets=[args.token] if args.token else None)
    else:
        metric, note = patching.default_metric(session, args.metric, args.prompt, args.corrupt, args.token,
                                               args.other)
        if note:
            log.warning("%s", note)
        if args.token is None or (args.metric == "logit_diff" and args.other is None):
            log.warning("metric: %s (left-out tokens are the final top-1s)", metric.label())
        layers = validate.int_list("--layers", args.layers) if args.layers else None
        positions = validate.int_list("--positions", args.positions) if args.positions else None
        bar = Bar("patching") if args.verbose else None
        try:
            result = patching.patching_grid(session, args.prompt, args.corrupt, metric, site=args.site,
                                            layers=layers, positions=positions, batch_size=args.batch_size,
                                            progress=(lambda f: bar(f, "patched passes")) if bar else None)
        finally:
            if bar is not None:
                bar.close()
        log.warning("%s: clean %.6g, corrupted %.6g (%d passes, %d rows each)", metric.label(), result.clean_value,
                    result.corrupt_value, result.n_passes, result.batch_size)
    for note in result.notes:
        log.warning("%s", note)
    if args.format == "table":
        import pandas as pd

        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(result.frame.to_string(index=False))
    else:
        print_frame(result.frame, args.format)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``patch``."""
    p = sub.add_parser("patch", help="activation patching (clean -> corrupted) per layer x position, or the "
                                     "patch lens (--source-cell / --target-cell)")
    add_model(p, "'bundled', a hub id, a local folder; prefix 'random:'")
    p.add_argument("--prompt", required=True, help="the clean prompt (patch lens: the source prompt)")
    p.add_argument("--corrupt", default=None,
                   help="the corrupted prompt, as many tokens as --prompt (patch lens: the target prompt, default "
                        "--prompt)")
    p.add_argument("--metric", choices=METRICS, default="logit_diff",
                   help="read at the last position: logit_diff = logit(token) - logit(other), prob, logprob, rank")
    p.add_argument("--token", default=None,
                   help="the metric's token, e.g. ' Paris' (default: the clean run's final top-1); patch lens: the "
                        "target token (default: the unpatched run's final top-1)")
    p.add_argument("--other", default=None,
                   help="logit_diff's other token, e.g. ' Rome' (default: the corrupted run's final top-1)")
    p.add_argument("--site", choices=SITES, default="resid",
                   help="resid = residual layer l (0 = embeddings); attn_out / mlp_out = block l's output (1..L)")
    p.add_argument("--layers", default=None, help="comma-separated layers (default: all of the site)")
    p.add_argument("--positions", default=None, help="comma-separated positions (default: all)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="rows per forward pass (default: from a memory budget, at most 64)")
    p.add_argument("--source-cell", default=None, metavar="L,P", help="patch lens: the source prompt's cell")
    p.add_argument("--target-cell", default=None, metavar="L,P", help="patch lens: the target prompt's cell")
    p.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="patch lens: top tokens per cell")
    p.add_argument("--format", choices=PATCH_FORMATS, default=PATCH_FORMATS[0])
    p.set_defaults(func=cmd_patch)

"""``python -m core topk <section> ...``: the Top-k order page's tables from the shell.

Sections: saturation, baseline, probing, early-exit, better-lm (core.analyses.topk.params) and
intervention, vit, whisper (core.analyses.topk.cached_runs, imported only when asked for).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from core import validate
from core.cli.common import Bar, check_model, check_sizes, load_session, print_frame, quiet_transformers

if TYPE_CHECKING:
    import pandas as pd

    from core.analyses.topk.params import TopkParams

TEXT_SECTIONS = ("saturation", "baseline", "probing", "early-exit", "better-lm")
MORE_SECTIONS = ("intervention", "vit", "whisper")
DEFAULT_TABLE = {"saturation": "summary", "baseline": "summary", "probing": "summary", "early-exit": "points",
                 "better-lm": "groups", "intervention": "offsets", "vit": "summary", "whisper": "summary"}
# Every section's tables, mirrored so a wrong --table fails before torch loads: the text sections' are kept
# equal to core.analyses.topk.params.TABLES by tests/unit/test_cli_validation.py; the others are the frames that
# topk_more.run_intervention and topk_modal.compute_modality document.
TABLES = {"saturation": ("summary", "rank_order", "saturation", "tau", "permutation", "histogram"),
          "baseline": ("summary", "rank_order", "permutation", "probe"),
          "probing": ("summary", "per_layer", "folds", "dataset"), "early-exit": ("points", "summary"),
          "better-lm": ("groups", "test"), "intervention": ("offsets", "pairs", "texts", "config"),
          "vit": ("summary", "rank_order", "kendall", "probe", "saturation", "inputs"),
          "whisper": ("summary", "rank_order", "kendall", "probe", "saturation", "inputs")}
# Bounds checked before anything loads; the text sections' own rules (TopkParams.check) run after them.
TEXT_BOUNDS = {"n": (1, 100_000), "k": (2, 50), "max_tokens": (8, 65_536), "ratio": (0.0, 1.0, True),
               "n_perm": (1, 1_000_000), "folds": (2, 20), "n_eval": (1, 100_000)}
MORE_BOUNDS = {"n": (1, 100_000), "k": (2, 1000)}


def check_args(args: argparse.Namespace) -> None:
    """Sizes, table and model of ``topk <section>`` -- files and numbers only, nothing loaded."""
    text = args.section in TEXT_SECTIONS
    check_sizes(args, TEXT_BOUNDS if text else MORE_BOUNDS if args.section != "intervention" else {"n": (1, 100_000)})
    default_tasks = None if args.section in ("vit", "intervention") else 4  # vit: k
    tasks = args.n_tasks if args.n_tasks is not None else default_tasks
    if tasks is not None:
        validate.int_range("--n-tasks" if args.n_tasks is not None else "--n-tasks (default 4)", tasks, 2, args.k)
    if args.table is not None:
        validate.choice("table", args.table, TABLES[args.section], f" for the {args.section} section")
    if text or args.section == "intervention":
        check_model(args.model)
    elif args.model not in ("", "bundled"):
        validate.model_source(args.model)


def _pick(frames: dict, section: str, table: str | None) -> "pd.DataFrame":
    name = table or DEFAULT_TABLE[section]
    if name not in frames:
        raise ValueError(f"The {section} section has no table {name!r}; choose from {', '.join(frames)}.")
    return frames[name]


def _params(args: argparse.Namespace) -> "TopkParams":
    """The text sections' parameters, checked by the analysis's own rules (before any model loads)."""
    from core.analyses.topk.params import TopkParams

    params = TopkParams(n=args.n, k=args.k, seed=args.seed, max_tokens=args.max_tokens, ratio=args.ratio,
                        n_perm=args.n_perm, n_tasks=args.n_tasks or 4, folds=args.folds, n_eval=args.n_eval)
    params.check()
    return params


def _more_section(args: argparse.Namespace, bar: Bar) -> dict:
    from core.analyses.topk import cached_runs as topk_more

    if args.section == "intervention":
        return topk_more.run_intervention(load_session(args.model), args.n, args.seed, bar)
    model = None if args.model in ("", "bundled") else args.model
    quiet_transformers()
    return topk_more.run_modality(args.section, model, args.n, args.k, args.seed, bar, n_tasks=args.n_tasks)


def cmd_topk(args: argparse.Namespace) -> None:
    check_args(args)
    from core.analyses.topk.sections import run_section

    params = _params(args) if args.section in TEXT_SECTIONS else None
    session = load_session(args.model) if params is not None else None
    bar = Bar(f"topk {args.section}")
    try:
        frames = run_section(session, args.section, params, bar) if params is not None else _more_section(args, bar)
    finally:
        bar.close()
    print_frame(_pick(frames, args.section, args.table), args.format)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``topk`` to the parser."""
    topk = sub.add_parser("topk", help="Looking Beyond the Top-1: transformers settle their top tokens in order")
    topk.add_argument("section", choices=TEXT_SECTIONS + MORE_SECTIONS)
    topk.add_argument("--model", default="bundled",
                      help="'bundled', a hub id or local folder, prefix 'random:' for the untrained twin "
                           "(vit/whisper: 'bundled' = a tiny random-init demo model)")
    topk.add_argument("--n", type=int, default=40, help="texts (probing/early-exit: probe-training texts; "
                                                        "intervention: texts; vit/whisper: generated inputs)")
    topk.add_argument("--k", type=int, default=5, help="top-k slots whose saturation layers are measured")
    topk.add_argument("--seed", type=int, default=0)
    topk.add_argument("--max-tokens", type=int, default=128, help="longer texts are truncated (and counted)")
    topk.add_argument("--ratio", type=float, default=0.85, help="keep positions with s_0 <= int(ratio * L)")
    topk.add_argument("--n-perm", type=int, default=1000, help="permutations of the Kendall's tau test")
    topk.add_argument("--n-tasks", type=int, default=None,
                      help="probing tasks (2..k; default 4 for text and Whisper, k for ViT)")
    topk.add_argument("--folds", type=int, default=5, help="cross-validation folds of the probes")
    topk.add_argument("--n-eval", type=int, default=20, help="early-exit evaluation texts (disjoint from --n)")
    topk.add_argument("--table", default=None,
                      help="saturation: summary|rank_order|saturation|tau|permutation|histogram; "
                           "baseline: summary|rank_order|permutation|probe; probing: summary|per_layer|folds|"
                           "dataset; early-exit: points|summary; better-lm: groups|test; "
                           "intervention: offsets|pairs|texts|config; "
                           "vit/whisper: summary|rank_order|kendall|probe|saturation|inputs")
    topk.add_argument("--format", choices=("json", "csv"), default="json")
    topk.set_defaults(func=cmd_topk)

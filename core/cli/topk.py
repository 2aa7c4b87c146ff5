"""``python -m core topk <section> ...``: the Top-k order page's tables from the shell.

Sections: saturation, baseline, probing, early-exit, better-lm (core.analyses.topk.params) and
intervention, vit, whisper (core.analyses.topk.cached_runs, imported only when asked for).
Every layer column printed is a residual layer, l = the stream after block l (1..L), as on the page.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from core import validate
from core.analyses.topk.params import (
    MAX_FOLDS,
    MAX_K,
    MIN_MAX_TOKENS,
    OTHER_SECTIONS,
    OTHER_TABLES,
    SECTIONS,
    TopkParams,
)
from core.analyses.topk.params import TABLES as TEXT_TABLES
from core.cli.common import (
    Bar,
    add_format,
    add_model,
    check_model,
    check_sizes,
    default_of,
    load_session,
    print_frame,
    quiet_transformers,
)

if TYPE_CHECKING:
    import pandas as pd

TEXT_SECTIONS = SECTIONS  # saturation .. better-lm: core.analyses.topk.sections
MORE_SECTIONS = OTHER_SECTIONS  # intervention, vit, whisper: core.analyses.topk.cached_runs
DEFAULT_TABLE = {"saturation": "summary", "baseline": "summary", "probing": "summary", "early-exit": "points",
                 "better-lm": "groups", "intervention": "offsets", "vit": "summary", "whisper": "summary"}
# Every section's tables (the analysis's own names), so a wrong --table fails before torch loads.
TABLES = {**TEXT_TABLES, **OTHER_TABLES}
# Bounds checked before anything loads; the text sections' own rules (TopkParams.check) run after them.
TEXT_BOUNDS = {"n": (1, 100_000), "k": (2, MAX_K), "max_tokens": (MIN_MAX_TOKENS, 65_536), "ratio": (0.0, 1.0, True),
               "n_perm": (1, 1_000_000), "folds": (2, MAX_FOLDS), "n_eval": (1, 100_000),
               "seed": (0, validate.MAX_SEED)}
MORE_BOUNDS = {"n": (1, 100_000), "k": (2, 1000)}
# A flag a section does not read is still checked (against the text sections' bounds): a malformed value is an
# error, never silently ignored.
LAYER_NOTE = ("Layers in every table are residual layers: l = the stream after block l (1..L; a slot held after every "
              "block saturates at 1). The paper's constants, quoted on 0-based block indices b, are converted to "
              "layer b + 1 (its probe's first layer 5 is layer 6 here).")


def check_args(args: argparse.Namespace) -> None:
    """Sizes, table and model of ``topk <section>`` -- files and numbers only, nothing loaded."""
    text = args.section in TEXT_SECTIONS
    check_sizes(args, TEXT_BOUNDS if text or args.section == "intervention" else {**TEXT_BOUNDS, **MORE_BOUNDS})
    default_tasks = None if args.section in ("vit", "intervention") else default_of(TopkParams, "n_tasks")  # vit: k
    tasks = args.n_tasks if args.n_tasks is not None else default_tasks
    if tasks is not None:
        flag = "--n-tasks" if args.n_tasks is not None else f"--n-tasks (default {default_tasks})"
        validate.int_range(flag, tasks, 2, args.k)
    if args.table is not None:
        validate.choice("table", args.table, TABLES[args.section], f" for the {args.section} section")
    if text or args.section == "intervention":
        check_model(args.model)
    else:  # ViT / Whisper: their own float32 demo models or weights; --dtype / --device apply to text models only
        source = validate.split_precision(args.model)[0]
        if source != args.model:
            raise ValueError("--dtype / --device apply to the text sections: the ViT and Whisper sections run "
                             "their models in float32 on the CPU.")
        if source not in ("", "bundled"):
            validate.model_source(source)


def _pick(frames: dict, section: str, table: str | None) -> "pd.DataFrame":
    name = table or DEFAULT_TABLE[section]
    if name not in frames:
        raise ValueError(f"The {section} section has no table {name!r}; choose from {', '.join(frames)}.")
    return frames[name]


def _params(args: argparse.Namespace) -> TopkParams:
    """The text sections' parameters, checked by the analysis's own rules (before any model loads)."""
    n_tasks = args.n_tasks or default_of(TopkParams, "n_tasks")
    params = TopkParams(n=args.n, k=args.k, seed=args.seed, max_tokens=args.max_tokens, ratio=args.ratio,
                        n_perm=args.n_perm, n_tasks=n_tasks, folds=args.folds, n_eval=args.n_eval)
    params.check()
    return params


def _more_section(args: argparse.Namespace, bar: Bar) -> dict:
    # after the checks: torch and the analysis load only for valid input
    from core.analyses.topk import cached_runs as topk_more

    if args.section == "intervention":
        return topk_more.run_intervention(load_session(args.model), args.n, args.seed, bar)
    model = None if args.model in ("", "bundled") else args.model
    quiet_transformers()
    return topk_more.run_modality(args.section, model, args.n, args.k, args.seed, bar, n_tasks=args.n_tasks)


def cmd_topk(args: argparse.Namespace) -> None:
    check_args(args)
    # after the checks: torch and the analysis load only for valid input
    from core.analyses.topk.sections import run_section

    params = _params(args) if args.section in TEXT_SECTIONS else None
    session = load_session(args.model) if params is not None else None
    bar = Bar(f"topk {args.section}")
    try:
        frames = run_section(session, args.section, params, bar) if params is not None else _more_section(args, bar)
    finally:
        bar.close()
    print_frame(_pick(frames, args.section, args.table), args.format)


def _tables_help() -> str:
    """Each section's tables, e.g. "early-exit: points|summary" (sections with the same tables share a line)."""
    sections_of: dict[tuple[str, ...], list[str]] = {}
    for section, names in TABLES.items():
        sections_of.setdefault(names, []).append(section)
    return "; ".join(f"{'/'.join(sections)}: {'|'.join(names)}" for names, sections in sections_of.items())


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``topk`` to the parser."""
    topk = sub.add_parser("topk", help="Looking Beyond the Top-1: transformers settle their top tokens in order",
                          description=LAYER_NOTE)
    topk.add_argument("section", choices=TEXT_SECTIONS + MORE_SECTIONS)
    add_model(topk, "'bundled', a hub id or local folder, prefix 'random:' for the untrained twin "
                    "(vit/whisper: 'bundled' = a tiny random-init demo model)")
    topk.add_argument("--n", type=int, default=default_of(TopkParams, "n"),
                      help="texts (probing/early-exit: probe-training texts; intervention: texts; vit/whisper: "
                           "generated inputs)")
    topk.add_argument("--k", type=int, default=default_of(TopkParams, "k"),
                      help="top-k slots whose saturation layers are measured")
    topk.add_argument("--seed", type=int, default=default_of(TopkParams, "seed"))
    topk.add_argument("--max-tokens", type=int, default=default_of(TopkParams, "max_tokens"),
                      help="longer texts are truncated (and counted)")
    topk.add_argument("--ratio", type=float, default=default_of(TopkParams, "ratio"),
                      help="keep positions whose top-1 saturates by int(ratio * L) as a 0-based block index (the "
                           "paper's s_0 <= int(ratio * L)), i.e. by layer int(ratio * L) + 1 here")
    topk.add_argument("--n-perm", type=int, default=default_of(TopkParams, "n_perm"),
                      help="permutations of the Kendall's tau test")
    topk.add_argument("--n-tasks", type=int, default=None,
                      help=f"probing tasks (2..k; default {default_of(TopkParams, 'n_tasks')} for text and "
                           "Whisper, k for ViT)")
    topk.add_argument("--folds", type=int, default=default_of(TopkParams, "folds"),
                      help="cross-validation folds of the probes")
    topk.add_argument("--n-eval", type=int, default=default_of(TopkParams, "n_eval"),
                      help="early-exit evaluation texts (disjoint from --n)")
    topk.add_argument("--table", default=None, help=_tables_help())
    add_format(topk)
    topk.set_defaults(func=cmd_topk)

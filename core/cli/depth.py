"""`python -m core depth <section>`: guess-then-refine tables and verdicts."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from core.analyses.depth.params import DEFAULT_LENS, DEFAULT_N, DEFAULT_SEED, LENSES, MAX_N, SECTIONS, TABLES
from core.cli.common import Bar, add_format, add_model, check_model, check_sizes, load_session, print_frame
from core.validate import MAX_SEED

if TYPE_CHECKING:
    from core.lenses.base import Lens
    from core.model.session import ModelSession

ALL = "all"  # every section: prints the verdicts
VERDICTS = "verdicts"


def _depth_lens(session: "ModelSession", name: str) -> "Lens":
    """The lens the sections read with (core.lenses.registry); a learned one must be trained first."""
    from core.lenses.registry import LensNotTrained, build_lens  # torch, once a lens is built

    try:
        return build_lens(session, name)
    except LensNotTrained as err:
        raise ValueError(f"No tuned lens for {session.spec.label()} yet: run `python -m core train-lens "
                         f"--model {session.spec.key()}` first, or use --lens logit.") from err


def check_args(args: argparse.Namespace) -> None:
    """Section, table, model and sizes of ``depth <section>``, nothing loaded."""
    if args.section == ALL and args.table != VERDICTS:
        raise ValueError("The 'all' section prints only the verdicts: add --table verdicts.")
    if args.table != VERDICTS and args.table not in TABLES[args.section]:
        raise ValueError(f"The {args.section} section has no table {args.table!r}; choose from "
                         f"{', '.join(TABLES[args.section])} or verdicts.")
    check_model(args.model)
    check_sizes(args, {"n": (1, MAX_N), "seed": (0, MAX_SEED)})


def cmd_depth(args: argparse.Namespace) -> None:
    check_args(args)
    import pandas as pd  # pandas, torch: only once the input is checked

    # after the checks: torch and the analysis load only for valid input
    from core.analyses.depth.sections import run_section
    from core.analyses.depth.verdicts import verdicts

    sections = SECTIONS if args.section == ALL else (args.section,)
    session = load_session(args.model)
    lens = _depth_lens(session, args.lens)
    results = {}
    for section in sections:
        bar = Bar(f"depth {section}")
        results[section] = run_section(session, lens, section, args.n, args.seed, bar)
        bar.close()
    if args.table == VERDICTS:
        print_frame(pd.DataFrame(verdicts(results)), args.format)
    else:
        print_frame(results[args.section][args.table], args.format)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``depth``."""
    depth = sub.add_parser("depth", help="how LLMs use their depth: guess-then-refine at the last position")
    depth.add_argument("section", choices=SECTIONS + (ALL,),
                       help="which section; 'all' runs every one and prints the verdicts")
    add_model(depth)
    depth.add_argument("--n", type=int, default=DEFAULT_N,
                       help="examples (per tag for pos, per task for options)")
    depth.add_argument("--lens", choices=LENSES, default=DEFAULT_LENS)
    depth.add_argument("--seed", type=int, default=DEFAULT_SEED)
    depth.add_argument("--table", default="rows",
                       help="rows (default), curves (pos, facts), counts (pos), summary (options), "
                            "shares / flips (frequency), or verdicts")
    add_format(depth)
    depth.set_defaults(func=cmd_depth)

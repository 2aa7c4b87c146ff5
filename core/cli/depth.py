"""`python -m core depth <section>`: guess-then-refine tables and verdicts."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from core.cli.common import Bar, check_model, check_sizes, load_session, print_frame

if TYPE_CHECKING:
    from core.lenses.base import Lens
    from core.model.session import ModelSession

DEPTH_TABLES = {"pos": ("rows", "counts", "curves"), "facts": ("rows", "curves"), "options": ("rows", "summary"),
                "frequency": ("rows", "shares", "flips")}


def _depth_lens(session: "ModelSession", name: str) -> "Lens":
    from core.lenses.learned import load_lenses
    from core.lenses.logit import LogitLens

    if name == "logit":
        return LogitLens(session.adapter)
    trained = load_lenses(session)
    if trained is None:
        raise ValueError(f"No tuned lens for {session.spec.label()} yet: run `python -m core train-lens "
                         f"--model {session.spec.key()}` first, or use --lens logit.")
    return trained.tuned


def cmd_depth(args: argparse.Namespace) -> None:
    if args.section == "all" and args.table != "verdicts":
        raise ValueError("The 'all' section prints only the verdicts: add --table verdicts.")
    if args.table != "verdicts" and args.table not in DEPTH_TABLES[args.section]:
        raise ValueError(f"The {args.section} section has no table {args.table!r}; choose from "
                         f"{', '.join(DEPTH_TABLES[args.section])} or verdicts.")
    check_model(args.model)
    check_sizes(args, {"n": (1, 10_000)})
    import pandas as pd

    from core.analyses.depth.sections import SECTIONS, run_section
    from core.analyses.depth.verdicts import verdicts

    sections = SECTIONS if args.section == "all" else (args.section,)
    session = load_session(args.model)
    lens = _depth_lens(session, args.lens)
    results = {}
    for section in sections:
        bar = Bar(f"depth {section}")
        results[section] = run_section(session, lens, section, args.n, args.seed, bar)
        bar.close()
    if args.table == "verdicts":
        print_frame(pd.DataFrame(verdicts(results)), args.format)
    else:
        print_frame(results[args.section][args.table], args.format)

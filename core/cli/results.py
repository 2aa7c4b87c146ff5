"""`python -m core results`: every paper's claims at a preset, written to RESULTS.md (one table)."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.cli.common import Bar, add_model, check_model, load_session
from core.paths import PROJECT_ROOT
from core.results import PAPERS, PRESETS


def cmd_results(args: argparse.Namespace) -> None:
    check_model(args.model)
    pages = args.pages or list(PAPERS)
    unknown = [p for p in pages if p not in PAPERS]
    if unknown:
        raise ValueError(f"Unknown page(s) {', '.join(unknown)}; choose from {', '.join(PAPERS)}.")
    out = Path(args.out)
    if out.suffix.lower() != ".md":
        raise ValueError(f"--out must name a .md file (got {args.out!r}).")
    from core.results import collect, markdown, write_atomic  # torch loads with the analyses, after the checks

    session = load_session(args.model)
    bar = Bar("results")
    rows, seconds = collect(session, args.preset, pages, bar)
    bar.close()
    write_atomic(out, markdown(rows, session.spec.label(), args.preset, seconds))
    print(f"{len(rows)} claims written to {out}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``results``."""
    results = sub.add_parser("results", help="every paper's claims at a preset, written to RESULTS.md")
    add_model(results)
    results.add_argument("--preset", choices=PRESETS, default="paper",
                         help="the pages' 'Paper settings' (default) or 'Quick look' sizes")
    results.add_argument("--pages", nargs="*", metavar="PAGE",
                         help=f"only these pages (default all: {', '.join(PAPERS)})")
    results.add_argument("--out", default=str(PROJECT_ROOT / "RESULTS.md"), help="where to write (default RESULTS.md)")
    results.set_defaults(func=cmd_results)

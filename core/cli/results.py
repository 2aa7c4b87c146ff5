"""`python -m core results`: every paper's claims at a preset, written to RESULTS.md (one table)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from core import validate
from core.cli.common import Bar, add_model, check_model, load_session
from core.paths import PROJECT_ROOT
from core.results import PAPERS, PRESETS


def check_out(out: Path) -> None:
    """Where RESULTS.md goes, checked before the hours of work that fill it: a file (or nothing yet) in an existing
    folder, under a name this file system takes."""
    kind = validate.path_kind(out)
    if kind == "dir":
        raise ValueError(f"--out {str(out)!r} is a folder: name the .md file to write.")
    if kind not in (None, "file"):
        raise ValueError(f"--out {str(out)!r} is not a regular file: name the .md file to write.")
    if validate.path_kind(out.parent) != "dir":
        raise ValueError(f"--out {str(out)!r}: the folder {str(out.parent)!r} does not exist.")
    if kind is None:
        try:
            os.stat(out)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as err:  # a name too long for this file system, a NUL byte
            raise ValueError(f"--out cannot name a file here: {validate.one_line(err)}.") from None


def cmd_results(args: argparse.Namespace) -> None:
    check_model(args.model)
    from core.results import parse_pages  # torch-free

    pages = parse_pages(args.pages or list(PAPERS), args.preset)
    out = Path(args.out)
    if out.suffix.lower() != ".md":
        raise ValueError(f"--out must name a .md file (got {args.out!r}).")
    check_out(out)
    kept: list[dict] = []
    if args.update:
        from core.results import read_rows

        if not out.is_file():
            raise ValueError(f"--update needs an existing {out.name} to keep the other pages' rows from ({out}).")
        try:
            kept = read_rows(out.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"--update cannot read {out}: {err}") from None
    from core.results import collect, markdown, merge, write_atomic  # torch loads with the analyses, after the checks

    session = load_session(args.model)
    bar = Bar("results")
    rows, seconds = collect(session, pages, bar)
    bar.close()
    command = "python -m core results" + ("" if args.preset == "paper" else f" --preset {args.preset}") + (
        " --update" if args.update else "") + (" --pages " + " ".join(args.pages) if args.pages else "")
    write_atomic(out, markdown(merge(kept, rows), session.spec.label(), command, seconds))
    print(f"{len(rows)} claims written to {out}" + (f" ({len(kept)} rows kept from before)" if kept else ""))


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``results``."""
    results = sub.add_parser("results", help="every paper's claims at a preset, written to RESULTS.md")
    add_model(results)
    results.add_argument("--preset", choices=PRESETS, default="paper",
                         help="the pages' 'Paper settings' (default) or 'Quick look' sizes")
    results.add_argument("--pages", nargs="*", metavar="PAGE[=PRESET]",
                         help=f"only these pages (default all: {', '.join(PAPERS)}); PAGE=quick runs one page at "
                              "another preset")
    results.add_argument("--update", action="store_true",
                         help="rewrite only the --pages' rows; keep the other pages' rows (and where they were made) "
                              "from the existing file")
    results.add_argument("--out", default=str(PROJECT_ROOT / "RESULTS.md"), help="where to write (default RESULTS.md)")
    results.set_defaults(func=cmd_results)

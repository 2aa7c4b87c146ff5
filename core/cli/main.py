"""The command line: ``python -m core <analysis> ... --format json|csv``.

Prints the same tidy tables the pages show. Bad input ends with a one-line message on stderr and a
non-zero exit status, never a traceback. One registration pattern: every module of :mod:`core.cli` has
``register(subparsers)`` adding its subcommand(s), their checks and their command; the defaults and choices come
from the analyses' torch-free params modules, so parsing loads no torch.
"""

from __future__ import annotations

import argparse
import logging
import sys

from core import validate
from core.cli import (attention_mlp, contributions, depth, extraction, generate, learned, lens, patch, results, topics,
                      topk)

log = logging.getLogger("layerscope")
# in the order of `--help`
MODULES = (lens, generate, patch, contributions, extraction, learned, depth, topk, topics, attention_mlp, results)


MESSAGE_LIMIT = 400  # characters of an error message: a 10,000-character value is not echoed whole


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {validate.one_line(message, MESSAGE_LIMIT)} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m core", description="Layerscope analyses from the shell.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(message)s", stream=sys.stderr)
    try:
        args.func(args)
    except BrokenPipeError:
        return 0
    except (ValueError, OSError, MemoryError) as err:
        print(f"error: {validate.one_line(err, MESSAGE_LIMIT)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0

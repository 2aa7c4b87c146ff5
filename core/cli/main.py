"""The command line: ``python -m core <analysis> ... --format json|csv``.

Prints the same tidy tables the pages show. Bad input ends with a one-line message on stderr and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from core import validate
from core.cli.depth import cmd_depth
from core.cli.extraction import cmd_extraction
from core.cli.lens import cmd_import_lens, cmd_lens, cmd_train_lens


log = logging.getLogger("layerscope")
# Subcommands that live beside their analysis: each module has register(subparsers).
CLI_MODULES = ("core.cli.topk", "core.cli.topics", "core.cli.attention_mlp")


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m core", description="Layerscope analyses from the shell.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    lens = sub.add_parser("lens", help="logit lens over every layer x position of a prompt")
    lens.add_argument("--model", default="bundled", help="'bundled', a hub id, a local folder; prefix 'random:'")
    lens.add_argument("--prompt", required=True)
    lens.add_argument("--top-k", type=int, default=10)
    lens.add_argument("--target", default=None, help="target token text, e.g. ' Paris' (default: final top-1)")
    lens.add_argument("--format", choices=("json", "csv"), default="json")
    lens.set_defaults(func=cmd_lens)

    ext = sub.add_parser("extraction", help="next-token extraction: precision@1 and surprisal per layer and lens")
    ext.add_argument("--model", default="bundled")
    ext.add_argument("--n", type=int, default=200, help="number of texts (one random position each)")
    ext.add_argument("--seed", type=int, default=0)
    ext.add_argument("--corpus", default="wikipedia", help="'wikipedia', 'lee', or a .txt/.jsonl/.csv file")
    ext.add_argument("--methods", default="logit,tuned,affine,identity,question")
    ext.add_argument("--format", choices=("json", "csv"), default="json")
    ext.set_defaults(func=cmd_extraction)

    train = sub.add_parser("train-lens", help="train the tuned and affine lenses for a model (cached)")
    train.add_argument("--model", default="bundled")
    train.add_argument("--kl-seconds", type=float, default=120.0, help="wall-clock budget of KL refinement")
    train.add_argument("--tokens", type=int, default=12_288, help="training tokens for the closed-form fit")
    train.add_argument("--format", choices=("json", "csv"), default="json")
    train.set_defaults(func=cmd_train_lens)

    imp = sub.add_parser("import-lens", help="use a pretrained lens folder (params.safetensors + config.json)")
    imp.add_argument("--model", default="bundled")
    imp.add_argument("--dir", required=True)
    imp.set_defaults(func=cmd_import_lens)

    depth = sub.add_parser("depth", help="how LLMs use their depth: guess-then-refine at the last position")
    depth.add_argument("section", choices=("pos", "facts", "options", "frequency", "all"),
                       help="which section; 'all' runs every one and prints the verdicts")
    depth.add_argument("--model", default="bundled")
    depth.add_argument("--n", type=int, default=50, help="examples (per tag for pos, per task for options)")
    depth.add_argument("--lens", choices=("logit", "tuned"), default="logit")
    depth.add_argument("--seed", type=int, default=42)
    depth.add_argument("--table", default="rows",
                       help="rows (default), curves (pos, facts), counts (pos), summary (options), "
                            "shares / flips (frequency), or verdicts")
    depth.add_argument("--format", choices=("json", "csv"), default="json")
    depth.set_defaults(func=cmd_depth)

    for module in CLI_MODULES:
        importlib.import_module(module).register(sub)
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
        print(f"error: {validate.one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


"""The command line: ``python -m core <analysis> ... --format json|csv``.

Prints the same tidy tables the pages show. Bad input ends with a one-line message on stderr and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import pandas as pd

log = logging.getLogger("layerscope")


def _print_frame(frame: pd.DataFrame, fmt: str) -> None:
    if fmt == "csv":
        frame.to_csv(sys.stdout, index=False)
    else:
        json.dump(json.loads(frame.to_json(orient="records", force_ascii=False)), sys.stdout,
                  ensure_ascii=False, indent=1)
        sys.stdout.write("\n")


def _session(model: str):
    from core.models import ModelSpec
    from core.trace import ModelSession

    return ModelSession.load(ModelSpec.parse(model), progress=lambda f, m: log.info("%s", m))


def cmd_lens(args: argparse.Namespace) -> None:
    from core.analyses.lens import run_lens

    session = _session(args.model)
    result = run_lens(session, args.prompt, top_k=args.top_k, targets=[args.target] if args.target else None)
    for note in result.notes:
        log.warning("%s", note)
    _print_frame(result.frame, args.format)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Layerscope analyses from the shell.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    lens = sub.add_parser("lens", help="logit lens over every layer x position of a prompt")
    lens.add_argument("--model", default="bundled", help="'bundled', a hub id, a local folder; prefix 'random:'")
    lens.add_argument("--prompt", required=True)
    lens.add_argument("--top-k", type=int, default=10)
    lens.add_argument("--target", default=None, help="target token text, e.g. ' Paris' (default: final top-1)")
    lens.add_argument("--format", choices=("json", "csv"), default="json")
    lens.set_defaults(func=cmd_lens)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(message)s", stream=sys.stderr)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        args.func(args)
    except BrokenPipeError:
        return 0
    except (ValueError, OSError, MemoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The command line: ``python -m core <analysis> ... --format json|csv``.

Prints the same tidy tables the pages show. Bad input ends with a one-line message on stderr and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from typing import TYPE_CHECKING

from core import validate
from core.cli_util import Bar, check_model, check_sizes, load_session, print_frame

if TYPE_CHECKING:
    from core.lenses import Lens
    from core.trace import ModelSession
    from core.tuned import TrainedLenses

log = logging.getLogger("layerscope")
# Subcommands that live beside their analysis: each module has register(subparsers).
CLI_MODULES = ("core.cli_topk", "core.cli_topics", "core.cli_attention_mlp")
# Every subcommand checks its input first (files, sizes, names; layers and neurons from config.json), before
# torch, a model, a lens or a corpus pass is touched. Mirrors of names kept here so that needs no torch import
# (tests/test_cli_validation.py keeps them equal to the analyses' own).
METHODS = ("logit", "tuned", "affine", "identity", "question")
DEPTH_TABLES = {"pos": ("rows", "counts", "curves"), "facts": ("rows", "curves"), "options": ("rows", "summary"),
                "frequency": ("rows", "shares", "flips")}
MAX_TEXTS = 100_000  # parse_user_texts keeps at most this many


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def cmd_lens(args: argparse.Namespace) -> None:
    check_model(args.model)
    check_sizes(args, {"top_k": (1, 100)})
    if not args.prompt.strip():
        raise ValueError("--prompt is empty: give the text to analyse.")
    from core.analyses.lens import run_lens

    session = load_session(args.model)
    result = run_lens(session, args.prompt, top_k=args.top_k, targets=[args.target] if args.target else None)
    for note in result.notes:
        log.warning("%s", note)
    print_frame(result.frame, args.format)


def _learned_lenses(session: "ModelSession", train_if_missing: bool) -> "TrainedLenses | None":
    from core.tuned import TrainingConfig, load_lenses, save_lenses, train_lenses, training_split

    trained = load_lenses(session)
    if trained is None and train_if_missing:
        log.warning("No tuned lens for %s yet: training one (about 4 minutes)…", session.spec.label())
        cfg = TrainingConfig()
        train, held = training_split(cfg)
        bar = Bar("training lenses")
        trained = train_lenses(session, train, held, cfg, bar)
        bar.close()
        save_lenses(session, trained)
    return trained


def cmd_train_lens(args: argparse.Namespace) -> None:
    check_model(args.model)
    check_sizes(args, {"kl_seconds": (0.0, 86_400.0), "tokens": (256, 200_000)})
    import pandas as pd

    from core.tuned import TrainingConfig, save_lenses, train_lenses, training_split

    session = load_session(args.model)
    cfg = TrainingConfig(kl_seconds=args.kl_seconds, n_train_tokens=args.tokens)
    train, held = training_split(cfg)
    bar = Bar("training lenses")
    trained = train_lenses(session, train, held, cfg, bar)
    bar.close()
    folder = save_lenses(session, trained)
    rows = [{"layer": layer, "lens": lens, "heldout_kl": kl}
            for lens, values in trained.report["heldout_kl"].items() for layer, kl in enumerate(values)]
    log.warning("saved to %s in %.0f s", folder, trained.report["seconds"])
    print_frame(pd.DataFrame(rows), args.format)


def cmd_import_lens(args: argparse.Namespace) -> None:
    check_model(args.model)
    validate.lens_folder(args.dir)
    from core.tuned import import_lenses

    folder = import_lenses(load_session(args.model), args.dir)
    print(json.dumps({"stored": str(folder)}))


def _extraction_sample(args: argparse.Namespace) -> list[str]:
    """The texts to read, checked and drawn before anything is loaded (a bad corpus fails at once)."""
    from core.data import CORPORA, corpus_texts, evaluation_texts, sample_texts

    texts = validate.corpus(args.corpus, tuple(CORPORA))
    return sample_texts(evaluation_texts(corpus_texts(args.corpus)) if texts is None else texts, args.n, args.seed)


def cmd_extraction(args: argparse.Namespace) -> None:
    check_model(args.model)
    methods = validate.names("--methods", args.methods, METHODS)
    check_sizes(args, {"n": (1, MAX_TEXTS)})
    sample = _extraction_sample(args)
    from core.analyses.extraction import run_extraction, summarise
    from core.lenses import LogitLens, identity_patchscope, question_patchscope

    session = load_session(args.model)
    lenses = {"logit": LogitLens(session.adapter), "identity": identity_patchscope(session),
              "question": question_patchscope(session)}
    if {"tuned", "affine"} & set(methods):
        trained = _learned_lenses(session, train_if_missing=True)
        lenses.update({"tuned": trained.tuned, "affine": trained.affine})
    lenses = {m: lenses[m] for m in methods}
    bar = Bar("extraction")
    rows = run_extraction(session, sample, lenses, seed=args.seed, progress=bar)
    bar.close()
    print_frame(summarise(rows), args.format)


def _depth_lens(session: "ModelSession", name: str) -> "Lens":
    from core.lenses import LogitLens
    from core.tuned import load_lenses

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

    from core.analyses.depth_tasks import SECTIONS, run_section, verdicts

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


if __name__ == "__main__":
    sys.exit(main())

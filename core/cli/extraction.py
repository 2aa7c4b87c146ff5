"""`python -m core extraction`: precision@1 and surprisal per layer and lens."""

from __future__ import annotations

import argparse
from functools import cache

from core import validate
from core.analyses.params import MAX_TEXTS, ExtractionParams
from core.cli.common import Bar, add_format, add_model, check_model, check_sizes, default_of, load_session, print_frame
from core.cli.learned import learned_lenses
from core.lenses.registry import NAMES as LENS_NAMES


def _extraction_sample(args: argparse.Namespace) -> list[str]:
    """The texts to read, checked and drawn before anything is loaded (a bad corpus fails at once)."""
    from core.data import CORPORA, corpus_texts, evaluation_texts, sample_texts  # pandas: after the checks

    texts = validate.corpus(args.corpus, tuple(CORPORA))
    return sample_texts(evaluation_texts(corpus_texts(args.corpus)) if texts is None else texts, args.n, args.seed)


def cmd_extraction(args: argparse.Namespace) -> None:
    check_model(args.model)
    methods = validate.names("--methods", args.methods, LENS_NAMES)
    check_sizes(args, {"n": (1, MAX_TEXTS), "seed": (0, validate.MAX_SEED)})
    sample = _extraction_sample(args)
    from core.analyses.extraction import run_extraction, summarise  # torch: only once the input is checked
    from core.lenses.registry import build_lens  # after the checks: torch and the analysis load only for valid input

    session = load_session(args.model)
    trained = cache(lambda: learned_lenses(session, train_if_missing=True))  # read (or trained) once, if asked for
    lenses = {m: build_lens(session, m, trained=trained) for m in methods}
    bar = Bar("extraction")
    rows = run_extraction(session, sample, lenses, seed=args.seed, progress=bar)
    bar.close()
    print_frame(summarise(rows), args.format)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``extraction``."""
    ext = sub.add_parser("extraction", help="next-token extraction: precision@1 and surprisal per layer and lens")
    add_model(ext)
    ext.add_argument("--n", type=int, default=default_of(ExtractionParams, "n"),
                     help="number of texts (one random position each)")
    ext.add_argument("--seed", type=int, default=default_of(ExtractionParams, "seed"))
    ext.add_argument("--corpus", default=default_of(ExtractionParams, "corpus"),
                     help="'wikipedia', 'lee', or a .txt/.jsonl/.csv file")
    ext.add_argument("--methods", default=",".join(default_of(ExtractionParams, "methods")))
    add_format(ext)
    ext.set_defaults(func=cmd_extraction)

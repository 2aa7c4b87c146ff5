"""`python -m core extraction`: precision@1 and surprisal per layer and lens."""

from __future__ import annotations

import argparse

from core import validate
from core.cli.common import Bar, check_model, check_sizes, load_session, print_frame
from core.cli.lens import METHODS, _learned_lenses


MAX_TEXTS = 100_000  # parse_user_texts keeps at most this many


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
    from core.lenses.logit import LogitLens
    from core.lenses.patchscope import identity_patchscope, question_patchscope

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

"""`python -m core lens | train-lens | import-lens`: the logit lens table, and the learned lenses."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from core import validate
from core.cli.common import Bar, check_model, check_sizes, load_session, print_frame
from core.cli.common import log

if TYPE_CHECKING:
    from core.lenses.learned import TrainedLenses
    from core.model.session import ModelSession

# Every subcommand checks its input first (files, sizes, names; layers and neurons from config.json), before
# torch, a model, a lens or a corpus pass is touched. Mirrors of names kept here so that needs no torch import
# (tests/unit/test_cli_validation.py keeps them equal to the analyses' own).
METHODS = ("logit", "tuned", "affine", "identity", "question")


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
    from core.lenses.learned import load_lenses, save_lenses
    from core.lenses.training import TrainingConfig, train_lenses, training_split

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

    from core.lenses.learned import save_lenses
    from core.lenses.training import TrainingConfig, train_lenses, training_split

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
    from core.lenses.learned import import_lenses

    folder = import_lenses(load_session(args.model), args.dir)
    print(json.dumps({"stored": str(folder)}))

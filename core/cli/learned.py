"""`python -m core train-lens | import-lens`: the learned lenses (tuned, affine) of a model, trained or imported."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from core import validate
from core.cli.common import (
    Bar,
    add_format,
    add_model,
    check_model,
    check_sizes,
    default_of,
    load_session,
    log,
    print_frame,
)
from core.lenses.params import TrainingConfig

if TYPE_CHECKING:
    from core.lenses.learned import TrainedLenses
    from core.model.session import ModelSession


def _train(session: "ModelSession", cfg: TrainingConfig) -> "tuple[TrainedLenses, Path]":
    """Train the tuned and affine lenses with a progress bar and store them -> (lenses, their folder)."""
    from core.lenses.learned import save_lenses  # torch, tuned_lens: only once the input is checked

    # after the checks: torch and the analysis load only for valid input
    from core.lenses.training import train_lenses, training_split

    train, held = training_split(cfg)
    bar = Bar("training lenses")
    trained = train_lenses(session, train, held, cfg, bar)
    bar.close()
    return trained, save_lenses(session, trained)


def learned_lenses(session: "ModelSession", train_if_missing: bool) -> "TrainedLenses | None":
    """The learned lenses stored for ``session``'s model; trained first (about 4 minutes) when missing and
    ``train_if_missing``."""
    from core.lenses.learned import load_lenses  # torch, tuned_lens

    trained = load_lenses(session)
    if trained is None and train_if_missing:
        log.warning("No tuned lens for %s yet: training one (about 4 minutes)…", session.spec.label())
        trained, _ = _train(session, TrainingConfig())
    return trained


def cmd_train_lens(args: argparse.Namespace) -> None:
    check_model(args.model)
    check_sizes(args, {"kl_seconds": (0.0, 86_400.0), "tokens": (256, 200_000)})
    import pandas as pd  # only once the input is checked

    session = load_session(args.model)
    trained, folder = _train(session, TrainingConfig(kl_seconds=args.kl_seconds, n_train_tokens=args.tokens))
    rows = [{"layer": layer, "lens": lens, "heldout_kl": kl}
            for lens, values in trained.report["heldout_kl"].items() for layer, kl in enumerate(values)]
    log.warning("saved to %s in %.0f s", folder, trained.report["seconds"])
    print_frame(pd.DataFrame(rows), args.format)


def cmd_import_lens(args: argparse.Namespace) -> None:
    check_model(args.model)
    validate.lens_folder(args.dir)
    from core.lenses.learned import import_lenses  # torch, tuned_lens

    folder = import_lenses(load_session(args.model), args.dir)
    print(json.dumps({"stored": str(folder)}))


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train-lens`` and ``import-lens``."""
    train = sub.add_parser("train-lens", help="train the tuned and affine lenses for a model (cached)")
    add_model(train)
    train.add_argument("--kl-seconds", type=float, default=default_of(TrainingConfig, "kl_seconds"),
                       help="wall-clock budget of KL refinement")
    train.add_argument("--tokens", type=int, default=default_of(TrainingConfig, "n_train_tokens"),
                       help="training tokens for the closed-form fit")
    add_format(train)
    train.set_defaults(func=cmd_train_lens)

    imp = sub.add_parser("import-lens", help="use a pretrained lens folder (params.safetensors + config.json)")
    add_model(imp)
    imp.add_argument("--dir", required=True)
    imp.set_defaults(func=cmd_import_lens)

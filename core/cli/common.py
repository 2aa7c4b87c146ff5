"""Shared pieces of the command line (``python -m core``): tables to stdout, sessions, progress bars.

Each analysis's subcommand lives in ``core/cli_<analysis>.py`` with ``register(subparsers)``; they use these.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import TYPE_CHECKING

from core import validate

if TYPE_CHECKING:  # pandas, torch and transformers load only once the input is checked
    import pandas as pd

    from core.model.session import ModelSession
    from core.validate import ModelDims

log = logging.getLogger("layerscope")


def print_frame(frame: "pd.DataFrame", fmt: str) -> None:
    if fmt == "csv":
        frame.to_csv(sys.stdout, index=False)
    else:
        json.dump(json.loads(frame.to_json(orient="records", force_ascii=False)), sys.stdout,
                  ensure_ascii=False, indent=1)
        sys.stdout.write("\n")


def quiet_transformers() -> None:
    """No transformers / hub progress bars or info logs on stderr (imports transformers: call it late)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def load_session(model: str) -> "ModelSession":
    from core.model.loading import ModelSpec
    from core.model.session import ModelSession

    quiet_transformers()
    return ModelSession.load(ModelSpec.parse(model), progress=lambda f, m: log.info("%s", m))


def check_model(model: str) -> "ModelDims | None":
    """``--model`` checked on disk (no weights read); -> its sizes from config.json when known here."""
    validate.model_source(model)
    return validate.model_dims(model)


def check_sizes(args: object, bounds: dict[str, tuple]) -> None:
    """Each ``--flag`` named in ``bounds`` that was given, e.g. {"top_k": (1, 100), "ratio": (0.0, 1.0, True)}:
    whole numbers for int bounds (hi None = unbounded); floats in [lo, hi], or (lo, hi] with a third True."""
    for name, (lo, hi, *lo_open) in bounds.items():
        value = getattr(args, name)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(lo, float):
            validate.number_range(flag, value, lo, hi, lo_open=bool(lo_open and lo_open[0]))
        else:
            validate.int_range(flag, value, lo, hi)


class Bar:
    """tqdm progress on stderr for long work (a core ``progress(fraction, message)`` callback)."""

    def __init__(self, label: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=1000, desc=label, file=sys.stderr, leave=False,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def __call__(self, fraction: float, message: str) -> None:
        self.bar.n = int(1000 * max(0.0, min(1.0, fraction)))
        self.bar.set_postfix_str(message[:60], refresh=True)

    def close(self) -> None:
        self.bar.close()

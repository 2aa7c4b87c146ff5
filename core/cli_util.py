"""Shared pieces of the command line (``python -m core``): tables to stdout, sessions, progress bars.

Each analysis's subcommand lives in ``core/cli_<analysis>.py`` with ``register(subparsers)``; they use these.
"""

from __future__ import annotations

import json
import logging
import sys

import pandas as pd

log = logging.getLogger("layerscope")


def print_frame(frame: pd.DataFrame, fmt: str) -> None:
    if fmt == "csv":
        frame.to_csv(sys.stdout, index=False)
    else:
        json.dump(json.loads(frame.to_json(orient="records", force_ascii=False)), sys.stdout,
                  ensure_ascii=False, indent=1)
        sys.stdout.write("\n")


def load_session(model: str):
    from core.models import ModelSpec
    from core.trace import ModelSession

    return ModelSession.load(ModelSpec.parse(model), progress=lambda f, m: log.info("%s", m))


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

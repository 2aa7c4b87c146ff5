"""Shared pieces of the command line (``python -m core``): defaults, tables to stdout, sessions, progress bars.

Each module of :mod:`core.cli` adds its subcommand(s) with ``register(subparsers)``; they use these.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from core import validate

if TYPE_CHECKING:  # pandas, torch and transformers load only once the input is checked
    import pandas as pd

    from core.model.session import ModelSession
    from core.validate import ModelDims

log = logging.getLogger("layerscope")
FORMATS = ("json", "csv")


def default_of(params: type, name: str) -> Any:
    """The default of field ``name`` of the dataclass ``params``: a flag's default is the analysis's own, never
    retyped here (so a flag left out gives the same parameters, and cache keys, as the page)."""
    for field in dataclasses.fields(params):
        if field.name == name:
            if field.default is not dataclasses.MISSING:
                return field.default
            if field.default_factory is not dataclasses.MISSING:
                return field.default_factory()
            raise ValueError(f"{params.__name__}.{name} has no default.")
    raise ValueError(f"{params.__name__} has no field {name!r}.")


class _ModelKey(argparse.Action):
    """Stores ``--model``, ``--dtype`` or ``--device`` (checked: a one-line usage error) and keeps ``args.model``
    the full model key (:func:`core.validate.join_precision`), whatever order the flags come in, so every
    subcommand's ``check_model(args.model)`` / ``load_session(args.model)`` sees the precision and device."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        try:
            if self.dest == "dtype":
                validate.dtype_name(values)
            elif self.dest == "device":
                validate.device_name(values)
        except ValueError as err:
            raise argparse.ArgumentError(self, str(err)) from None
        setattr(namespace, self.dest, values)
        namespace.model = validate.join_precision(namespace.model_text, namespace.dtype, namespace.device)


class _RemoteFlag(_ModelKey):
    """``--remote``: the same as ``--device ndif``."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        _ModelKey(self.option_strings, "device")(parser, namespace, validate.NDIF, option_string)


def add_model(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--model`` (default: the bundled model), ``--dtype`` and ``--device`` (defaults float32, cpu)."""
    parser.set_defaults(model=validate.BUNDLED)
    parser.add_argument("--model", dest="model_text", default=validate.BUNDLED, action=_ModelKey, help=help)
    parser.add_argument("--dtype", default=None, action=_ModelKey, metavar="|".join(validate.DTYPES),
                        help=f"precision of the weights (default {validate.DEFAULT_DTYPE}; auto: float32 on CPU, "
                             "bfloat16 on a GPU that supports it); statistics are always reduced in float32")
    parser.add_argument("--device", default=None, action=_ModelKey, metavar="|".join(validate.DEVICE_CHOICES),
                        help=f"where the model runs (default {validate.DEFAULT_DEVICE}; auto: cuda when present; "
                             "ndif: on NDIF through nnsight, as --remote)")
    parser.add_argument("--remote", dest="remote", nargs=0, action=_RemoteFlag,
                        help="run the model on NDIF (a hub id it serves; API key from NDIF_API_KEY); the `lens` "
                             "subcommand only")


def add_format(parser: argparse.ArgumentParser) -> None:
    """``--format json|csv`` of the printed table."""
    parser.add_argument("--format", choices=FORMATS, default=FORMATS[0])


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
    # after the checks: torch and the analysis load only for valid input
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def load_session(model: str) -> "ModelSession":
    from core.model.loading import ModelSpec  # after the checks: torch and the analysis load only for valid input
    from core.model.session import ModelSession

    quiet_transformers()
    spec = ModelSpec.parse(model).resolved()  # resolved: the session's identity names the real dtype and device
    return ModelSession.load(spec, progress=lambda f, m: log.info("%s", m))


def check_model(model: str, remote_ok: bool = False) -> "ModelDims | None":
    """``--model`` checked on disk (no weights read); -> its sizes from config.json when known here.

    A model on NDIF (``--remote``) is refused unless the subcommand runs there (``remote_ok``), and needs an API key
    (NDIF_API_KEY) before anything is loaded."""
    validate.model_source(model)
    if validate.precision(model)[1] == validate.NDIF:
        if not remote_ok:
            raise ValueError("--remote (NDIF) runs the `lens` subcommand only for now: this analysis reads the "
                             "model's weights or residual stream here; run it on a local model.")
        if not os.environ.get("NDIF_API_KEY", "").strip():
            raise ValueError("--remote needs an NDIF API key in the environment variable NDIF_API_KEY "
                             "(free at https://login.ndif.us).")
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
        from tqdm import tqdm  # after the checks: torch and the analysis load only for valid input

        self.bar = tqdm(total=1000, desc=label, file=sys.stderr, leave=False,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def __call__(self, fraction: float, message: str) -> None:
        self.bar.n = int(1000 * max(0.0, min(1.0, fraction)))
        self.bar.set_postfix_str(message[:60], refresh=True)

    def close(self) -> None:
        self.bar.close()

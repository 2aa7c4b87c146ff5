"""Hosted mode: what a server shared with collaborators lets its visitors do (torch-free, no Streamlit).

Off by default: a researcher running ``streamlit run app.py`` on their own machine may open any model, folder,
upload or explainer endpoint. A host turns it on with an environment variable or a ``[layerscope]`` table in
``.streamlit/secrets.toml``; environment variables win over the file::

    LAYERSCOPE_HOSTED=1                       # hosted = true
    LAYERSCOPE_MODELS=gpt2,EleutherAI/pythia-160m   # models = ["gpt2", ...]  (besides the bundled one)
    LAYERSCOPE_MAX_SAMPLES=200                # max_samples = 200   (texts, prompts, documents, neurons per run)
    LAYERSCOPE_MAX_PROMPT_TOKENS=512          # max_prompt_tokens   (the longest prompt analysed, hosted)
    LAYERSCOPE_MAX_JOBS=2                     # max_jobs = 2        (heavy jobs running at once; default: cores)
    LAYERSCOPE_JOB_MAX_AGE_S=3600             # job_max_age_s       (finished results kept unread this long)
    LAYERSCOPE_JOB_MAX_MB=512                 # job_max_mb          (finished results kept in memory, in all)

Hosted, a visitor can use only the bundled model and the listed ones (their random-init twins too, which need
no other files); local paths, uploads, lens folders, corpus folders, NDIF and explainer endpoints are off; every
sample size is capped at ``max_samples`` and every prompt at ``max_prompt_tokens``. The job limits apply in both modes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

ENV_PREFIX = "LAYERSCOPE_"
SECRETS_TABLE = "layerscope"
DEFAULT_MAX_SAMPLES = 200
DEFAULT_MAX_PROMPT_TOKENS = 512
DEFAULT_JOB_MAX_AGE_S = 3600.0
DEFAULT_JOB_MAX_MB = 512.0

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class HostSettings:
    """The server's settings for its visitors (see the module docstring for where each comes from)."""

    hosted: bool = False
    models: tuple[str, ...] = ()
    max_samples: int = DEFAULT_MAX_SAMPLES
    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS
    max_jobs: int = field(default_factory=_cores)
    job_max_age_s: float = DEFAULT_JOB_MAX_AGE_S
    job_max_mb: float = DEFAULT_JOB_MAX_MB

    def cap(self, limit: int | None) -> int | None:
        """A sample-size widget's upper bound: ``limit`` locally, at most ``max_samples`` hosted."""
        if not self.hosted:
            return limit
        return self.max_samples if limit is None else min(limit, self.max_samples)

    def model_allowed(self, source: str) -> bool:
        """Whether a visitor may open ``source`` (the model's source, without dtype/device/random prefix)."""
        from core.validate import BUNDLED  # torch-free

        return not self.hosted or source == BUNDLED or source in self.models

    def check_model(self, source: str) -> None:
        """ValueError (one sentence, what is allowed) when hosted and ``source`` is not an allowed model."""
        if not self.model_allowed(source):
            listed = ", ".join(self.models) if self.models else "none"
            raise ValueError(f"This server is hosted for collaborators: it opens only the bundled model and the "
                             f"models its host listed (listed: {listed}), not {source!r}.")

    def describe(self) -> str:
        """One line for the page: what a visitor can and cannot do here."""
        if not self.hosted:
            return "Local mode: every model, folder, upload and endpoint is open."
        listed = ", ".join(self.models) if self.models else "no others"
        return (f"Hosted server: the bundled model and {listed}; local paths, uploads, lens and corpus folders, NDIF "
                f"and explainer endpoints are off; sample sizes at most {self.max_samples:,}; prompts at most "
                f"{self.max_prompt_tokens:,} tokens; "
                f"{self.max_jobs} heavy job{'s' if self.max_jobs != 1 else ''} at a time.")


def _flag(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, not {raw!r}.")


def _number(name: str, raw: Any, kind: type, low: float) -> Any:
    try:
        value = kind(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else kind(str(raw).strip())
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a number, not {raw!r}.") from None
    if not math.isfinite(value) or value < low:
        raise ValueError(f"{name} must be a finite number of at least {low:g}, not {raw!r}.")
    return value


def _models(name: str, raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
    out = tuple(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))
    for item in out:
        if "\n" in item or len(item) > 200:
            raise ValueError(f"{name} holds a name that is not a model id: {item[:40]!r}.")
    return out


_FIELDS = {  # setting -> parser(name, raw)
    "hosted": _flag,
    "models": _models,
    "max_samples": lambda n, r: _number(n, r, int, 1),
    "max_prompt_tokens": lambda n, r: _number(n, r, int, 1),
    "max_jobs": lambda n, r: _number(n, r, int, 1),
    "job_max_age_s": lambda n, r: _number(n, r, float, 1),
    "job_max_mb": lambda n, r: _number(n, r, float, 1),
}


def settings(environ: Mapping[str, str] | None = None, secrets: Mapping[str, Any] | None = None) -> HostSettings:
    """The host's settings: ``secrets`` (the ``[layerscope]`` table of secrets.toml), then the environment on top.

    A value that cannot be read raises ValueError naming the setting (the server says so on every page rather
    than silently opening up)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for source, name_of in ((secrets or {}, lambda key: f"{SECRETS_TABLE}.{key} in secrets.toml"),
                            (environ, lambda key: ENV_PREFIX + key.upper())):
        for key, parse in _FIELDS.items():
            raw_key = key if source is not environ else ENV_PREFIX + key.upper()
            if raw_key in source:
                values[key] = parse(name_of(key), source[raw_key])
    return HostSettings(**values)

"""Depth's claims at a preset's section sizes, for RESULTS.md (``python -m core results``)."""

from __future__ import annotations

from core.analyses.depth.params import DEFAULT_SEED, PRESETS, SECTIONS
from core.analyses.depth.sections import run_section
from core.analyses.depth.verdicts import verdicts
from core.lenses.registry import build_lens
from core.model.session import ModelSession
from core.progress import Progress, no_progress, scaled


def claims(session: ModelSession, preset: str = "paper", progress: Progress = no_progress) -> list[dict]:
    """Every section at the preset's n with the logit lens (through the disk cache the page reads too), then the
    verdict rows."""
    sizes = PRESETS[preset]
    lens = build_lens(session, "logit")
    results = {}
    for i, section in enumerate(SECTIONS):
        results[section] = run_section(session, lens, section, sizes[section], DEFAULT_SEED,
                                       scaled(progress, i / len(SECTIONS), (i + 1) / len(SECTIONS)))
    return verdicts(results)

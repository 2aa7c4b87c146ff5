"""Top-k order: the verdict rows of a preset's run, for RESULTS.md (``python -m core results``).

The same cached runs as the page (:func:`core.analyses.topk.sections.run_section`,
:func:`core.analyses.topk.cached_runs.run_intervention`) with the preset's parameters
(:data:`core.analyses.topk.params.PRESETS`), so the page opened with that preset shows the same numbers.
"""

from __future__ import annotations

import logging

import pandas as pd

from core.analyses.topk.cached_runs import run_intervention
from core.analyses.topk.intervention import InterventionConfig
from core.analyses.topk.params import PRESETS, SECTIONS, preset_params
from core.analyses.topk.sections import run_section
from core.analyses.topk.verdicts import verdicts
from core.model.session import ModelSession
from core.progress import Progress, no_progress, scaled

log = logging.getLogger(__name__)
MODALITIES_SKIPPED = ("not run: needs ViT / Whisper weights and CIFAR-10 / LibriSpeech, none of which is bundled "
                      "(the page's tiny random-init demo shows the method, not a finding)")


def intervention_config(session: ModelSession, preset: str) -> InterventionConfig:
    """The page's intervention settings for this preset: the paper's constants scaled to the model's depth."""
    return InterventionConfig.for_depth(session.adapter.n_layers,
                                        max_pairs_per_text=int(PRESETS[preset]["intervention_pairs"]))


def claims(session: ModelSession, preset: str = "paper", progress: Progress = no_progress) -> list[dict]:
    """Run every text section and the intervention with ``preset``'s parameters (disk-cached) -> verdict rows
    (:func:`core.analyses.topk.verdicts.verdicts`). A section that cannot run (the baseline of a model that is
    already a random-init twin) is reported as "not run: <why>"; ViT / Whisper are never run here."""
    params = preset_params(preset)
    values = PRESETS[preset]
    results: dict[str, dict[str, pd.DataFrame]] = {}
    skipped = {"vit": MODALITIES_SKIPPED, "whisper": MODALITIES_SKIPPED}
    steps = len(SECTIONS) + 1
    for i, section in enumerate(SECTIONS):
        try:
            results[section] = run_section(session, section, params, scaled(progress, i / steps, (i + 1) / steps))
        except ValueError as err:  # e.g. a random-init model has no twin, or too few examples for a probe
            log.warning("top-k %s not run: %s", section, err)
            skipped[section] = f"not run: {err}"
    try:
        results["intervention"] = run_intervention(session, int(values["intervention_texts"]), params.seed,
                                                   scaled(progress, (steps - 1) / steps, 1.0),
                                                   config=intervention_config(session, preset))
    except ValueError as err:
        skipped["intervention"] = f"not run: {err}"
    progress(1.0, "top-k verdicts")
    return verdicts(results, skipped)

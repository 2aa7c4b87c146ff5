"""Neuron topics for RESULTS.md: real neurons vs the random baseline with a preset's settings, as verdict rows.

``python -m core results`` calls :func:`claims`; it runs the same disk-cached functions as the page (the bundled
Wikipedia sample, :func:`core.analyses.topics.cached_runs.compare_random`), so a page opened with the same preset
(mode, block, seed and sample size below) shows the stored run without a Run click, and the other way round.
"""

from __future__ import annotations

from core.analyses.topics.cached_runs import compare_random, prepare
from core.analyses.topics.params import DEFAULT_CORPUS, DEFAULT_MODE, MODES, PRESETS, default_block, preset_params
from core.analyses.topics.verdicts import compare_verdicts
from core.model.session import ModelSession
from core.progress import Progress, no_progress


def claims(session: ModelSession, preset: str = "paper", progress: Progress = no_progress) -> list[dict]:
    """Real vs random over a seeded sample of the MLP neurons (Hi-C) of the model's middle block, with the
    preset's parameters on the bundled corpus -> verdict rows (findings, then checks)."""
    params = preset_params(preset, DEFAULT_CORPUS)
    values = PRESETS[preset]
    block = default_block(session.adapter.n_layers)
    n = min(int(values["compare_n"]), session.adapter.d_mlp)
    ref = prepare(session, params, lambda f, m: progress(0.1 * f, m))
    frames = compare_random(session, ref, DEFAULT_MODE, block, n, int(values["seed"]), params,
                            lambda f, m: progress(0.1 + 0.9 * f, m))
    context = (f"; {MODES[DEFAULT_MODE].split(':')[0]} neurons of block {block} (1-based), seed {values['seed']}, "
               f"{preset} preset (τ = {params.tau}, θ = {params.thresholds}, κ = {params.size_limits}, min_freq "
               f"{params.min_freq}), reference corpus: the bundled Wikipedia sample")
    progress(1.0, "neuron topics judged")
    return compare_verdicts(frames, params.size_limits, params.k, context)

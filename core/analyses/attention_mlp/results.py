"""Attention -> MLP for RESULTS.md: the paper's claims judged on a preset's neurons of the bundled corpus.

``python -m core results`` calls :func:`claims`; it runs the same disk-cached steps the page's "Run every neuron"
uses, so a run here is reused by the page (and the other way round) with the same settings.
"""

from __future__ import annotations

from core.analyses.attention_mlp.params import DEFAULT_CORPUS
from core.analyses.attention_mlp.pipeline import choose_neurons, corpus_sample, preset_config, summarise
from core.analyses.attention_mlp.verdicts import verdicts
from core.data import corpus_texts, evaluation_texts
from core.model.session import ModelSession
from core.progress import Progress, no_progress


def claims(session: ModelSession, preset: str = "paper", progress: Progress = no_progress) -> list[dict]:
    """Verdict rows (:mod:`core.analyses.attention_mlp.verdicts`) for the ``preset``'s neurons ("quick" or "paper")
    scanned over the bundled Wikipedia corpus. The explainer is not run (it needs a network endpoint): its row says
    "not run"."""
    config = preset_config(preset, session.adapter.n_layers)
    texts = corpus_sample(evaluation_texts(corpus_texts(DEFAULT_CORPUS)), config.n_texts)
    neurons = choose_neurons(session, config.blocks, config.per_layer, config.control, config.seed)
    progress(0.0, f"{len(neurons)} neurons in blocks {config.blocks[0]}-{config.blocks[-1]}; {len(texts)} texts")
    summary = summarise(session, neurons, texts, config.scan, config.heads, progress)
    return verdicts(summary, scores=None, keep=config.scan.keep)

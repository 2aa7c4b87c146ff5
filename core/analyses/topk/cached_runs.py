"""Top-k order, sections 4 (intervention) and 7 (other modalities): the public entry points.

The maths lives in :mod:`core.analyses.topk.intervention` (implant the early token's state into the late
token, pre-hook on the next block) and :mod:`core.analyses.topk.modalities` (ViT class tokens and Whisper
decoders through the same saturation / ordering / probing definitions of :mod:`core.analyses.topk`).
Both results are stored in the disk cache, keyed by the model identity, the inputs, the settings and
:data:`VERSION`.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from core.analyses.topk.intervention import InterventionConfig, compute_intervention, intervention_texts
from core.analyses.topk.modalities import modality_is_cached, run_modality_cached
from core.cache import cached, is_cached
from core.model.session import ModelSession
from core.progress import Progress, no_progress

VERSION = "2"  # bump when the maths or the frames of either section change (2: residual layers)


def run_intervention(session: ModelSession, n_texts: int, seed: int, progress: Progress = no_progress,
                     config: InterventionConfig | None = None) -> dict[str, pd.DataFrame]:
    """The intervention on ``n_texts`` bundled Wikipedia evaluation texts -> frames:

    pairs   one row per (pair, evaluated offset): text, early_pos, late_pos, token, e, s_late, offset,
            implant_layer, new_sat, prediction_unchanged, success (layers: residual layers 1..L)
    offsets offset, share (of pairs with new saturation layer == implant layer and the prediction unchanged),
            n, sem, skipped (implant layer outside 1..L-1), half, half_max (the step line)
    texts   text, tokens, candidate_pairs, pairs, start
    config  the constants used (the paper's GPT2-XL layer constants scaled by L/48 unless given; min_sat_layer
            is the config's 0-based min_sat as a residual layer)
    """

    config = config or InterventionConfig.for_depth(session.adapter.n_layers)
    texts = intervention_texts(int(n_texts), int(seed))
    return cached("topk-intervention", lambda: compute_intervention(session, texts, int(seed), config, progress),
                  **_intervention_parts(session, n_texts, seed, config))


def _intervention_parts(session: ModelSession, n_texts: int, seed: int, config: InterventionConfig) -> dict:
    return {"model": session.identity(), "n_texts": int(n_texts), "seed": int(seed), "config": repr(config),
            "version": VERSION}


def intervention_is_cached(session: ModelSession, n_texts: int, seed: int,
                           config: InterventionConfig | None = None) -> bool:
    """Whether :func:`run_intervention` would read its result from the disk cache (a link reopens it)."""
    config = config or InterventionConfig.for_depth(session.adapter.n_layers)
    return is_cached("topk-intervention", **_intervention_parts(session, n_texts, seed, config))


def run_modality(kind: str, model: str | None, n: int, k: int, seed: int, progress: Progress = no_progress,
                 files: Sequence[tuple[str, bytes]] = (), transcripts: Sequence[str] = (),
                 n_tasks: int | None = None) -> dict[str, pd.DataFrame]:
    """Saturation, rank order, strict Kendall's tau and task probing for a ViT ("vit") or Whisper ("whisper").

    ``model`` None / blank = a tiny random-init demo; else a hub id or local folder (offline: it must be
    local). ``n`` generated inputs (seeded) are analysed together with the uploaded ``files`` (name, bytes:
    PNG/JPEG for ViT, WAV for Whisper, with one transcript per WAV in ``transcripts``). ``n_tasks`` probing
    tasks (None = the paper's: k for ViT, 4 for Whisper).
    See :func:`core.analyses.topk.modalities.compute_modality` for the frames.
    """

    return run_modality_cached(kind, model, int(n), int(k), int(seed), progress, tuple(files), tuple(transcripts),
                               VERSION, None if n_tasks is None else int(n_tasks))


def modality_cached(kind: str, model: str | None, n: int, k: int, seed: int,
                    files: Sequence[tuple[str, bytes]] = (), transcripts: Sequence[str] = (),
                    n_tasks: int | None = None) -> bool:
    """Whether :func:`run_modality` with these arguments would read its result from the disk cache."""
    return modality_is_cached(kind, model, int(n), int(k), int(seed), tuple(files), tuple(transcripts), VERSION,
                              None if n_tasks is None else int(n_tasks))

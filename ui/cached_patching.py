"""Cached runs of the Lens page's patching view: keyed by the model's spec key and plain parameters, the session
from :func:`ui.cached.get_session` (the one shared copy of each model)."""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from core.analyses.patching import (PatchingResult, PatchLensResult, PatchMetric, default_metric, patch_lens,
                                    patching_grid)
from ui.cached import check_length, get_session
from ui.job_panel import worker


def token_strings(spec_key: str, prompt: str) -> tuple[str, ...]:
    """The prompt's tokens (the tokenizer only: no forward pass); ValueError for an empty or too long prompt."""
    session = get_session(spec_key)
    ids = session.tokenize(prompt)
    check_length(ids.numel())
    return session.token_strings(ids)


@st.cache_data(max_entries=64, show_spinner="Finding the final top-1 tokens…")
def metric(spec_key: str, kind: str, clean_prompt: str, corrupt_prompt: str, token: str = "",
           other: str = "") -> tuple[PatchMetric, str]:
    """The metric of the typed token(s), an empty one the final top-1 of its run -> (metric, note)."""
    return default_metric(get_session(spec_key), kind, clean_prompt, corrupt_prompt, token or None, other or None)


@st.cache_data(max_entries=32, show_spinner=False)
def grid(spec_key: str, clean_prompt: str, corrupt_prompt: str, kind: str, token_id: int, other_id: int | None,
         site: str, layers: tuple[int, ...] | None = None, positions: tuple[int, ...] | None = None,
         token: str = "", other: str = "") -> PatchingResult:
    """The patching grid of the metric ``kind`` about ``token_id`` (minus ``other_id`` for a logit difference;
    ``token`` / ``other`` their display texts) over every layer x position by default, with a progress bar."""
    session = get_session(spec_key)
    patch_metric = PatchMetric(kind, token_id, other_id, token, other)
    for prompt in (clean_prompt, corrupt_prompt):
        check_length(session.tokenize(prompt).numel())
    bar = st.progress(0.0, text="Patching…") if get_script_run_ctx() is not None else None
    try:
        with worker("Patching"):  # one of the server's job workers (hosted servers bound them)
            return patching_grid(session, clean_prompt, corrupt_prompt, patch_metric, site=site,
                                 layers=None if layers is None else list(layers),
                                 positions=None if positions is None else list(positions),
                                 progress=(lambda f: bar.progress(min(1.0, f),
                                                                  text=f"Patching… {f:.0%} of the passes"))
                                 if bar is not None else None)
    finally:
        if bar is not None:
            bar.empty()


@st.cache_data(max_entries=32, show_spinner="Running the patched prompt under the lens…")
def lens(spec_key: str, source_prompt: str, target_prompt: str, source_cell: tuple[int, int],
         target_cell: tuple[int, int], top_k: int, targets: tuple[str, ...] = ()) -> PatchLensResult:
    """The patch lens (logit lens) of ``target_prompt`` with ``source_prompt``'s residual at ``source_cell``."""
    session = get_session(spec_key)
    for prompt in (source_prompt, target_prompt):
        check_length(session.tokenize(prompt).numel())
    with worker("Patch lens"):
        return patch_lens(session, source_prompt, target_prompt, source_cell, target_cell, top_k=top_k,
                          targets=list(targets) or None)

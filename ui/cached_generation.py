"""Cached generations and the lens over them (the generation view's ``st.cache_*``; sessions from
:func:`ui.cached.get_session`)."""

from __future__ import annotations

import streamlit as st
import torch

from core.analyses.generation import Generation, generate
from core.analyses.lens import LensResult, run_lens
from core.model.session import Trace
from ui.cached import check_length, get_session
from ui.job_panel import worker


@st.cache_data(max_entries=32, show_spinner="Generating…")
def generation(spec_key: str, prompt: str, max_new_tokens: int, sample: bool = False, seed: int = 0,
               temperature: float = 1.0, top_k: int = 0) -> Generation:
    """The continuation of ``prompt`` (greedy, or sampled with ``seed``), once per request and model. ValueError for
    sizes out of range (the app's token limit included) before any pass."""
    session = get_session(spec_key)
    check_length(session.tokenize(prompt).numel() + int(max_new_tokens))
    with worker("Generation"):  # one of the server's job workers (hosted servers bound them)
        return generate(session, prompt, int(max_new_tokens), sample=bool(sample), seed=int(seed),
                        temperature=float(temperature), top_k=int(top_k))


@st.cache_resource(max_entries=4, show_spinner=False)
def generation_trace(spec_key: str, ids: tuple[int, ...]) -> Trace:
    """The residual trace of prompt + continuation, read from the ids as generated (never re-tokenized text)."""
    return get_session(spec_key).trace(torch.tensor(ids, dtype=torch.long))


@st.cache_data(max_entries=48, show_spinner="Reading the lens over prompt and continuation…")
def generation_lens(spec_key: str, ids: tuple[int, ...], top_k: int, layers: tuple[int, ...],
                    positions: tuple[int, ...]) -> LensResult:
    """The logit lens over the generated sequence at ``layers`` x ``positions`` (each position's target: its final
    top-1)."""
    session = get_session(spec_key)
    return run_lens(session, "", trace=generation_trace(spec_key, ids), top_k=int(top_k), layers=list(layers),
                    positions=list(positions))

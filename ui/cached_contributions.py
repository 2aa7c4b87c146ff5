"""Cached results of the Lens page's Contributions and Attention views, keyed by the model's spec key and plain
parameters (the session comes from :func:`ui.cached.get_session`). Results are frames and plain values only."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.analyses.attention_heads import attention_at
from core.analyses.contributions import contribution_graph, decompose, lens_logits, node_tokens
from ui.cached import check_length, get_session


def _session(spec_key: str, prompt: str):
    session = get_session(spec_key)
    check_length(session.tokenize(prompt).numel())
    return session


@st.cache_data(max_entries=32, show_spinner=False)
def final_top(spec_key: str, prompt: str, position: int, k: int = 10) -> list[tuple[int, str]]:
    """The model's final top-``k`` (token id, token) at ``position``: the target picker's choices, top-1 first."""
    session = _session(spec_key, prompt)
    from ui.cached import lens_trace  # the page's trace of this prompt (already run by the Lens view)

    trace = lens_trace(spec_key, prompt)
    logits = lens_logits(session.adapter, trace.resid[-1, position])
    ids = logits.topk(k).indices.tolist()
    vocab = session.vocab_strings()
    return [(int(i), vocab[int(i)]) for i in ids]


@st.cache_data(max_entries=48, show_spinner="Decomposing the residual…")
def decomposition(spec_key: str, prompt: str, layer: int, position: int, target_id: int,
                  other_id: int | None = None) -> tuple[pd.DataFrame, dict]:
    """(the parts frame, {token, target, other, logit, logit_other, scale, residual_error, note})."""
    d = decompose(_session(spec_key, prompt), prompt, layer, position, target=target_id, other=other_id)
    info = dict(token=d.token, target=d.target, other=d.other, logit=d.logit, logit_other=d.logit_other,
                scale=d.scale, residual_error=d.residual_error, note=d.note)
    return d.frame, info


@st.cache_data(max_entries=24, show_spinner="Building the contribution graph…")
def graph(spec_key: str, prompt: str, layer: int, position: int, threshold: float
          ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(nodes, edges, {tokens, n_candidates, method}) of the graph into (``layer``, ``position``)."""
    g = contribution_graph(_session(spec_key, prompt), prompt, target_position=position, layer=layer,
                           threshold=threshold)
    return g.nodes, g.edges, dict(tokens=g.tokens, n_candidates=g.n_candidates, method=g.method)


@st.cache_data(max_entries=48, show_spinner="Reading the node…")
def node_top(spec_key: str, prompt: str, node: tuple[int, int, str], readout_layer: int, k: int = 10
             ) -> pd.DataFrame:
    """The node's top promoted / suppressed tokens through the frozen final norm of ``readout_layer``."""
    return node_tokens(_session(spec_key, prompt), prompt, node, readout_layer, k)


@st.cache_data(max_entries=48, show_spinner="Reading the attention…")
def attention(spec_key: str, prompt: str, block: int, position: int, target_id: int
              ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(per head x source frame, per head frame, {target, note}) of block ``block`` at ``position``."""
    view = attention_at(_session(spec_key, prompt), prompt, block, position, target=target_id)
    return view.frame, view.heads, dict(target=view.target, note=view.note, tokens=view.tokens)

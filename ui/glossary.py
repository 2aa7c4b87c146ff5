"""Symbols the pages use, each defined once; a page shows the ones it uses in a "Symbols" popover."""

from __future__ import annotations

from typing import Iterable, Mapping

import streamlit as st

SYMBOLS: dict[str, str] = {
    "l": "a residual layer: 0 = the embeddings, l = the residual stream after block l (every page, chart and CSV)",
    "L": "the number of blocks; layer L is the last residual, read by the model's own head",
    "y*": "the model's own top-1 next token at that position (from its final logits, not the text's next token)",
    "ℓ*(k)": "for one example, the first layer where the rank of the model's final prediction is ≤ k",
    "s_i": "saturation layer of rank i+1 (i = 0 for the top-1): the earliest layer from which rank slot i+1 holds "
           "the final rank-(i+1) token at every later layer",
    "s_0": "the top-1's saturation layer (s_i with i = 0)",
    "k*": "for one position, the number of leading ranks that settle before the last layer (trailing ranks that "
          "settle only at the last layer are dropped); Kendall's τ needs k* ≥ 3",
    "τ (Kendall)": "strict Kendall's τ between rank order and saturation order: (concordant − discordant) / pairs, "
                   "ties counted as discordant; 1 = ranks settle strictly in order",
    "τ (pool size)": "Neuron topics: how many top (or bottom) tokens of a neuron's vocabulary distribution form its "
                     "word pool (paper: 900)",
    "β": "a neuron's (or residual dimension's) distribution over the vocabulary, read through the unembedding",
    "Hi-C / Hi-I": "Neuron topics, MLP hidden neurons: the neuron's output direction run through the later blocks "
                   "(C, complete) or read directly (I, isolated)",
    "Lo-C / Lo-I": "Neuron topics, residual-stream dimensions: a unit vector run through the blocks from this one "
                   "on (C) or through this block only (I)",
    "NPMI": "normalised pointwise mutual information of two words over sliding windows of the reference corpus, "
            "from −1 (never together) to 1 (always together)",
    "θ_l, θ_u": "Neuron topics: the NPMI band an edge must fall in to join the star graph (lower, upper)",
    "κ_l, κ_u": "Neuron topics: a word set's size limits (lower: minimum size and minimum degree; upper: largest)",
    "p@1": "precision@1: the share of examples whose readout's top-1 is y*",
    "CI": "95 % confidence interval (Wilson for a proportion, percentile bootstrap for a mean)",
    "n": "the number of independent examples a figure or verdict is computed from",
}


def glossary(symbols: Iterable[str], label: str = "Symbols", extra: Mapping[str, str] = {}) -> None:
    """A popover defining ``symbols`` (keys of :data:`SYMBOLS` or of ``extra``, a page's own terms), in order."""
    defined = {**SYMBOLS, **extra}
    with st.popover(label, icon=":material/menu_book:"):
        st.markdown("\n".join(f"- **{_escape(s)}**: {_escape(defined[s])}" for s in symbols))


def _escape(text: str) -> str:
    """Stars and underscores in symbols (y*, k*, s_0) shown literally, never as markdown emphasis."""
    return text.replace("*", "\\*").replace("_", "\\_")

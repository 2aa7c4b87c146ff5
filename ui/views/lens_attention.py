"""The Lens page's Attention view: every head of one block at the selected position (attention or value-weighted
rows, head x source position) and each head's direct logit attribution."""

from __future__ import annotations

import streamlit as st

from core.snippets import attention_snippet
from ui import cached_contributions as cc
from ui.cached import get_session
from ui.charts import lens_contributions as charts
from ui.downloads import chart_downloads, table_downloads
from ui.format import show_token
from ui.page import stop_page
from ui.snippets import show_snippet
from ui.state import bound

URL_KEYS = ["attn_layer", "attn_weighted", "attn_target"]


def attention_view(spec_key: str, prompt: str, cell: tuple[int, int]) -> None:
    """Heads of a block (default: the cell's, block >= 1) at the cell's position."""
    position = int(cell[1])
    n_layers = get_session(spec_key).adapter.n_layers
    blocks = list(range(1, n_layers + 1))
    c1, c2 = st.columns(2)
    block = bound(c1.selectbox, "attn_layer", max(1, int(cell[0])), "Block", parse=int, options=blocks,
                  help="Block l writes residual layer l (1-based); its attention reads the stream after block l−1.")
    try:
        choices = cc.final_top(spec_key, prompt, position)
    except (ValueError, MemoryError) as err:
        stop_page(str(err))
    ids, names = [i for i, _ in choices], dict(choices)
    target = bound(c2.selectbox, "attn_target", ids[0], "DLA target", parse=int, options=ids,
                   format_func=lambda i: show_token(names[i]), help="The model's final top-10 at this position.")
    weighted = bound(st.toggle, "attn_weighted", False, "Value-weighted (α·‖v W_O‖)",
                     parse=lambda v: v in ("True", "1", "true"),
                     help="Weigh each attention weight by the norm of what that source writes through the head "
                          "(Kobayashi et al. 2020).")
    try:
        frame, heads, info = cc.attention(spec_key, prompt, int(block), position, int(target))
    except (ValueError, MemoryError) as err:
        stop_page(str(err))
    token = info["tokens"][position]
    value = "value_weighted" if weighted else "attention"
    st.markdown(f"**Block {block}'s heads at position {position} ({show_token(token)})**")
    heat = charts.attention_heatmap(frame, value)
    st.altair_chart(heat, width="content")
    st.caption("Rows: heads; columns: the source positions this position can attend to. "
               + ("Value-weighted: α·‖v_j W_O^h‖, what each source actually adds through the head."
                  if weighted else "Attention weights α (each row sums to 1)."))
    chart_downloads(heat, frame, f"attention_block{block}_pos{position}", key="dl_attn_heat")
    st.markdown(f"**Each head's direct logit attribution to {show_token(info['target'])}**")
    bars = charts.head_dla_bars(heads)
    st.altair_chart(bars, width="content")
    st.caption(info["note"])
    chart_downloads(bars, heads, f"attention_heads_block{block}_pos{position}", key="dl_attn_heads")
    with st.expander("Tables"):
        st.dataframe(heads, hide_index=True, width="stretch")
        table_downloads(heads, f"attention_heads_block{block}_pos{position}", key="dl_attn_heads_table")
        st.dataframe(frame, hide_index=True, width="stretch", height=240)
        table_downloads(frame, f"attention_block{block}_pos{position}", key="dl_attn_table")
    show_snippet(attention_snippet(spec_key, prompt, int(block), position, int(target)), key="attention")

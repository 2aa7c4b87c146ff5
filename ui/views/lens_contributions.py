"""The Lens page's Contributions view: what wrote the selected cell's residual (direct logit attribution by part,
per head on demand) and the contribution graph into it, with a node's promoted and suppressed tokens."""

from __future__ import annotations

import streamlit as st

from core.analyses.contributions import DEFAULT_THRESHOLD
from core.layers import after_block
from core.snippets import contributions_snippet
from ui import cached_contributions as cc
from ui.cached import get_session
from ui.charts import lens_contributions as charts
from ui.downloads import chart_downloads, table_downloads
from ui.format import show_token
from ui.page import stop_page
from ui.snippets import show_snippet
from ui.state import bound, set_value

URL_KEYS = ["contrib_target", "contrib_other", "contrib_heads", "contrib_value", "contrib_threshold", "contrib_node"]
NONE = -1


def target_picker(spec_key: str, prompt: str, position: int) -> tuple[int, int | None]:
    """Target and (optional) second token among the final top-10 at the position; the top-1 by default."""
    choices = cc.final_top(spec_key, prompt, position)
    ids = [i for i, _ in choices]
    names = dict(choices)
    c1, c2 = st.columns(2)
    target = bound(c1.selectbox, "contrib_target", ids[0], "Target token", parse=int, options=ids,
                   format_func=lambda i: show_token(names[i]),
                   help="The model's final top-10 at this position (top-1 first).")
    other = bound(c2.selectbox, "contrib_other", NONE, "Compare with (logit difference)", parse=int,
                  options=[NONE] + [i for i in ids if i != target],
                  format_func=lambda i: "— none —" if i == NONE else show_token(names[i]))
    return int(target), None if other == NONE else int(other)


def contributions_view(spec_key: str, prompt: str, cell: tuple[int, int]) -> None:
    """Decomposition and DLA of the cell (layer, position) chosen on the Lens heatmap, then the contribution graph."""
    layer, position = int(cell[0]), int(cell[1])
    session = get_session(spec_key)
    n_layers = session.adapter.n_layers
    try:
        target, other = target_picker(spec_key, prompt, position)
        frame, info = cc.decomposition(spec_key, prompt, layer, position, target, other)
    except (ValueError, MemoryError) as err:
        stop_page(str(err))
    st.markdown(f"**The residual {after_block(layer)} at position {position} ({show_token(info['token'])}), "
                f"read as {show_token(info['target'])}: logit {info['logit']:.3f}**")
    heads = bound(st.toggle, "contrib_heads", False, "Split attention into heads",
                  parse=lambda v: v in ("True", "1", "true"))
    values = {"dla": f"DLA to {show_token(info['target'])}"}
    if other is not None:
        values.update(dla_other=f"DLA to {show_token(info['other'])}",
                      dla_diff=f"logit difference {show_token(info['target'])} − {show_token(info['other'])}")
    value = bound(st.radio, "contrib_value", "dla", "Show", options=list(values), format_func=values.get,
                  horizontal=True) if other is not None else "dla"
    parts = frame[frame["fine" if heads else "whole"]].reset_index(drop=True)
    if heads and len(parts) > 80:
        st.caption(f"{len(parts)} parts: the 60 largest by |{values[value]}| are drawn (the table has all).")
        shown = parts.loc[parts[value].abs().sort_values(ascending=False).index[:60]].sort_index()
    else:
        shown = parts
    chart = charts.dla_bars(shown, value, values[value])
    st.altair_chart(chart, width="content")
    st.caption(f"{info['note']} Frozen scale here: {info['scale']:.4g}. The parts sum to the cell's logit "
               f"({info['logit']:.3f}; at the last layer the model's own logit); the residual is rebuilt from them "
               f"to {info['residual_error']:.1e} (relative). Blocks are 1-based: block l writes layer l.")
    chart_downloads(chart, shown, f"contributions_layer{layer}_pos{position}", key="dl_contrib_bars")
    with st.expander("Parts table"):
        st.dataframe(parts, hide_index=True, width="stretch", height=260)
        table_downloads(parts, f"contributions_layer{layer}_pos{position}", key="dl_contrib_table")
    threshold = graph_section(spec_key, prompt, max(1, layer), position, n_layers)
    show_snippet(contributions_snippet(spec_key, prompt, layer, position, target, other, threshold),
                 key="contributions")


def _node_clicked() -> None:
    """A click on a graph node picks it (read before the rerun, so the picker shows it)."""
    points = st.session_state.get("contrib_graph", {}).get("selection", {}).get(charts.NODE_SELECTION, [])
    if points and "label" in points[0]:
        st.session_state["_contrib_clicked"] = points[0]["label"]


def graph_section(spec_key: str, prompt: str, layer: int, position: int, n_layers: int) -> float:
    """The contribution graph into (layer, position), its threshold, and a node picker with the node's tokens;
    -> the threshold."""
    st.subheader("Contribution graph")
    threshold = bound(st.slider, "contrib_threshold", DEFAULT_THRESHOLD, "Edge threshold", parse=float,
                      min_value=0.0, max_value=0.5, step=0.01,
                      help="Keep the routes whose edges carry at least this share of a node's incoming weight.")
    try:
        nodes, edges, info = cc.graph(spec_key, prompt, layer, position, float(threshold))
    except (ValueError, MemoryError) as err:
        st.error(str(err))
        return float(threshold)
    labels = list(nodes.label)
    target_label = nodes[(nodes.layer == layer) & (nodes.position == position) & (nodes.kind == "resid")].label
    default = target_label.iloc[0] if len(target_label) else labels[-1]
    clicked = st.session_state.pop("_contrib_clicked", None)
    if clicked in labels:
        set_value("contrib_node", clicked)
    picked = bound(st.selectbox, "contrib_node", default, "Node", options=labels,
                   help="Or click a node in the graph. resid = the stream after block l (emb = embeddings), "
                        "mid = after block l's attention, mlp = block l's MLP output.")
    row = nodes[nodes.label == picked].iloc[0]
    node = (int(row.layer), int(row.position), str(row.kind))
    chart = charts.graph_chart(nodes, edges, info["tokens"], layer, selected=node)
    event = st.altair_chart(chart, width="content", on_select=_node_clicked, key="contrib_graph")
    del event  # read in the callback, before the rerun it triggers
    st.caption(f"{len(edges)} of {info['n_candidates']} edges kept at threshold {threshold:g}, traced back from "
               f"the residual {after_block(layer)} at position {position}. Method: {info['method']} Lines: width and "
               "opacity ∝ weight.")
    chart_downloads(chart, edges, f"contribution_graph_layer{layer}_pos{position}", key="dl_contrib_graph")
    try:
        top = cc.node_top(spec_key, prompt, node, layer)
    except (ValueError, MemoryError) as err:
        st.error(str(err))
        return float(threshold)
    st.markdown(f"**{picked}: tokens it promotes and suppresses** (through the final norm frozen at the residual "
                f"{after_block(layer)} at position {node[1]})")
    c1, c2 = st.columns(2)
    for column, direction in ((c1, "promoted"), (c2, "suppressed")):
        sub = top[top.direction == direction][["rank", "token", "logit"]]
        column.dataframe(sub.assign(token=sub.token.map(show_token)), hide_index=True, width="stretch")
    table_downloads(top, f"graph_node_{picked}", key="dl_contrib_node")
    return float(threshold)

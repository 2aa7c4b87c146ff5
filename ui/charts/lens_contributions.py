"""Altair builders of the Lens page's Contributions and Attention views (no Streamlit calls): tidy frame in, chart
out."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from ui.format import show_token

POSITIVE, NEGATIVE = "#0072B2", "#D55E00"  # Okabe-Ito blue / vermillion: promotes / suppresses
NODE_COLOURS = {"resid": "#999999", "mid": "#009E73", "mlp": "#E69F00"}
NODE_SELECTION = "node"
"""Name of the graph's click selection (a click on a node picks it)."""
NODE_OFFSETS = {"resid": (0.0, 0.0), "mid": (0.0, -0.5), "mlp": (0.28, -0.25)}
"""Where a node sits relative to (position, layer): resid on the layer row, mid halfway below (after the block's
attention), the MLP's output beside it."""


def dla_bars(parts: pd.DataFrame, value: str = "dla", title: str = "direct logit attribution") -> alt.Chart:
    """Horizontal bars of each part's contribution (rows in the frame's order: embeddings, blocks, constant)."""
    frame = parts.assign(sign=np.where(parts[value] >= 0, "promotes", "suppresses"),
                         block_label=parts.block.astype("string").fillna("—"))
    order = list(frame.part)
    return alt.Chart(frame).mark_bar().encode(
        y=alt.Y("part:N", sort=order, title=None,
                axis=alt.Axis(labelLimit=220, labelOverlap=False, labelFontSize=10 if len(frame) > 40 else 11)),
        x=alt.X(f"{value}:Q", title=title),
        color=alt.Color("sign:N", scale=alt.Scale(domain=["promotes", "suppresses"], range=[POSITIVE, NEGATIVE]),
                        legend=alt.Legend(title=None, orient="bottom")),
        tooltip=["part", "kind", alt.Tooltip("block_label:N", title="block"), alt.Tooltip(f"{value}:Q", format=".4f"),
                 alt.Tooltip("norm:Q", format=".2f", title="‖part‖")],
    ).properties(height=alt.Step(13 if len(frame) > 40 else 16), width=520)  # every part labelled


def _node_xy(layer, position, kind) -> tuple[float, float]:
    dx, dy = NODE_OFFSETS[kind]
    return float(position) + dx, float(layer) + dy


def graph_chart(nodes: pd.DataFrame, edges: pd.DataFrame, tokens: tuple[str, ...], n_layers: int,
                selected: tuple[int, int, str] | None = None) -> alt.LayerChart:
    """The contribution graph: x = position (labelled with its token), y = layer; edges as lines whose width and
    opacity grow with their weight; nodes coloured by kind (resid / mid / mlp); ``selected`` node ringed."""
    xy = [(*_node_xy(r.source_layer, r.source_position, r.source_kind),
           *_node_xy(r.target_layer, r.target_position, r.target_kind)) for r in edges.itertuples()]
    lines = pd.DataFrame({
        "edge": np.repeat(np.arange(len(edges)), 2),
        "x": [v for x0, y0, x1, y1 in xy for v in (x0, x1)],
        "y": [v for x0, y0, x1, y1 in xy for v in (y0, y1)],
        "weight": np.repeat(edges.weight.to_numpy(), 2),
        "kind": np.repeat(edges.kind.to_numpy(), 2),
        "end": np.tile([0, 1], len(edges)),
    })
    points = nodes.assign(x=[_node_xy(r.layer, r.position, r.kind)[0] for r in nodes.itertuples()],
                          y=[_node_xy(r.layer, r.position, r.kind)[1] for r in nodes.itertuples()],
                          shown=nodes.token.map(show_token),
                          chosen=[selected == (int(r.layer), int(r.position), r.kind) for r in nodes.itertuples()])
    n_pos = len(tokens)
    labels = [f"{p} {show_token(t)[:14]}".replace("\\", "\\\\").replace("'", "\\'") for p, t in enumerate(tokens)]
    label_expr = " : ".join(f"datum.value == {p} ? '{text}'" for p, text in enumerate(labels)) + " : ''"
    x = alt.X("x:Q", scale=alt.Scale(domain=[-0.5, n_pos - 0.5], nice=False), title="position",
              axis=alt.Axis(values=list(range(n_pos)), labelExpr=label_expr, labelAngle=-45, grid=False))
    y = alt.Y("y:Q", scale=alt.Scale(domain=[-0.7, n_layers + 0.3], nice=False), title="layer",
              axis=alt.Axis(values=list(range(n_layers + 1)), labelExpr="datum.value == 0 ? 'emb' : datum.value"))
    edge_layer = alt.Chart(lines).mark_line(color="#56B4E9").encode(
        x=x, y=y, detail="edge:N", order="end:O",
        strokeWidth=alt.StrokeWidth("weight:Q", scale=alt.Scale(domain=[0, 1], range=[0.3, 6]), legend=None),
        opacity=alt.Opacity("weight:Q", scale=alt.Scale(domain=[0, 1], range=[0.25, 0.95]), legend=None),
        tooltip=["kind:N", alt.Tooltip("weight:Q", format=".3f")])
    node_layer = alt.Chart(points).mark_circle(size=60, opacity=1).encode(
        x=x, y=y,
        color=alt.Color("kind:N", scale=alt.Scale(domain=list(NODE_COLOURS), range=list(NODE_COLOURS.values())),
                        legend=alt.Legend(title="node", orient="bottom")),
        tooltip=["label:N", "shown:N"]).add_params(alt.selection_point(name=NODE_SELECTION, fields=["label"],
                                                                       on="click"))
    ring = alt.Chart(points[points.chosen]).mark_point(size=260, color="black", strokeWidth=2).encode(x=x, y=y)
    height = max(260, min(900, 26 * (n_layers + 1)))
    return alt.layer(edge_layer, node_layer, ring).properties(width=max(480, min(1100, 110 * n_pos)), height=height)


def attention_heatmap(frame: pd.DataFrame, value: str = "attention") -> alt.Chart:
    """Head x source position, coloured by ``value`` (attention weight or value-weighted norm)."""
    data = frame.assign(source=[f"{p} {show_token(t)}" for p, t in zip(frame.source_position, frame.source_token)])
    order = list(dict.fromkeys(data.sort_values("source_position").source))
    title = {"attention": "attention α", "value_weighted": "α·‖v W_O‖"}.get(value, value)
    return alt.Chart(data).mark_rect().encode(
        x=alt.X("source:N", sort=order, title="source position",
                axis=alt.Axis(labelAngle=-45, labelLimit=110, labelOverlap=False)),
        y=alt.Y("head:O", title="head", axis=alt.Axis(labelOverlap=False)),
        color=alt.Color(f"{value}:Q", scale=alt.Scale(scheme="blues"), title=title),
        tooltip=["head:O", "source:N", alt.Tooltip("attention:Q", format=".3f"),
                 alt.Tooltip("value_weighted:Q", format=".3f", title="α·‖v W_O‖"),
                 alt.Tooltip("value_weighted_share:Q", format=".3f", title="value-weighted share")],
    ).properties(width=max(320, min(1000, 44 * len(order))), height=alt.Step(24))


def head_dla_bars(heads: pd.DataFrame) -> alt.Chart:
    """Each head's direct logit attribution, with its write norm in the tooltip."""
    frame = heads.assign(sign=np.where(heads.dla >= 0, "promotes", "suppresses"))
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("label:N", sort=list(frame.label), title="head",
                axis=alt.Axis(labelAngle=-45 if len(frame) > 12 else 0, labelOverlap=False)),
        y=alt.Y("dla:Q", title="direct logit attribution"),
        color=alt.Color("sign:N", scale=alt.Scale(domain=["promotes", "suppresses"], range=[POSITIVE, NEGATIVE]),
                        legend=None),
        tooltip=["label:N", alt.Tooltip("dla:Q", format=".4f"), alt.Tooltip("write_norm:Q", format=".2f"),
                 "top_source:Q", alt.Tooltip("top_attention:Q", format=".3f")],
    ).properties(width=max(320, 52 * len(frame)), height=220)


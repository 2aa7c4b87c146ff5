"""Altair charts of the Neuron topics page (no Streamlit calls): the NPMI graph and real vs random ticks."""

from __future__ import annotations

import altair as alt
import pandas as pd

GRAPH_EDGES = 1500
_PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d", "#ff9da6"]
_layouts: dict[int, tuple[pd.DataFrame, pd.DataFrame]] = {}


def graph_frames(edges: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Non-empty edge frame of one polarity -> (nodes with x, y, set, degree; edges with endpoint positions).

    The spring layout takes about a second, so the last few are remembered (keyed by the edges' content)."""
    edges = edges.head(GRAPH_EDGES)
    key = int(pd.util.hash_pandas_object(edges, index=False).sum())
    if key not in _layouts:
        if len(_layouts) >= 8:
            _layouts.pop(next(iter(_layouts)))
        _layouts[key] = _layout(edges)
    return _layouts[key]


def _layout(edges: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    import networkx as nx  # only the graph needs it, and only once a unit has edges

    graph = nx.Graph()
    graph.add_weighted_edges_from(zip(edges.a, edges.b, edges.npmi))
    pos = nx.spring_layout(graph, seed=0, weight="weight") if len(graph) else {}
    set_of = dict(zip(edges.a, edges.set_a)) | dict(zip(edges.b, edges.set_b))
    nodes = pd.DataFrame([{"word": w, "x": float(xy[0]), "y": float(xy[1]), "degree": graph.degree(w),
                           "set": f"set {set_of[w]}" if set_of[w] else "no set"} for w, xy in pos.items()])
    lines = edges.assign(x=edges.a.map(lambda w: pos[w][0]), y=edges.a.map(lambda w: pos[w][1]),
                         x2=edges.b.map(lambda w: pos[w][0]), y2=edges.b.map(lambda w: pos[w][1]))
    return nodes, lines


def graph_chart(nodes: pd.DataFrame, lines: pd.DataFrame) -> alt.LayerChart:
    """Spring layout of the NPMI graph: edges as lines (opacity = NPMI), words as points coloured by set."""
    axis = dict(axis=None)
    zoom = alt.selection_interval(bind="scales")
    edge = alt.Chart(lines).mark_rule(strokeWidth=0.6).encode(
        x=alt.X("x:Q", **axis), y=alt.Y("y:Q", **axis), x2="x2:Q", y2="y2:Q",
        opacity=alt.Opacity("npmi:Q", scale=alt.Scale(range=[0.08, 0.6]), legend=None), color=alt.value("#888"),
        tooltip=["a", "b", alt.Tooltip("npmi:Q", format=".3f")])
    labels = sorted(set(nodes.set) - {"no set"}, key=lambda s: int(s.split()[1])) + ["no set"]
    colours = alt.Scale(domain=labels, range=[_PALETTE[i % len(_PALETTE)] for i in range(len(labels) - 1)]
                        + ["#c8c8c8"])
    point = alt.Chart(nodes).mark_circle(size=60).encode(
        x="x:Q", y="y:Q", color=alt.Color("set:N", title="star set", scale=colours, sort=labels),
        tooltip=["word", "set", alt.Tooltip("degree:Q", title="edges shown")])
    label = alt.Chart(nodes).mark_text(dy=-8, fontSize=10).encode(x="x:Q", y="y:Q", text="word:N",
                                                                   color=alt.Color("set:N", legend=None, scale=colours))
    return alt.layer(edge, point, label).add_params(zoom).properties(width=760, height=520)


def comparison_chart(rows: pd.DataFrame, topics: pd.DataFrame) -> alt.HConcatChart:
    """Word sets per pool and topic coherence, real vs random (one tick per pool / topic)."""
    sets = alt.Chart(rows).mark_tick(thickness=2).encode(
        x=alt.X("n_sets:Q", title="word sets per pool"), y=alt.Y("source:N", title=None),
        color=alt.Color("source:N", legend=None),
        tooltip=["unit:Q", "source:N", "polarity:N", "n_sets:Q", "pool_size:Q"],
    ).properties(width=320, height=90)
    coherent = alt.Chart(topics.dropna(subset=["coherence"])).mark_tick(thickness=2).encode(
        x=alt.X("coherence:Q", title="topic coherence (mean pairwise NPMI)"), y=alt.Y("source:N", title=None),
        color=alt.Color("source:N", legend=None),
        tooltip=["unit:Q", "source:N", "polarity:N", alt.Tooltip("coherence:Q", format=".3f"), "topic:N"],
    ).properties(width=320, height=90)
    return alt.hconcat(sets, coherent)

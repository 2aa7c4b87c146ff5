"""Altair charts of the Neuron topics page (no Streamlit calls): the pruned NPMI graph and real vs random.

Colours are the Okabe-Ito palette (colour-blind safe); star sets beyond its seven colours also differ in shape.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

GRAPH_EDGES = 150  # edges drawn at most: more is a hairball (the rest are in the edges table)
PER_NODE = 2  # strongest edges kept per word (after the within-set ones)
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442"]
SHAPES = ["circle", "square", "triangle-up", "diamond", "cross"]
NO_SET = "#BBBBBB"
SOURCE_COLOURS = alt.Scale(domain=["real", "random"], range=["#0072B2", "#E69F00"])
_layouts: dict[int, tuple[pd.DataFrame, pd.DataFrame]] = {}


def prune_edges(edges: pd.DataFrame, cap: int = GRAPH_EDGES, per_node: int = PER_NODE) -> pd.DataFrame:
    """[edges] of one polarity (a, b, npmi, set_a, set_b) -> at most ``cap`` of them, in tiers: each set word's
    strongest edge inside its set, each word's strongest edge, then the other within-set edges and each word's
    ``per_node`` strongest; heaviest first within a tier."""
    if edges.empty:
        return edges
    e = edges.reset_index(drop=True)
    within = ((e.set_a == e.set_b) & (e.set_a > 0)).to_numpy()
    ends = pd.DataFrame({"edge": np.r_[e.index, e.index], "node": np.r_[e.a, e.b], "npmi": np.r_[e.npmi, e.npmi],
                         "within": np.r_[within, within]})
    ends = ends.sort_values("npmi", ascending=False, kind="stable")
    ends["rank"] = ends.groupby("node").cumcount()
    ends["rank_within"] = ends.where(ends.within).groupby("node").cumcount()
    ends.loc[~ends.within, "rank_within"] = np.inf
    tier = np.select([ends.rank_within == 0, ends["rank"] == 0, ends.within | (ends["rank"] < per_node)], [0, 1, 2], 3)
    best = pd.Series(tier, index=ends.index).groupby(ends.edge).min()  # [edges]
    e = e.assign(tier=best.reindex(e.index).to_numpy())
    kept = e[e.tier < 3].sort_values(["tier", "npmi"], ascending=[True, False], kind="stable").head(cap)
    return kept.drop(columns="tier").sort_values("npmi", ascending=False, kind="stable")


def graph_frames(edges: pd.DataFrame, set_names: dict[int, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Non-empty, pruned edge frame of one polarity -> (nodes with x, y, set; edges with endpoint positions).
    ``set_names``: set number -> its legend label (e.g. "set 1 (monday)").

    The spring layout takes about a second, so the last few are remembered (keyed by the edges' content)."""
    key = int(pd.util.hash_pandas_object(edges, index=False).sum())
    if key not in _layouts:
        if len(_layouts) >= 8:
            _layouts.pop(next(iter(_layouts)))
        _layouts[key] = _layout(edges)
    nodes, lines = _layouts[key]
    names = set_names or {}
    nodes = nodes.assign(set=[names.get(s, f"set {s}") if s else "no set" for s in nodes.set_number])
    return nodes, lines


def _layout(edges: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    import networkx as nx  # only the graph needs it, and only once a unit has edges

    graph = nx.Graph()
    graph.add_weighted_edges_from(zip(edges.a, edges.b, edges.npmi))
    pos = nx.spring_layout(graph, seed=0, weight="weight") if len(graph) else {}
    set_of = dict(zip(edges.a, edges.set_a)) | dict(zip(edges.b, edges.set_b))
    nodes = pd.DataFrame([{"word": w, "x": float(xy[0]), "y": float(xy[1]), "degree": graph.degree(w),
                           "set_number": int(set_of[w])} for w, xy in pos.items()])
    lines = edges.assign(x=edges.a.map(lambda w: pos[w][0]), y=edges.a.map(lambda w: pos[w][1]),
                         x2=edges.b.map(lambda w: pos[w][0]), y2=edges.b.map(lambda w: pos[w][1]))
    return nodes, lines


def _set_scales(nodes: pd.DataFrame) -> tuple[list[str], alt.Scale, alt.Scale]:
    """Legend order (sets by number, then "no set"), the colour scale and the shape scale."""
    named = nodes[nodes.set_number > 0].drop_duplicates("set_number").sort_values("set_number")
    labels = named.set.tolist() + (["no set"] if (nodes.set_number == 0).any() else [])
    n = len(named)
    colours = [OKABE_ITO[i % len(OKABE_ITO)] for i in range(n)] + ([NO_SET] if len(labels) > n else [])
    shapes = [SHAPES[(i // len(OKABE_ITO)) % len(SHAPES)] for i in range(n)] + (["circle"] if len(labels) > n else [])
    return labels, alt.Scale(domain=labels, range=colours), alt.Scale(domain=labels, range=shapes)


def graph_chart(nodes: pd.DataFrame, lines: pd.DataFrame) -> alt.LayerChart:
    """Spring layout of the pruned NPMI graph: edges as grey lines (darker = higher NPMI), words as points
    coloured (and, past seven sets, shaped) by star set, with a legend naming each set by its centre word."""
    zoom = alt.selection_interval(bind="scales")
    no_axis = dict(axis=None)
    edge = alt.Chart(lines).mark_rule(strokeWidth=0.8, color="#777777").encode(
        x=alt.X("x:Q", **no_axis), y=alt.Y("y:Q", **no_axis), x2="x2:Q", y2="y2:Q",
        opacity=alt.Opacity("npmi:Q", scale=alt.Scale(range=[0.15, 0.8]), legend=None),
        tooltip=["a", "b", alt.Tooltip("npmi:Q", title="NPMI", format=".3f")])
    labels, colours, shapes = _set_scales(nodes)
    legend = alt.Legend(title="star set (centre word)", orient="right", symbolLimit=0, labelLimit=220)
    point = alt.Chart(nodes).mark_point(size=70, filled=True, opacity=1).encode(
        x=alt.X("x:Q", **no_axis), y=alt.Y("y:Q", **no_axis),
        color=alt.Color("set:N", scale=colours, sort=labels, legend=legend),
        shape=alt.Shape("set:N", scale=shapes, sort=labels, legend=legend),
        tooltip=["word", "set", alt.Tooltip("degree:Q", title="edges drawn")])
    label = alt.Chart(nodes).mark_text(dy=-9, fontSize=10, color="#333333").encode(
        x=alt.X("x:Q", **no_axis), y=alt.Y("y:Q", **no_axis), text="word:N")
    return alt.layer(edge, point, label).add_params(zoom).properties(width=760, height=520)


def comparison_chart(neurons: pd.DataFrame) -> alt.HConcatChart:
    """Per neuron (:func:`core.analyses.topics.verdicts.per_neuron`), real vs random: how many neurons have
    0, 1, 2 … word sets, and each neuron's mean topic NPMI (neurons without a topic left out)."""
    counts = neurons.groupby(["source", "n_sets"], as_index=False).size().rename(columns={"size": "neurons"})
    top = int(counts.neurons.max()) if len(counts) else 1
    sets = alt.Chart(counts).mark_bar().encode(
        x=alt.X("n_sets:O", title="word sets per neuron (both pools)", axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("source:N", sort=["real", "random"]),
        y=alt.Y("neurons:Q", title="neurons", scale=alt.Scale(domain=[0, max(1, top)]),
                axis=alt.Axis(format="d", tickMinStep=1)),
        color=alt.Color("source:N", scale=SOURCE_COLOURS, title="source"),
        tooltip=["source:N", alt.Tooltip("n_sets:Q", title="word sets"), alt.Tooltip("neurons:Q")],
    ).properties(width=340, height=220)
    found = neurons.dropna(subset=["mean_npmi"])
    lo, hi = (float(found.mean_npmi.min()), float(found.mean_npmi.max())) if len(found) else (-0.1, 0.1)
    pad = max(0.02, 0.05 * (hi - lo))
    npmi = alt.Chart(found).mark_tick(thickness=2, size=22).encode(
        x=alt.X("mean_npmi:Q", title="mean topic NPMI per neuron", scale=alt.Scale(domain=[lo - pad, hi + pad]),
                axis=alt.Axis(format=".3~f", tickCount=5, labelOverlap=True)),
        y=alt.Y("source:N", title=None, sort=["real", "random"], scale=alt.Scale(domain=["real", "random"])),
        color=alt.Color("source:N", scale=SOURCE_COLOURS, title="source"),
        tooltip=["unit:Q", "source:N", alt.Tooltip("mean_npmi:Q", title="mean topic NPMI", format=".3f"),
                 alt.Tooltip("n_topics:Q", title="topics")],
    ).properties(width=340, height=110)
    return alt.hconcat(sets, npmi).resolve_scale(color="shared")

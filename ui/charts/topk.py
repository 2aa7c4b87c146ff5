"""Altair chart builders of the Top-k order page (no Streamlit calls): each takes a tidy frame from
:mod:`core.analyses.topk` and returns a chart.

Layers on every axis are residual layers, as in the frames: layer l = the stream after block l (1..L), so a slot
held after every block saturates at layer 1 and one settled only at the output at layer L.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from core.analyses.uncertainty import wilson
from ui.format import show_token

SATURATION_LAYER_TITLE = "saturation layer (l = after block l)"
LAYER_TITLE = "layer (l = after block l)"
# Okabe-Ito: distinguishable with the common colour-vision deficiencies
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442"]
EXIT_METHODS = ["baseline", "oracle", "probe", "probe (task ≥ 2)", "softmax response", "hidden-state saturation"]
INT_AXIS = {"format": "d", "tickMinStep": 1}


def _colour(field: str, title: str | None = None, domain: list | None = None, **legend: object) -> alt.Color:
    """A nominal colour from the colour-blind-safe palette (``domain`` fixes the order and the legend's entries)."""
    scale = alt.Scale(range=PALETTE, **({"domain": domain} if domain is not None else {}))
    return alt.Color(field, scale=scale, title=title, legend=alt.Legend(**legend) if legend else alt.Undefined)


def _dashed_key(label: str, dash: list[int]) -> alt.StrokeDash:
    """A strokeDash encoding whose legend shows ``label`` with its dashed line symbol."""
    return alt.StrokeDash("key:N", scale=alt.Scale(domain=[label], range=[dash]),
                          legend=alt.Legend(title=None, symbolType="stroke", symbolStrokeWidth=2,
                                            symbolStrokeColor="#555555", symbolDash=dash))


# -- saturation and ordering ------------------------------------------------------------------------------------
def rank_order_chart(rank_order: pd.DataFrame) -> alt.LayerChart:
    """Bars: mean saturation order (1 = first to settle) per token rank, ± SEM; stars vs the next rank."""
    data = rank_order.assign(lo=rank_order.mean_order - rank_order["sem"], hi=rank_order.mean_order + rank_order["sem"],
                             label=rank_order.stars.where(rank_order.stars != "n.s.", ""))
    base = alt.Chart(data).encode(x=alt.X("rank:O", title="token rank (1 = final top-1)"),
                                  xOffset=alt.XOffset("model:N"))
    bars = base.mark_bar().encode(
        y=alt.Y("mean_order:Q", title="mean saturation order (1 = settles first)"), color=_colour("model:N"),
        tooltip=["model", "rank", alt.Tooltip("mean_order:Q", format=".2f"), alt.Tooltip("sem:Q", format=".3f"),
                 "n", alt.Tooltip("p_vs_next:Q", format=".2g"), "stars"])
    errors = base.mark_rule().encode(y="lo:Q", y2="hi:Q")
    marks = base.mark_text(dy=-8).encode(y="hi:Q", text="label:N")
    return (bars + errors + marks).properties(width=420, height=280)


def histogram_chart(histogram: pd.DataFrame) -> alt.Chart:
    """Lines: share of positions whose rank-r token saturates at each residual layer."""
    return alt.Chart(histogram).mark_line(point=True).encode(
        x=alt.X("saturation_layer:Q", title=SATURATION_LAYER_TITLE, axis=alt.Axis(**INT_AXIS)),
        y=alt.Y("share:Q", title="share of positions", axis=alt.Axis(format="%")),
        color=alt.Color("rank:O", scale=alt.Scale(scheme="viridis"), title="token rank"),
        tooltip=["rank", "saturation_layer", "count", alt.Tooltip("share:Q", format=".1%")],
    ).properties(width=420, height=280)


def permutation_chart(permutation: pd.DataFrame, summary: pd.DataFrame) -> alt.LayerChart:
    """Histogram of the permuted mean taus and a labelled rule at the actual mean tau ("actual τ = 0.31"), one
    colour per model."""
    hist = alt.Chart(permutation).mark_bar(opacity=0.6).encode(
        x=alt.X("mean_tau:Q", bin=alt.Bin(maxbins=40), title="mean strict Kendall's τ"),
        y=alt.Y("count():Q", title="permutations"), color=_colour("model:N", "model"))
    actual = summary.reset_index(drop=True)
    actual = actual.assign(label=[f"actual τ = {t:.3f}" + (f" ({m})" if len(actual) > 1 else "")
                                  for t, m in zip(actual.mean_tau, actual.model)],
                           ypix=[12 + 16 * i for i in range(len(actual))])
    rule = alt.Chart(actual).mark_rule(strokeWidth=2, strokeDash=[4, 2]).encode(
        x="mean_tau:Q", color=_colour("model:N", "model"),
        tooltip=["model", alt.Tooltip("mean_tau:Q", format=".3f"), alt.Tooltip("perm_p:Q", format=".2g")])
    text = alt.Chart(actual).mark_text(align="right", dx=-4, fontWeight="bold").encode(
        x="mean_tau:Q", y=alt.Y("ypix:Q", scale=None), text="label:N", color=_colour("model:N", "model"))
    return (hist + rule + text).properties(width=420, height=240)


def slot_chart(view: pd.DataFrame) -> alt.Chart:
    """One position: layers x slots, filled where the slot holds its final token; tooltip = the lens's token."""
    data = view.assign(shown=view.layer_token.map(show_token), final=view.final_token.map(show_token))
    return alt.Chart(data).mark_rect(stroke="white").encode(
        x=alt.X("layer:O", title=LAYER_TITLE), y=alt.Y("slot:O", title="slot (rank)"),
        color=alt.Color("held:N", scale=alt.Scale(domain=[True, False], range=["#2b7bba", "#e8e8e8"]),
                        title="holds its final token"),
        tooltip=["layer", "slot", alt.Tooltip("shown:N", title="lens token"), alt.Tooltip("final:N", title="final"),
                 "saturation_layer"],
    ).properties(width=620, height=160)


def text_saturation_chart(view: pd.DataFrame) -> alt.Chart:
    """One text: positions x slots, colour = saturation layer."""
    data = view.drop_duplicates(["position", "slot"]).assign(input=lambda f: f.token.map(show_token),
                                                            final=lambda f: f.final_token.map(show_token))
    ticks = [p for p in sorted(data.position.unique()) if p % 10 == 0]
    return alt.Chart(data).mark_rect().encode(
        x=alt.X("position:O", title="position (token index in the text)", axis=alt.Axis(values=ticks, labelAngle=0)),
        y=alt.Y("slot:O", title="slot (rank)"),
        color=alt.Color("saturation_layer:Q", scale=alt.Scale(scheme="viridis", reverse=True),
                        title=SATURATION_LAYER_TITLE),
        tooltip=["position", "input", "slot", "final", "saturation_layer"],
    ).properties(width=620, height=140)


# -- probing, early exit, better LM ---------------------------------------------------------------------------
def probe_chart(summary: pd.DataFrame, width: int = 560) -> alt.LayerChart:
    """Bars ± SEM: pooled probe scores per metric (and task) for each source (probe, control, chance)."""
    data = summary.assign(what=summary.metric + summary.task.map(lambda t: "" if t < 0 else f" task {t + 1}"),
                          lo=summary["mean"] - summary["sem"].fillna(0), hi=summary["mean"] + summary["sem"].fillna(0))
    # horizontal bars: every metric keeps its label however many there are (rotated x labels were thinned out)
    rows = int(data.what.nunique())
    base = alt.Chart(data).encode(y=alt.Y("what:N", title=None, axis=alt.Axis(labelLimit=200)),
                                  yOffset=alt.YOffset("source:N"))
    bars = base.mark_bar().encode(x=alt.X("mean:Q", scale=alt.Scale(domain=[0, 1]), title="score"),
                                  color=_colour("source:N", "features",
                                                domain=["probe", "random-feature control", "chance"]),
                                  tooltip=["source", "what", alt.Tooltip("mean:Q", format=".3f"),
                                           alt.Tooltip("sem:Q", format=".3f"), "folds"])
    # the height holds the axis too (Streamlit sizes charts to fit): 3 bars of 8 px per metric plus 60 px
    return (bars + base.mark_rule().encode(x="lo:Q", x2="hi:Q")).properties(width=width, height=26 * rows + 60)


def baseline_probe_chart(probe: pd.DataFrame) -> alt.FacetChart:
    """:func:`probe_chart`, one narrower panel per model (trained vs its random-init twin), two per row: about
    800 px wide with the legend, inside a 1280 px window with the sidebar open."""
    return probe_chart(probe, width=300).facet(facet=alt.Facet("model:N", title=None), columns=2)


def per_layer_chart(per_layer: pd.DataFrame, chance: float) -> alt.LayerChart:
    """Lines: one probe per residual layer (balanced accuracy) for the probe and its control; dashed = chance."""
    line = alt.Chart(per_layer).mark_line(point=True).encode(
        x=alt.X("layer:Q", title=LAYER_TITLE, axis=alt.Axis(**INT_AXIS), scale=alt.Scale(zero=False)),
        y=alt.Y("mean:Q", scale=alt.Scale(domain=[0, 1]), title="balanced accuracy (k-fold)"),
        color=_colour("source:N", "features", domain=["probe", "random-feature control"]),
        tooltip=["layer", "source", alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("sem:Q", format=".3f"), "rows"])
    label = f"chance 1/k = {chance:.2f}"
    rule = alt.Chart(pd.DataFrame({"chance": [chance], "key": [label]})).mark_rule(color="gray").encode(
        y="chance:Q", strokeDash=_dashed_key(label, [4, 4]))
    return (line + rule).properties(width=560, height=260)


def exit_chart(points: pd.DataFrame) -> alt.LayerChart:
    """Accuracy vs speedup: the baseline curves as dashed lines, the single-point methods as large points."""
    methods = [m for m in EXIT_METHODS if m in set(points.method)] + sorted(set(points.method) - set(EXIT_METHODS))
    label = "threshold sweep (dashed)"
    curves = points[points.threshold.notna()].assign(key=label)
    singles = points[points.threshold.isna()]
    tooltip = ["method", "threshold", alt.Tooltip("accuracy:Q", format=".3f"), alt.Tooltip("speedup:Q", format=".2f"),
               alt.Tooltip("mean_blocks:Q", format=".1f")]
    colour = _colour("method:N", "method", domain=methods, symbolType="circle", orient="right")
    lines = alt.Chart(curves).mark_line().encode(
        x=alt.X("speedup:Q", title="speedup (L · positions / blocks run)", scale=alt.Scale(zero=False)),
        y=alt.Y("accuracy:Q", title="next-token accuracy", axis=alt.Axis(format="%"), scale=alt.Scale(zero=False)),
        color=colour, strokeDash=_dashed_key(label, [5, 3]), order="threshold:Q", tooltip=tooltip)
    sweep = alt.Chart(curves).mark_point(size=30, filled=True).encode(x="speedup:Q", y="accuracy:Q", color=colour,
                                                                      tooltip=tooltip)
    dots = alt.Chart(singles).mark_point(size=140, filled=True, opacity=0.9).encode(
        x="speedup:Q", y="accuracy:Q", color=colour,
        shape=alt.Shape("method:N", scale=alt.Scale(domain=methods), legend=None), tooltip=tooltip)
    return (lines + sweep + dots).properties(width=560, height=320)


def better_lm_chart(groups: pd.DataFrame) -> alt.Chart:
    """Bars: per top-2 saturation group, the share of wrong-top-1 positions whose final top-2 is right, with its
    95 % Wilson interval."""
    bounds = [wilson(int(k), int(n)) for k, n in zip(groups.top2_correct, groups.positions)]
    data = groups.assign(lo=[b[0] for b in bounds], hi=[b[1] for b in bounds])
    base = alt.Chart(data).encode(y=alt.Y("group:N", title=None, axis=alt.Axis(labelLimit=420)))
    bars = base.mark_bar().encode(
        x=alt.X("share:Q", title="share where the final top-2 is the actual next token", axis=alt.Axis(format="%")),
        tooltip=["group", "positions", "top2_correct", alt.Tooltip("share:Q", format=".1%"),
                 alt.Tooltip("lo:Q", format=".1%", title="95 % CI low"),
                 alt.Tooltip("hi:Q", format=".1%", title="95 % CI high")])
    return (bars + base.mark_rule(color="black").encode(x="lo:Q", x2="hi:Q")).properties(width=520, height=120)


# -- intervention and other modalities ----------------------------------------------------------------------------
def intervention_chart(offsets: pd.DataFrame) -> alt.LayerChart:
    """Bars: share of pairs whose new saturation layer is the implant layer (prediction unchanged) per offset,
    ± SEM; dashed step line: the maximum of each half (offsets < 0 and >= 0), as in the paper's figure."""
    data = offsets.assign(lo=(offsets["share"] - offsets["sem"]).clip(lower=0),
                          hi=(offsets["share"] + offsets["sem"]).clip(upper=1),
                          x0=offsets.offset - 0.5, x1=offsets.offset + 0.5)
    x = alt.X("offset:Q", title="implant layer − early token's saturation layer (o)",
              scale=alt.Scale(domain=[offsets.offset.min() - 0.5, offsets.offset.max() + 0.5]),
              axis=alt.Axis(values=offsets.offset.tolist(), format="d"))
    bars = alt.Chart(data).mark_bar(size=22, opacity=0.7).encode(
        x=x, y=alt.Y("share:Q", title="share of pairs (new saturation = implant layer)",
                     axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
        tooltip=["offset", alt.Tooltip("share:Q", format=".1%"), alt.Tooltip("sem:Q", format=".3f"), "n", "skipped"])
    errors = alt.Chart(data).mark_rule().encode(x="offset:Q", y="lo:Q", y2="hi:Q")
    label = "max of each half (o < 0, o ≥ 0)"
    step = alt.Chart(data.assign(key=label)).mark_rule(color="#D55E00", strokeWidth=2).encode(
        x="x0:Q", x2="x1:Q", y="half_max:Q", strokeDash=_dashed_key(label, [5, 3]),
        tooltip=["half", alt.Tooltip("half_max:Q", format=".1%", title="max")])
    return (bars + errors + step).properties(width=560, height=300)


def modal_rank_chart(rank_order: pd.DataFrame) -> alt.LayerChart:
    """The text analysis's rank-order bars: mean saturation order per token rank ± SEM, stars vs the next rank."""
    data = rank_order.assign(lo=rank_order["mean_order"] - rank_order["sem"].fillna(0),
                             hi=rank_order["mean_order"] + rank_order["sem"].fillna(0),
                             label=rank_order["stars"].where(rank_order["stars"] != "n.s.", ""))
    base = alt.Chart(data).encode(x=alt.X("rank:O", title="token rank (1 = final top-1)"))
    bars = base.mark_bar(opacity=0.8).encode(
        y=alt.Y("mean_order:Q", title="mean saturation order (1 = settles first)"),
        tooltip=["rank", alt.Tooltip("mean_order:Q", format=".2f"), alt.Tooltip("sem:Q", format=".3f"), "n",
                 alt.Tooltip("p_vs_next:Q", format=".2g"), "stars"])
    return (bars + base.mark_rule().encode(y="lo:Q", y2="hi:Q")
            + base.mark_text(dy=-8).encode(y="hi:Q", text="label:N")).properties(width=420, height=260)


def modal_probe_chart(probe: pd.DataFrame) -> alt.LayerChart:
    """Pooled probe balanced accuracy and per-task accuracy: residual features vs the control; dashed = chance."""
    data = probe[(probe.metric == "balanced_accuracy") | (probe.metric == "accuracy")].copy()
    data["what"] = data.metric.where(data.task < 0, "task " + (data.task + 1).astype(str))
    data["lo"], data["hi"] = data["mean"] - data["sem"].fillna(0), data["mean"] + data["sem"].fillna(0)
    base = alt.Chart(data).encode(x=alt.X("what:N", title=None, sort=None, axis=alt.Axis(labelAngle=-30)),
                                  xOffset=alt.XOffset("features:N"))
    bars = base.mark_bar().encode(
        y=alt.Y("mean:Q", title="accuracy (k-fold)", scale=alt.Scale(domain=[0, 1])),
        color=_colour("features:N", "features", domain=["residual", "control"]),
        tooltip=["features", "what", alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("sem:Q", format=".3f"), "folds"])
    label = "chance 1/tasks"
    chance = alt.Chart(data.drop_duplicates("chance").assign(key=label)).mark_rule(color="gray").encode(
        y="chance:Q", strokeDash=_dashed_key(label, [4, 4]), tooltip=[alt.Tooltip("chance:Q", format=".0%")])
    return (bars + base.mark_rule().encode(y="lo:Q", y2="hi:Q") + chance).properties(width=460, height=260)

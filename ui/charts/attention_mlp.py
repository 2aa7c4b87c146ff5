"""Altair charts of the Attention -> MLP page (no Streamlit calls): tidy frame in, chart out.

Heads are labelled ``B{head_block}H{head}`` with 1-based blocks (block l writes layer l), as in the frames. Colours are
colour-blind safe: a red-blue diverging scale for signed attributions, Okabe-Ito colours for groups.
"""

from __future__ import annotations

import math

import altair as alt
import pandas as pd

from core.analyses.attention_mlp.params import CONTEXT_BAND, RULE_WORDS

ACTIVE, INACTIVE = "#D55E00", "#0072B2"  # Okabe-Ito vermilion and blue
GROUP_SCALE = alt.Scale(domain=["active", "inactive"], range=[ACTIVE, INACTIVE])


def _inline(frame: pd.DataFrame, columns: list[str]) -> alt.InlineData:
    """The columns a chart reads, as inline records: past Altair's 5,000-row guard (a paper-sized heatmap has
    20 prompts x 261 heads), so the PNG / SVG downloads work too."""
    return alt.InlineData(values=frame[columns].to_dict("records"))


def number_format(values: pd.Series) -> str:
    """A d3 format that never prints a small number as "-0.000020": plain 3 significant digits between 0.01 and
    10,000, else scientific."""
    top = float(values.abs().max()) if len(values) else 0.0
    return ".3~g" if top == 0 or not math.isfinite(top) or 0.01 <= top < 1e4 else ".1e"


def attribution_heatmap(attr: pd.DataFrame, rule: str) -> alt.LayerChart:
    """[prompt x head] attributions -> prompts (y) x heads (x: grouped by block, the block's heads side by side),
    colour = direct attribution; a black dot marks a head active on that prompt under ``rule``."""
    n_heads = int(attr["head"].nunique())
    fmt = number_format(attr["attr"])
    cols = ["prompt", "head_block", "head", "head_label", "attr", f"active_{rule}", f"share_{rule}"]
    order = (attr[["head_block", "head", "head_label"]].drop_duplicates().sort_values(["head_block", "head"])
             .head_label.tolist())
    firsts = [label for label in order if label.endswith("H0")]  # one axis label per block: its first head
    base = alt.Chart(_inline(attr, cols)).encode(
        x=alt.X("head_label:O", sort=order, scale=alt.Scale(type="band"),
                title=f"head: block (1-based) and head; each block's {n_heads} heads side by side, labelled at head 0",
                axis=alt.Axis(values=firsts, labelAngle=-90, labelOverlap="greedy")),
        y=alt.Y("prompt:O", scale=alt.Scale(type="band"), title="prompt (0 = top)"))
    limit = float(attr["attr"].abs().max()) or 1.0
    cells = base.mark_rect().encode(
        color=alt.Color("attr:Q", scale=alt.Scale(scheme="redblue", reverse=True, domain=[-limit, limit]),
                        title="attribution", legend=alt.Legend(format=fmt)),
        tooltip=[alt.Tooltip("prompt:O"), alt.Tooltip("head_label:N", title="head"),
                 alt.Tooltip("attr:Q", title="attribution", format=fmt),
                 alt.Tooltip(f"active_{rule}:N", title="active"),
                 alt.Tooltip(f"share_{rule}:Q", title="share of prompts active", format=".0%")])
    marker = f"active head ({RULE_WORDS[rule].removeprefix('active = ')})"
    # (legends stay on the right: Streamlit squashes band-scale charts whose legend is at the top or bottom)
    dots = base.transform_filter(alt.datum[f"active_{rule}"]).transform_calculate(mark=f"'{marker}'").mark_point(
        filled=True, size=16, color="black", stroke="white", strokeWidth=0.5, opacity=1).encode(
        shape=alt.Shape("mark:N", title=None, scale=alt.Scale(range=["circle"]),
                        legend=alt.Legend(symbolFillColor="black", symbolStrokeColor="white", labelLimit=0)))
    # Streamlit sizes charts with autosize "fit": the height includes the axes and the x labels, so they are added
    # to the rows' height (else a few prompts' rows are squashed flat)
    return (cells + dots).properties(width="container", height=16 * attr.prompt.nunique() + 150)


def share_chart(heads: pd.DataFrame, rule: str) -> alt.LayerChart:
    """[neuron x head] summary -> share of prompts each head is active in (heads active at least once); the shaded
    25-75 % band marks the context-dependent heads."""
    data = heads[heads[f"share_{rule}"] > 0].assign(
        kind=lambda f: f[f"context_{rule}"].map({True: "context-dependent (in the band)", False: "outside the band"}))
    bars = alt.Chart(data).mark_bar().encode(
        x=alt.X("head_label:N", sort="-y", title="head (B block, 1-based · H head)"),
        y=alt.Y(f"share_{rule}:Q", title="share of prompts active", scale=alt.Scale(domain=[0, 1]),
                axis=alt.Axis(format=".0%")),
        color=alt.Color("kind:N", title=RULE_WORDS[rule],
                        scale=alt.Scale(domain=["context-dependent (in the band)", "outside the band"],
                                        range=[ACTIVE, "#999999"]), legend=alt.Legend(labelLimit=260, titleLimit=320)),
        tooltip=[alt.Tooltip("head_label:N", title="head"),
                 alt.Tooltip(f"share_{rule}:Q", title="share active", format=".0%"),
                 alt.Tooltip("mean_attr:Q", title="mean attribution", format=number_format(data["mean_attr"]))])
    band = pd.DataFrame({"y": [CONTEXT_BAND[0]], "y2": [CONTEXT_BAND[1]],
                         "label": [f"{CONTEXT_BAND[0]:.0%}–{CONTEXT_BAND[1]:.0%} band"]})
    shade = alt.Chart(band).mark_rect(opacity=0.12, color="#009E73").encode(y="y:Q", y2="y2:Q")
    text = alt.Chart(band).mark_text(align="left", dx=4, dy=-6, color="#009E73").encode(
        y="y2:Q", x=alt.value(0), text="label:N")
    return (shade + bars + text).properties(width=560, height=220)


def _by_activity(ablation: pd.DataFrame, rule: str) -> pd.DataFrame:
    """The ablation frame with ``group`` = 'active' / 'inactive' (the head on that prompt, under ``rule``)."""
    return ablation.assign(group=ablation[f"active_{rule}"].map({True: "active", False: "inactive"}))


def ablation_chart(ablation: pd.DataFrame, rule: str) -> alt.FacetChart:
    """[prompt x head] drops of one neuron -> one box plot per ablated head, active vs inactive prompts."""
    data = _inline(_by_activity(ablation, rule), ["head_label", "group", "drop"])
    return alt.Chart(data).mark_boxplot(extent="min-max").encode(
        x=alt.X("group:N", title=None, axis=alt.Axis(labels=False, ticks=False)),
        y=alt.Y("drop:Q", title="decrease in p(neuron token)", axis=alt.Axis(format=number_format(ablation["drop"]))),
        color=alt.Color("group:N", scale=GROUP_SCALE, title=f"head on the prompt ({RULE_WORDS[rule]})",
                        legend=alt.Legend(labelLimit=260, titleLimit=320)),
    ).properties(width=90, height=200).facet(facet=alt.Facet("head_label:N", title="ablated head"), columns=6)


def pooled_ablation_chart(ablation: pd.DataFrame) -> alt.FacetChart:
    """Every neuron's ablation drops pooled -> active vs inactive prompt-head pairs, one panel per active-head rule."""
    data = pd.concat([_by_activity(ablation, rule).assign(rule=RULE_WORDS[rule]) for rule in RULE_WORDS],
                     ignore_index=True)
    return alt.Chart(_inline(data, ["rule", "group", "drop"])).mark_boxplot(extent="min-max").encode(
        x=alt.X("group:N", title=None, axis=alt.Axis(labels=False, ticks=False)),
        y=alt.Y("drop:Q", title="decrease in p(token) when the head is zeroed",
                axis=alt.Axis(format=number_format(ablation["drop"]))),
        color=alt.Color("group:N", scale=GROUP_SCALE, title="head on the prompt"),
    ).properties(width=200, height=240).facet(column=alt.Column("rule:N", title=None))

"""Altair charts of the Attention -> MLP page (no Streamlit calls): tidy frame in, chart out.

Heads are labelled ``B{head_block}H{head}`` with 1-based blocks (block l writes layer l), as in the frames.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from core.analyses.attention_mlp.heads import ACTIVE_HIGH, ACTIVE_LOW

# show a head label on the axis only for the first head of each block ('...H0'), so 100s of heads stay readable
FIRST_HEAD_ONLY = ("indexof(datum.value, 'H0') >= 0 && indexof(datum.value, 'H0') == length(datum.value) - 2 "
                   "? datum.value : ''")


def attribution_heatmap(attr: pd.DataFrame, rule: str) -> alt.LayerChart:
    """[prompt x head] attributions -> prompts (y) x heads (x), colour = direct attribution; dots mark the heads
    active under ``rule``."""
    order = attr.drop_duplicates("head_label").sort_values(["head_block", "head"]).head_label.tolist()
    base = alt.Chart(attr).encode(
        x=alt.X("head_label:N", sort=order, title="head (B block, 1-based · H head; the first of each block labelled)",
                axis=alt.Axis(labelFontSize=8, labelExpr=FIRST_HEAD_ONLY)),
        y=alt.Y("prompt:O", title="prompt (by activation)"))
    limit = float(attr["attr"].abs().max()) or 1.0
    cells = base.mark_rect().encode(
        color=alt.Color("attr:Q", scale=alt.Scale(scheme="redblue", reverse=True, domain=[-limit, limit]),
                        title="attribution"),
        tooltip=["prompt", "head_label", alt.Tooltip("attr:Q", format=".3f"), f"active_{rule}", f"share_{rule}"])
    dots = base.transform_filter(alt.datum[f"active_{rule}"]).mark_point(
        shape="circle", size=14, filled=True, color="black")
    return (cells + dots).properties(width=max(400, 4 * len(order)), height=14 * attr.prompt.nunique() + 20)


def share_chart(heads: pd.DataFrame, rule: str) -> alt.LayerChart:
    """[neuron x head] summary -> share of prompts each head is active in; the 25-75 % band marks the
    context-dependent heads."""
    data = heads[heads[f"share_{rule}"] > 0]
    bars = alt.Chart(data).mark_bar().encode(
        x=alt.X("head_label:N", sort="-y", title="head"),
        y=alt.Y(f"share_{rule}:Q", title="share of prompts active", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color(f"context_{rule}:N", title="context-dependent"),
        tooltip=["head_label", alt.Tooltip(f"share_{rule}:Q", format=".0%"), alt.Tooltip("mean_attr:Q", format=".3f")])
    band = alt.Chart(pd.DataFrame({"y": [ACTIVE_LOW], "y2": [ACTIVE_HIGH]})).mark_rect(
        opacity=0.1, color="green").encode(y="y:Q", y2="y2:Q")
    return (band + bars).properties(width=560, height=220)


def _by_activity(ablation: pd.DataFrame, rule: str) -> pd.DataFrame:
    """The ablation frame with ``group`` = 'active' / 'inactive' (the head on that prompt, under ``rule``)."""
    return ablation.assign(group=ablation[f"active_{rule}"].map({True: "active", False: "inactive"}))


def ablation_chart(ablation: pd.DataFrame, rule: str) -> alt.FacetChart:
    """[prompt x head] drops of one neuron -> one box plot per ablated head, active vs inactive prompts."""
    return alt.Chart(_by_activity(ablation, rule)).mark_boxplot(extent="min-max").encode(
        x=alt.X("group:N", title="head on the prompt"), y=alt.Y("drop:Q", title="decrease in p(neuron token)"),
        color=alt.Color("group:N", legend=None),
    ).properties(width=120, height=200).facet(facet=alt.Facet("head_label:N", title=None), columns=6)


def pooled_ablation_chart(ablation: pd.DataFrame) -> alt.Chart:
    """Every neuron's ablation drops pooled -> one box plot, active vs inactive prompt-head pairs (top-3 rule)."""
    return alt.Chart(_by_activity(ablation, "top3")).mark_boxplot(extent="min-max").encode(
        x=alt.X("group:N", title="head on the prompt (top-3 rule)"), y=alt.Y("drop:Q", title="decrease in p(token)"),
        color=alt.Color("group:N", legend=None)).properties(width=260, height=240)

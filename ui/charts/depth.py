"""Altair builders of the Depth page (no Streamlit calls): each takes a section's tidy frame, returns a chart."""

from __future__ import annotations

from typing import Callable

import altair as alt
import pandas as pd

from ui.charts import OKABE_ITO, categorical

BUCKETS = ["Top-10", "Top-100", "Top-1000", "Rest"]  # frequency buckets, most frequent first


def curves_chart(curves: pd.DataFrame, title: str) -> alt.Chart:
    """Curves (group, k, mean_layer, std_layer, n) -> mean earliest layer with rank <= k (x) against k (y, log),
    one line per group (the paper's axes). Parts of speech: function words first, then content words."""
    present = list(dict.fromkeys(curves.group))
    order = [g for g in ("DET", "ADP", "PUNCT", "NOUN", "VERB", "ADJ") if g in present]
    groups = order + [g for g in present if g not in order]
    return alt.Chart(curves.dropna(subset=["mean_layer"])).mark_line(strokeWidth=2).encode(
        x=alt.X("mean_layer:Q", title="mean earliest layer with rank ≤ k (0 = embeddings)"),
        y=alt.Y("k:Q", scale=alt.Scale(type="log"), title="rank threshold k (log scale)"),
        **categorical(groups, title, "group", dashes=True), order="k:Q",
        tooltip=["group", "k", alt.Tooltip("mean_layer:Q", format=".2f"), alt.Tooltip("std_layer:Q", format=".2f"),
                 "n"],
    ).properties(width=560, height=320)


def options_chart(summary: pd.DataFrame) -> alt.Chart:
    """Option summary (task, example, identify_rel, decision_rel) -> box plots of the two relative depths."""
    data = summary.melt(id_vars=["task", "example"], value_vars=["identify_rel", "decision_rel"],
                        var_name="measure", value_name="relative_depth").dropna()
    data["measure"] = data.measure.map({"identify_rel": "options identified", "decision_rel": "decision settled"})
    tasks = sorted(summary.task.unique())
    return alt.Chart(data).mark_boxplot(extent="min-max").encode(
        x=alt.X("relative_depth:Q", scale=alt.Scale(domain=[0, 1]), title="relative depth (layer / L)"),
        y=alt.Y("measure:N", title=None, axis=alt.Axis(labelLimit=200)),
        color=alt.Color("task:N", scale=alt.Scale(domain=tasks, range=OKABE_ITO[:len(tasks)])),
        yOffset="task:N",
    ).properties(width=560, height=200)


def option_probability_chart(rows: pd.DataFrame) -> alt.FacetChart:
    """Option rows (task, option, layer, prob, rank) -> mean probability of each option across layers, one panel
    per task."""
    mean = rows.groupby(["task", "option", "layer"], as_index=False).agg(prob=("prob", "mean"),
                                                                         rank=("rank", "median"))
    options = sorted(mean.option.unique())
    return alt.Chart(mean).mark_line(point=True).encode(
        x=alt.X("layer:Q", title="layer (0 = embeddings)"), y=alt.Y("prob:Q", title="mean probability"),
        color=alt.Color("option:N", scale=alt.Scale(domain=options, range=(OKABE_ITO * 2)[:len(options)])),
        tooltip=["task", "option", "layer", alt.Tooltip("prob:Q", format=".3f"),
                                               alt.Tooltip("rank:Q", title="median rank")],
    ).properties(width=300, height=220).facet(column=alt.Column("task:N", title=None))


def shares_chart(shares: pd.DataFrame) -> alt.Chart:
    """Shares (column, bucket, share, count) -> stacked bars: which frequency bucket each layer's top-1 is in."""
    order = list(dict.fromkeys(shares.column))
    return alt.Chart(shares).mark_bar().encode(
        x=alt.X("column:N", sort=order, title="layer of the top-1 (final = the model's prediction)"),
        y=alt.Y("share:Q", stack="normalize", title="share of examples"),
        color=alt.Color("bucket:N", sort=BUCKETS, title="frequency bucket",
                        scale=alt.Scale(domain=BUCKETS, range=["#0072B2", "#56B4E9", "#E69F00", "#BBBBBB"])),
        tooltip=["column", "bucket", alt.Tooltip("share:Q", format=".0%"), "count"],
    ).properties(width=620, height=280)


MIN_FLIP_N = 5
"""A bucket's flip rate at a layer is drawn only from this many top-1 picks on; fewer would be noise."""


def flips_chart(flips: pd.DataFrame) -> alt.LayerChart:
    """Flips (layer, bucket, flip_rate, n) -> per bucket, how often a layer's top-1 differs from the final one.
    A bucket is drawn only at layers where at least MIN_FLIP_N top-1 picks fell in it: its line breaks where there
    are too few (one line per run of consecutive such layers, never a line across layers without data); the point
    size shows n."""
    data = flips[flips.n >= MIN_FLIP_N].sort_values(["bucket", "layer"]).copy()
    # a new segment wherever a bucket skips a layer
    data["segment"] = data.groupby("bucket").layer.transform(lambda s: (s.diff() != 1).cumsum())
    data["segment"] = data.bucket + "-" + data.segment.astype(str)
    present = [b for b in BUCKETS if b in set(data.bucket)]
    enc = categorical(present, "frequency bucket", "bucket", dashes=True)
    base = alt.Chart(data).encode(
        x=alt.X("layer:Q", title="layer (0 = embeddings)"),
        y=alt.Y("flip_rate:Q", scale=alt.Scale(domain=[0, 1]), title="flip rate (top-1 ≠ final)",
                axis=alt.Axis(format="%")),
        tooltip=["layer", "bucket", alt.Tooltip("flip_rate:Q", format=".0%"), "n"])
    lines = base.mark_line().encode(detail="segment:N", **enc)
    top = int(max(MIN_FLIP_N + 1, data.n.max() if len(data) else 0))
    points = base.mark_circle(opacity=0.8).encode(
        color=enc["color"].legend(None),
        size=alt.Size("n:Q", title="top-1 picks (n)", scale=alt.Scale(domain=[MIN_FLIP_N, top], range=[15, 120])))
    return alt.layer(lines, points).properties(width=620, height=260)


ChartBuilder = Callable[[dict[str, pd.DataFrame]], alt.TopLevelMixin]

# section -> the figures it draws: (the table a figure is drawn from and downloaded as, its builder)
FIGURES: dict[str, list[tuple[str, ChartBuilder]]] = {
    "pos": [("curves", lambda f: curves_chart(f["curves"], "tag"))],
    "facts": [("curves", lambda f: curves_chart(f["curves"], "answer token"))],
    "options": [("summary", lambda f: options_chart(f["summary"])),
                ("rows", lambda f: option_probability_chart(f["rows"]))],
    "frequency": [("shares", lambda f: shares_chart(f["shares"])), ("flips", lambda f: flips_chart(f["flips"]))],
}

"""Altair builders of the Lens and Home pages (no Streamlit calls): each takes a tidy lens frame, returns a chart."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from ui.charts import OKABE_ITO
from ui.format import layer_label, show_token, symlog_ticks

# metric name shown to the user -> (frame column, colour scale, legend title)
HEATMAP_METRICS: dict[str, tuple[str, alt.Scale, str]] = {
    "top-1 probability": ("top1_prob", alt.Scale(scheme="viridis", domain=[0, 1]), "p(top-1)"),
    "target probability": ("target_prob", alt.Scale(scheme="viridis", domain=[0, 1]), "p(target)"),
    "target rank": ("target_rank", alt.Scale(type="log", scheme="viridis", reverse=True), "rank (1 = best)"),
    "entropy": ("entropy", alt.Scale(scheme="magma", reverse=True), "entropy (nats)"),
    "KL to final": ("kl_to_final", alt.Scale(scheme="magma", reverse=True), "KL(final‖layer) nats"),
}
SELECTION = "cell"

# Layout of the heatmaps. They fill their container's width (an export, having no container, gets
# EXPORT_CELL_PX per position), so a cell's width, Vega's bandwidth('x'), is known only in the browser: these Vega
# expressions adapt the cells, their text and the x-axis labels to it. A layer row is ROW_PX high.
ROW_PX = 20
EXPORT_CELL_PX = 62
_BAND = "bandwidth('x')"
CELL_WIDTH_PX = f"{_BAND} + 1"  # neighbours overlap by a pixel: no seams between cells of fractional width
# Cell text (the top-1 token): truncated with an ellipsis to the cell's width, 9 to 11 px, hidden in cells narrower
# than TEXT_MIN_CELL_PX (the tooltip still names the token).
TEXT_MIN_CELL_PX = 22
TEXT_FONT_PX = f"{_BAND} >= 60 ? 11 : {_BAND} >= 36 ? 10 : 9"
TEXT_LIMIT_PX = f"{_BAND} - 4"
TEXT_OPACITY = f"{_BAND} >= {TEXT_MIN_CELL_PX} ? 1 : 0"
# x labels (position and input token): horizontal and truncated to the cell in wide cells, at 45 degrees in medium
# ones, vertical in narrow ones; below 12 px per cell only every k-th is drawn, counted from the last position (the
# next-token prediction), which is always labelled. An axis label's datum.index runs from 0 to 1.
LABEL_FONT_PX = f"{_BAND} >= 24 ? 11 : 10"
LABEL_ANGLE = f"({_BAND} >= 72 ? 0 : {_BAND} >= 16 ? -45 : -90)"
LABEL_LIMIT_PX = f"({_BAND} >= 72 ? {_BAND} - 4 : 120)"
LABEL_MIN_PX = 12
_LABEL_EVERY = f"max(1, ceil({LABEL_MIN_PX} / {_BAND}))"
_FROM_LAST = "round((1 - datum.index) * (length(domain('x')) - 1))"
LABEL_EXPR = f"{_FROM_LAST} % {_LABEL_EVERY} == 0 ? datum.label : ''"
# Colour legend, above the cells (``width`` is theirs): its title on its left where there is room, else on top.
LEGEND_WIDE_PX = 360
LEGEND_TITLE_ORIENT = f"width >= {LEGEND_WIDE_PX} ? 'left' : 'top'"
LEGEND_TITLE_LIMIT_PX = f"width >= {LEGEND_WIDE_PX} ? 170 : max(width - 8, 40)"
LEGEND_LENGTH_PX = f"width >= {LEGEND_WIDE_PX} ? 160 : clamp(width - 16, 40, 160)"


def _short(text: str, width: int = 8) -> str:
    shown = show_token(text)
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def heatmap_data(frame: pd.DataFrame) -> pd.DataFrame:
    """Add display columns to a lens frame (one row per layer x position)."""
    data = frame.copy()
    data["top1"] = data.top_tokens.str[0].map(show_token)
    data["top1_prob"] = data.top_probs.str[0]
    data["layer_label"] = data.layer.map(layer_label)
    data["input"] = data.token.map(show_token)
    data["pos_label"] = data.position.astype(str) + " " + data.token.map(lambda t: _short(t, 10))
    data["target_shown"] = data.target.map(show_token)
    return data.drop(columns=["top_tokens", "top_probs"])


def _light_cell(data: pd.DataFrame, column: str) -> pd.Series:
    """True where the colour scale is light, so the cell's text should be dark. The scales of
    ``HEATMAP_METRICS`` run from dark to light over [0, 1] (probabilities) or else over the data's range."""
    values = data[column].astype(float)
    if column in ("top1_prob", "target_prob"):
        return values > 0.6
    if column == "target_rank":
        values = np.log(values.clip(lower=1))
    low, high = values.min(), values.max()
    return 1 - (values - low) / max(high - low, 1e-9) > 0.6  # reversed scales: the lowest value is the lightest


def _x_axis() -> alt.Axis:
    """The positions axis: labels turn and thin out as cells narrow (see ``LABEL_ANGLE`` and ``LABEL_EXPR``)."""
    return alt.Axis(labelAngle=alt.expr(LABEL_ANGLE), labelLimit=alt.expr(LABEL_LIMIT_PX), labelOverlap=False,
                    labelExpr=LABEL_EXPR, labelFontSize=alt.expr(LABEL_FONT_PX), labelPadding=4)


def _legend() -> alt.Legend:
    """Above the cells, so that it never takes width from them; titled on its left when the cells are wider than
    ``LEGEND_WIDE_PX``, else on top with a gradient as long as the cells are wide."""
    return alt.Legend(orient="top", direction="horizontal", titleOrient=alt.expr(LEGEND_TITLE_ORIENT),
                      titleLimit=alt.expr(LEGEND_TITLE_LIMIT_PX), gradientLength=alt.expr(LEGEND_LENGTH_PX))


def _cell_text(base: alt.Chart, field: str, color: dict, tooltip: list | None = None) -> alt.Chart:
    """The cells' text: ``field`` truncated to the cell's width, hidden in cells too narrow to read."""
    mark = base.mark_text(baseline="middle", fontSize=alt.expr(TEXT_FONT_PX), limit=alt.expr(TEXT_LIMIT_PX),
                          opacity=alt.expr(TEXT_OPACITY))
    return mark.encode(text=f"{field}:N", color=color, **({"tooltip": tooltip} if tooltip else {}))


def _fit(chart: alt.LayerChart, n_pos: int) -> alt.LayerChart:
    """Fill the container's width (cells share what the axes leave); ``ROW_PX`` per row. An export, which has no
    container, is drawn ``EXPORT_CELL_PX`` per position."""
    return chart.properties(width="container", height=alt.Step(ROW_PX),
                            autosize=alt.AutoSizeParams(type="fit-x", contains="padding", resize=True)).configure_view(
        continuousWidth=EXPORT_CELL_PX * n_pos + 120, discreteWidth=EXPORT_CELL_PX * n_pos + 120)


def lens_heatmap(frame: pd.DataFrame, metric: str, selected: tuple[int, int] | None = None) -> alt.LayerChart:
    """Layers x positions: colour = ``metric``, text = the lens's top-1 token; click selects a cell."""
    column, scale, title = HEATMAP_METRICS[metric]
    data = heatmap_data(frame)
    data["dark_text"] = _light_cell(data, column)
    layer_order = [layer_label(v) for v in sorted(data.layer.unique(), reverse=True)]
    pos_order = [data.pos_label[data.position == p].iloc[0] for p in sorted(data.position.unique())]
    pick = alt.selection_point(name=SELECTION, fields=["layer", "position"], on="click", clear=False)
    base = alt.Chart(data).encode(
        x=alt.X("pos_label:N", sort=pos_order, title="position · input token", axis=_x_axis()),
        y=alt.Y("layer_label:N", sort=layer_order, title="layer (after block; emb = embeddings)"),
    )
    tooltip = [
        alt.Tooltip("layer_label:N", title="layer"), alt.Tooltip("position:Q"),
        alt.Tooltip("input:N", title="input token"), alt.Tooltip("top1:N", title="top-1"),
        alt.Tooltip("top1_prob:Q", format=".3f", title="p(top-1)"),
        alt.Tooltip("target_shown:N", title="target"), alt.Tooltip("target_rank:Q", title="target rank"),
        alt.Tooltip("target_prob:Q", format=".3g", title="p(target)"),
        alt.Tooltip("entropy:Q", format=".2f"), alt.Tooltip("kl_to_final:Q", format=".2f", title="KL to final"),
    ]
    rect = base.mark_rect(width=alt.expr(CELL_WIDTH_PX)).encode(
        color=alt.Color(f"{column}:Q", scale=scale, title=title, legend=_legend()),
        tooltip=tooltip,
    ).add_params(pick)
    text = _cell_text(base, "top1", alt.condition(alt.datum.dark_text, alt.value("black"), alt.value("white")),
                      tooltip)
    layers = [rect, text]
    if selected is not None:  # a black-and-white frame stays visible on every colour of every scale
        is_selected = (alt.datum.layer == selected[0]) & (alt.datum.position == selected[1])
        for colour, width in (("black", 5), ("white", 2)):
            layers.append(base.mark_rect(fill=None, stroke=colour, strokeWidth=width).transform_filter(is_selected))
    return _fit(alt.layer(*layers), len(pos_order))


def target_trajectories(targets: pd.DataFrame, prompt_column: str | None = None,
                        width: int = 235) -> alt.HConcatChart:
    """Rank (log, 1 on top) and probability of each target across layers at one position."""
    data = targets.assign(target_shown=targets.target.map(show_token), layer_label=targets.layer.map(layer_label))
    colour = alt.Color("target_shown:N", title="target", legend=alt.Legend(orient="bottom"),
                       scale=alt.Scale(range=OKABE_ITO))
    dash = (alt.StrokeDash(f"{prompt_column}:N", title=prompt_column,
                           legend=alt.Legend(symbolType="stroke", symbolStrokeColor="gray", symbolStrokeWidth=2,
                                             orient="bottom"))
            if prompt_column else alt.StrokeDash())
    base = alt.Chart(data).encode(
        x=alt.X("layer:Q", title="layer (0 = embeddings)"), color=colour, strokeDash=dash,
        tooltip=["layer_label", "target_shown", "target_rank", alt.Tooltip("target_prob:Q", format=".4f")]
        + ([prompt_column] if prompt_column else []),
    )
    rank = base.mark_line(point=True).encode(
        y=alt.Y("target_rank:Q", scale=alt.Scale(type="log", reverse=True), title="rank (1 = best, log)"))
    prob = base.mark_line(point=True).encode(y=alt.Y("target_prob:Q", title="probability"))
    return alt.hconcat(rank.properties(width=width, height=210), prob.properties(width=width, height=210))


def layer_profile(frame: pd.DataFrame, position: int) -> alt.Chart:
    """Entropy and KL to the final layer across layers at one position."""
    sub = frame[frame.position == position].melt(
        id_vars=["layer"], value_vars=["entropy", "kl_to_final"], var_name="statistic", value_name="nats")
    return alt.Chart(sub).mark_line(point=True).encode(
        x=alt.X("layer:Q", title="layer (0 = embeddings)"),
        y=alt.Y("nats:Q", scale=alt.Scale(type="symlog"), title="nats (symlog)",
                axis=alt.Axis(values=symlog_ticks(sub.nats), format="~g")),
        color=alt.Color("statistic:N", legend=alt.Legend(orient="bottom", title=None),
                        scale=alt.Scale(range=OKABE_ITO)),
        tooltip=["layer", "statistic", alt.Tooltip("nats:Q", format=".3f")],
    ).properties(width=480, height=300)


COMPARE_METRICS = {
    "top-1 changed": "top1_changed",
    "Δ target probability": "delta_target_prob",
    "Δ entropy": "delta_entropy",
    "Δ KL to final": "delta_kl_to_final",
}


INSERTED_FILL = "#cfe3f3"
"""What-if cells of B's positions without a counterpart in A (inserted tokens): no change to colour by."""


def _shown(token) -> str:
    return show_token(token) if isinstance(token, str) else "—"


def compare_heatmap(diff: pd.DataFrame, metric: str) -> alt.LayerChart:
    """What-if: layers x every position of prompt B; colour = change from prompt A, B's positions without a partner in
    A (``status`` "inserted") in their own light fill and marked "+" on the axis; text = B's top-1; a click selects a
    (layer, position_b) cell (selection :data:`SELECTION`)."""
    column = COMPARE_METRICS[metric]
    data = diff.copy()
    if "status" not in data:
        data["status"] = data.top1_changed.map({True: "changed", False: "same"})
    data["layer_label"] = data.layer.map(layer_label)
    data["pos_label"] = [
        f"{pb} +{_short(tb, 10)}" if status == "inserted" else
        f"{pb} {_short(tb, 10)}" if ta == tb else f"{pb} {_short(ta, 6)}→{_short(tb, 6)}"
        for pb, ta, tb, status in zip(data.position_b, data.token_a, data.token_b, data.status)]
    data["top1_a_shown"] = data.top1_a.map(_shown)
    data["top1_b_shown"] = data.top1_b.map(show_token)
    data["changed"] = data.status
    inserted = data.status == "inserted"
    data["white_text"] = False
    if column != "top1_changed" and (~inserted).any():
        data.loc[~inserted, "white_text"] = _strong_change(data.loc[~inserted, column])
    layer_order = [layer_label(v) for v in sorted(data.layer.unique(), reverse=True)]
    pos_order = list(dict.fromkeys(data.sort_values("position_b").pos_label))
    if column == "top1_changed":
        color = alt.Color("changed:N", title="top-1", legend=_legend(),
                          scale=alt.Scale(domain=["same", "changed", "inserted"],
                                          range=["#d9d9d9", "#e45756", INSERTED_FILL]))
    else:
        color = alt.Color(f"{column}:Q", scale=alt.Scale(scheme="redblue", domainMid=0, reverse=True),
                          title=metric, legend=_legend())
    pick = alt.selection_point(name=SELECTION, fields=["layer", "position_b"], on="click", clear=False)
    base = alt.Chart(data).encode(
        x=alt.X("pos_label:N", sort=pos_order, title="position in prompt B (+ = inserted, a→b = replaced)",
                axis=_x_axis()),
        y=alt.Y("layer_label:N", sort=layer_order, title="layer"),
        tooltip=["layer_label", "position_a", "position_b", "top1_a_shown", "top1_b_shown", "changed",
                 alt.Tooltip("delta_target_prob:Q", format=".3f"), alt.Tooltip("delta_entropy:Q", format=".2f"),
                 alt.Tooltip("delta_kl_to_final:Q", format=".2f")],
    )
    layers = []
    if column != "top1_changed" and inserted.any():  # a quantitative scale drops the rows it has no value for
        layers.append(base.mark_rect(width=alt.expr(CELL_WIDTH_PX), color=INSERTED_FILL)
                      .transform_filter(alt.datum.status == "inserted"))
    layers.append(base.mark_rect(width=alt.expr(CELL_WIDTH_PX)).encode(color=color).add_params(pick))
    layers.append(_cell_text(base, "top1_b_shown",
                             alt.condition(alt.datum.white_text, alt.value("white"), alt.value("black"))))
    return _fit(alt.layer(*layers), len(pos_order))


def _strong_change(values: pd.Series) -> pd.Series:
    """True where the diverging colour (0 in the middle, each side out to its extreme) is dark: white text there."""
    values = values.astype(float)
    high, low = max(values.max(), 1e-9), min(values.min(), -1e-9)
    return (values / high).where(values >= 0, values / low) > 0.6

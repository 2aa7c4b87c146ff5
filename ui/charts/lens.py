"""Altair builders of the Lens and Home pages (no Streamlit calls): each takes a tidy lens frame, returns a chart."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from ui.format import layer_label, show_token

# metric name shown to the user -> (frame column, colour scale, legend title)
HEATMAP_METRICS: dict[str, tuple[str, alt.Scale, str]] = {
    "top-1 probability": ("top1_prob", alt.Scale(scheme="viridis", domain=[0, 1]), "p(top-1)"),
    "target probability": ("target_prob", alt.Scale(scheme="viridis", domain=[0, 1]), "p(target)"),
    "target rank": ("target_rank", alt.Scale(type="log", scheme="viridis", reverse=True), "rank (1 = best)"),
    "entropy": ("entropy", alt.Scale(scheme="magma", reverse=True), "entropy (nats)"),
    "KL to final": ("kl_to_final", alt.Scale(scheme="magma", reverse=True), "KL(final‖layer) nats"),
}
SELECTION = "cell"


def _short(text: str, width: int = 8) -> str:
    shown = show_token(text)
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def heatmap_data(frame: pd.DataFrame) -> pd.DataFrame:
    """Add display columns to a lens frame (one row per layer x position)."""
    data = frame.copy()
    data["top1"] = data.top_tokens.str[0].map(show_token)
    data["top1_short"] = data.top_tokens.str[0].map(_short)
    data["top1_prob"] = data.top_probs.str[0]
    data["layer_label"] = data.layer.map(layer_label)
    data["input"] = data.token.map(show_token)
    data["pos_label"] = data.position.astype(str) + " " + data.token.map(lambda t: _short(t, 10))
    data["target_shown"] = data.target.map(show_token)
    return data.drop(columns=["top_tokens", "top_probs"])


def _light_cell(data: pd.DataFrame, column: str) -> pd.Series:
    """True where the colour scale is light, so the cell's text should be dark."""
    values = data[column].astype(float)
    if column in ("top1_prob", "target_prob"):
        t = values
    elif column == "target_rank":
        t = 1 - np.log(values) / max(np.log(values.max()), 1e-9)
    else:
        t = 1 - values / max(values.max(), 1e-9)
    return t > 0.6


def lens_heatmap(frame: pd.DataFrame, metric: str, selected: tuple[int, int] | None = None) -> alt.LayerChart:
    """Layers x positions: colour = ``metric``, text = the lens's top-1 token; click selects a cell."""
    column, scale, title = HEATMAP_METRICS[metric]
    data = heatmap_data(frame)
    data["dark_text"] = _light_cell(data, column)
    layer_order = [layer_label(v) for v in sorted(data.layer.unique(), reverse=True)]
    pos_order = [data.pos_label[data.position == p].iloc[0] for p in sorted(data.position.unique())]
    pick = alt.selection_point(name=SELECTION, fields=["layer", "position"], on="click", clear=False)
    base = alt.Chart(data).encode(
        x=alt.X("pos_label:N", sort=pos_order, title="position · input token",
                axis=alt.Axis(labelAngle=-45, labelLimit=120, labelOverlap=False)),
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
    rect = base.mark_rect().encode(
        color=alt.Color(f"{column}:Q", scale=scale, title=title),
        tooltip=tooltip,
    ).add_params(pick)
    text = base.mark_text(fontSize=10, baseline="middle").encode(
        text="top1_short:N",
        color=alt.condition(alt.datum.dark_text, alt.value("black"), alt.value("white")),
        tooltip=tooltip,
    )
    layers = [rect, text]
    if selected is not None:  # a black-and-white frame stays visible on every colour of every scale
        is_selected = (alt.datum.layer == selected[0]) & (alt.datum.position == selected[1])
        for colour, width in (("black", 5), ("white", 2)):
            layers.append(base.mark_rect(fill=None, stroke=colour, strokeWidth=width).transform_filter(is_selected))
    return alt.layer(*layers).properties(width=alt.Step(62), height=alt.Step(20))


def target_trajectories(targets: pd.DataFrame, prompt_column: str | None = None,
                        width: int = 235) -> alt.HConcatChart:
    """Rank (log, 1 on top) and probability of each target across layers at one position."""
    data = targets.assign(target_shown=targets.target.map(show_token), layer_label=targets.layer.map(layer_label))
    colour = alt.Color("target_shown:N", title="target", legend=alt.Legend(orient="bottom"))
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
        y=alt.Y("nats:Q", scale=alt.Scale(type="symlog"), title="nats (symlog)"),
        color=alt.Color("statistic:N", legend=alt.Legend(orient="bottom", title=None)),
        tooltip=["layer", "statistic", alt.Tooltip("nats:Q", format=".3f")],
    ).properties(width=480, height=300)


COMPARE_METRICS = {
    "top-1 changed": "top1_changed",
    "Δ target probability": "delta_target_prob",
    "Δ entropy": "delta_entropy",
    "Δ KL to final": "delta_kl_to_final",
}


def compare_heatmap(diff: pd.DataFrame, metric: str) -> alt.LayerChart:
    """What-if: layers x aligned positions of prompt B; colour = change from prompt A; text = B's top-1."""
    column = COMPARE_METRICS[metric]
    data = diff.copy()
    data["layer_label"] = data.layer.map(layer_label)
    data["pos_label"] = [
        f"{pb} {_short(tb, 10)}" if ta == tb else f"{pb} {_short(ta, 6)}→{_short(tb, 6)}"
        for pb, ta, tb in zip(data.position_b, data.token_a, data.token_b)]
    data["top1_a_shown"] = data.top1_a.map(show_token)
    data["top1_b_shown"] = data.top1_b.map(_short)
    data["changed"] = data.top1_changed.map({True: "changed", False: "same"})
    layer_order = [layer_label(v) for v in sorted(data.layer.unique(), reverse=True)]
    pos_order = list(dict.fromkeys(data.sort_values("position_b").pos_label))
    if column == "top1_changed":
        color = alt.Color("changed:N", scale=alt.Scale(domain=["same", "changed"], range=["#d9d9d9", "#e45756"]),
                          title="top-1")
    else:
        color = alt.Color(f"{column}:Q", scale=alt.Scale(scheme="redblue", domainMid=0, reverse=True),
                          title=metric)
    base = alt.Chart(data).encode(
        x=alt.X("pos_label:N", sort=pos_order, title="position in prompt B",
                axis=alt.Axis(labelAngle=-45, labelLimit=120, labelOverlap=False)),  # rotated: never overlap
        y=alt.Y("layer_label:N", sort=layer_order, title="layer"),
        tooltip=["layer_label", "position_a", "position_b", "top1_a_shown", "top1_b_shown", "changed",
                 alt.Tooltip("delta_target_prob:Q", format=".3f"), alt.Tooltip("delta_entropy:Q", format=".2f"),
                 alt.Tooltip("delta_kl_to_final:Q", format=".2f")],
    )
    rect = base.mark_rect().encode(color=color)
    text = base.mark_text(fontSize=10).encode(text="top1_b_shown:N", color=alt.value("black"))
    return alt.layer(rect, text).properties(width=alt.Step(62), height=alt.Step(20))

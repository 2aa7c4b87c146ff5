"""Altair builders of the Lens page's patching view (no Streamlit calls): a patching grid frame or a patch-lens frame
in, a layer x position heatmap out, laid out like the lens heatmap (ui/charts/lens.py)."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from ui.charts.lens import CELL_WIDTH_PX, _cell_text, _fit, _legend, _short, _strong_change, _x_axis
from ui.format import layer_label, show_token

GRID_COLOURS = {"effect": "effect (0 = corrupted, 1 = clean)", "value": "patched metric"}
"""What the patching heatmap can be coloured by -> legend title."""
CONE_STROKE = "#333333"


def _pos_labels(data: pd.DataFrame) -> list[str]:
    return [data.pos_label[data.position == p].iloc[0] for p in sorted(data.position.unique())]


def grid_data(frame: pd.DataFrame) -> pd.DataFrame:
    """Display columns of a patching frame: labels (the corrupted token; "clean→corrupted" where they differ)."""
    data = frame.copy()
    data["layer_label"] = data.layer.map(layer_label)
    data["input"] = data.token.map(show_token)
    data["clean_input"] = data.clean_token.map(show_token)
    data["pos_label"] = [f"{p} {_short(t, 10)}" if t == c else f"{p} {_short(c, 6)}→{_short(t, 6)}"
                         for p, t, c in zip(data.position, data.token, data.clean_token)]
    return data


def patching_heatmap(frame: pd.DataFrame, colour: str = "effect", metric_label: str = "metric") -> alt.LayerChart:
    """Layers (emb = embeddings at the bottom) x positions; colour = the effect (diverging, 0 in the middle) or the
    patched metric (diverging around 0); tooltips with both. Cells with no effect (NaN) are grey."""
    data = grid_data(frame)
    column = "effect" if colour == "effect" else "value"
    data["has_value"] = data[column].notna()
    data["white_text"] = False
    if data.has_value.any():
        data.loc[data.has_value, "white_text"] = _strong_change(data.loc[data.has_value, column])
    data["shown"] = data[column].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    layer_order = [layer_label(v) for v in sorted(data.layer.unique(), reverse=True)]
    pos_order = _pos_labels(data)
    title = GRID_COLOURS[colour] if colour == "effect" else metric_label
    base = alt.Chart(data).encode(
        x=alt.X("pos_label:N", sort=pos_order, axis=_x_axis(),
                title="position · corrupted token (clean→corrupted where they differ)"),
        y=alt.Y("layer_label:N", sort=layer_order, title="layer patched (emb = embeddings)"),
        tooltip=[alt.Tooltip("layer_label:N", title="layer"), alt.Tooltip("position:Q"),
                 alt.Tooltip("clean_input:N", title="clean token"), alt.Tooltip("input:N", title="corrupted token"),
                 alt.Tooltip("value:Q", format=".4g", title=metric_label), alt.Tooltip("effect:Q", format=".3f")],
    )
    scale = alt.Scale(scheme="redblue", domainMid=0, reverse=True)
    layers = [base.mark_rect(width=alt.expr(CELL_WIDTH_PX), color="#d9d9d9").transform_filter("!datum.has_value"),
              base.mark_rect(width=alt.expr(CELL_WIDTH_PX)).encode(
                  color=alt.Color(f"{column}:Q", scale=scale, title=title, legend=_legend()))
              .transform_filter("datum.has_value"),
              _cell_text(base, "shown", alt.condition(alt.datum.white_text, alt.value("white"), alt.value("black")))]
    return _fit(alt.layer(*layers), len(pos_order))


def patch_lens_data(frame: pd.DataFrame) -> pd.DataFrame:
    """Display columns of a patch-lens frame: the patched top-1 (starred where changed), the unpatched top-1."""
    data = frame.drop(columns=["top_tokens", "top_probs"]).copy()
    data["top1"] = frame.top_tokens.str[0].map(show_token)
    data["top1_prob"] = frame.top_probs.str[0]
    data["top1_before"] = data.top1_unpatched.map(show_token)
    data["shown"] = [f"{t}*" if changed else t for t, changed in zip(data.top1, data.changed)]
    data["layer_label"] = data.layer.map(layer_label)
    data["input"] = data.token.map(show_token)
    data["pos_label"] = data.position.astype(str) + " " + data.token.map(lambda t: _short(t, 10))
    data["target_shown"] = data.target.map(show_token)
    data["white_text"] = _strong_change(data.delta_target_prob) if len(data) else []
    data["status"] = np.where(data.changed, "changed", np.where(data.in_cone, "in the cone", "outside"))
    return data


def patch_lens_heatmap(frame: pd.DataFrame, target_cell: tuple[int, int]) -> alt.LayerChart:
    """The patched run under the lens: text = top-1 (* = changed from the unpatched run), colour = Δ target
    probability (diverging, 0 in the middle); the cells the patch can reach (its cone) outlined, the patched cell
    framed black and white."""
    data = patch_lens_data(frame)
    layer_order = [layer_label(v) for v in sorted(data.layer.unique(), reverse=True)]
    pos_order = _pos_labels(data)
    base = alt.Chart(data).encode(
        x=alt.X("pos_label:N", sort=pos_order, title="position · target prompt token", axis=_x_axis()),
        y=alt.Y("layer_label:N", sort=layer_order, title="layer (emb = embeddings)"),
        tooltip=[alt.Tooltip("layer_label:N", title="layer"), alt.Tooltip("position:Q"),
                 alt.Tooltip("input:N", title="input token"), alt.Tooltip("top1:N", title="top-1 patched"),
                 alt.Tooltip("top1_before:N", title="top-1 unpatched"), alt.Tooltip("status:N"),
                 alt.Tooltip("target_shown:N", title="target"),
                 alt.Tooltip("target_prob:Q", format=".4f", title="p(target) patched"),
                 alt.Tooltip("target_prob_unpatched:Q", format=".4f", title="p(target) unpatched"),
                 alt.Tooltip("delta_target_prob:Q", format="+.4f", title="Δ p(target)")],
    )
    rect = base.mark_rect(width=alt.expr(CELL_WIDTH_PX)).encode(
        color=alt.Color("delta_target_prob:Q", scale=alt.Scale(scheme="redblue", domainMid=0, reverse=True),
                        title="Δ p(target) patched − unpatched", legend=_legend()))
    cone = base.mark_rect(fill=None, stroke=CONE_STROKE, strokeWidth=1, strokeDash=[3, 2]).transform_filter(
        "datum.in_cone")
    text = _cell_text(base, "shown", alt.condition(alt.datum.white_text, alt.value("white"), alt.value("black")))
    layers = [rect, cone, text]
    is_target = (alt.datum.layer == int(target_cell[0])) & (alt.datum.position == int(target_cell[1]))
    for colour, width in (("black", 5), ("white", 2)):
        layers.append(base.mark_rect(fill=None, stroke=colour, strokeWidth=width).transform_filter(is_target))
    return _fit(alt.layer(*layers), len(pos_order))

"""Layout of the Lens heatmaps: they fill their container, adapt text and labels to the cell width, show a legend.

The spec checks read the Vega-Lite spec; the drawing checks render it with vl-convert's Vega (as the PNG/SVG
downloads do) at a given width in place of the browser's container, and read the SVG.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET

import altair as alt
import pandas as pd
import pytest

from ui.charts import lens

SVG = "{http://www.w3.org/2000/svg}"


def lens_frame(n_layers: int = 3, n_pos: int = 10, rank_from: int = 1) -> pd.DataFrame:
    """A lens result's frame (the columns the charts use), with long top-1 tokens."""
    rows = []
    for layer in range(n_layers + 1):
        for pos in range(n_pos):
            p = (layer + 1) / (n_layers + 2)
            rows.append({"layer": layer, "position": pos, "token": f" token{pos}",
                         "top_tokens": [" interpretability", " b"], "top_probs": [p, (1 - p) / 2], "target": " a",
                         "target_rank": rank_from + 10 * (n_layers - layer), "target_prob": p, "entropy": 2.0 - p,
                         "kl_to_final": float(n_layers - layer)})
    return pd.DataFrame(rows)


def diff_frame(n_layers: int = 3, n_pos: int = 10) -> pd.DataFrame:
    """A what-if comparison frame (the columns compare_heatmap uses)."""
    return pd.DataFrame([
        {"layer": layer, "position_a": pos, "position_b": pos, "token_a": f" t{pos}", "token_b": f" t{pos}",
         "top1_a": " x", "top1_b": " interpretability", "top1_changed": bool((layer + pos) % 2),
         "delta_target_prob": 0.1 * (layer - 1), "delta_entropy": 0.2, "delta_kl_to_final": -0.3}
        for layer in range(n_layers + 1) for pos in range(n_pos)])


def all_heatmaps(n_pos: int = 10) -> list[tuple[str, alt.LayerChart]]:
    """Every heatmap the Lens page draws: one per lens metric (with a selected cell) and per what-if metric."""
    charts = [(m, lens.lens_heatmap(lens_frame(n_pos=n_pos), m, selected=(1, n_pos - 1))) for m in lens.HEATMAP_METRICS]
    return charts + [(m, lens.compare_heatmap(diff_frame(n_pos=n_pos), m)) for m in lens.COMPARE_METRICS]


@pytest.mark.parametrize(("metric", "chart"), all_heatmaps(), ids=lambda v: v if isinstance(v, str) else "")
def test_heatmaps_fill_the_container_width_with_readable_rows_and_a_legend_on_top(metric: str,
                                                                               chart: alt.LayerChart) -> None:
    out = chart.to_dict()
    assert out["width"] == "container" and out["height"] == {"step": lens.ROW_PX}
    assert out["autosize"] == {"type": "fit-x", "contains": "padding", "resize": True}
    assert 18 <= lens.ROW_PX <= 20
    legend = out["layer"][0]["encoding"]["color"]["legend"]
    assert legend["orient"] == "top" and legend["direction"] == "horizontal"  # never takes width from the cells
    x_axis = out["layer"][0]["encoding"]["x"]["axis"]
    assert x_axis["labelOverlap"] is False and x_axis["labelExpr"] == lens.LABEL_EXPR  # thinned by LABEL_EXPR


@pytest.mark.parametrize(("metric", "chart"), all_heatmaps(), ids=lambda v: v if isinstance(v, str) else "")
def test_cell_text_is_limited_to_the_cell_and_hidden_in_narrow_cells(metric: str, chart: alt.LayerChart) -> None:
    text = chart.to_dict()["layer"][1]["mark"]
    assert text["type"] == "text"
    assert text["limit"] == {"expr": lens.TEXT_LIMIT_PX} and "bandwidth('x')" in lens.TEXT_LIMIT_PX
    assert text["fontSize"] == {"expr": lens.TEXT_FONT_PX} and text["opacity"] == {"expr": lens.TEXT_OPACITY}


def test_the_click_selection_and_the_selected_frame_are_kept() -> None:
    out = lens.lens_heatmap(lens_frame(), "entropy", selected=(2, 3)).to_dict()
    assert [p["name"] for p in out["params"]] == [lens.SELECTION] == ["cell"]
    frames = [layer["mark"] for layer in out["layer"][2:]]
    assert [(f["stroke"], f["strokeWidth"]) for f in frames] == [("black", 5), ("white", 2)]


def draw(chart: alt.LayerChart, width: int | None) -> ET.Element:
    """The chart as SVG drawn by vl-convert, ``width`` px wide in all (None: as a download, with no container)."""
    import vl_convert as vlc

    spec = chart.to_dict()
    if width is not None:
        spec["width"] = width  # what the container's width is in the browser (autosize fit-x: the whole chart)
    return ET.fromstring(vlc.vegalite_to_svg(json.dumps(spec)))


def x_labels(svg: ET.Element) -> list[tuple[float, float, str]]:
    """(x, angle, text) of each x-axis label, left to right (hidden ones have an empty text)."""
    axis = next(g for g in svg.iter(f"{SVG}g") if (g.get("aria-label") or "").startswith("X-axis"))
    labels = []
    for group in axis.iter(f"{SVG}g"):
        if "role-axis-label" in (group.get("class") or ""):
            for text in group.iter(f"{SVG}text"):
                move = re.search(r"translate\(([-0-9.e]+),", text.get("transform", ""))
                turn = re.search(r"rotate\(([-0-9.e]+)\)", text.get("transform", ""))
                labels.append((float(move.group(1)), float(turn.group(1)) if turn else 0.0, text.text or ""))
    return sorted(labels)


def cell_texts(svg: ET.Element) -> list[ET.Element]:
    """The cells' visible text elements."""
    return [t for g in svg.iter(f"{SVG}g") if "mark-text role-mark" in (g.get("class") or "")
            for t in g.iter(f"{SVG}text") if float(t.get("opacity", "1")) > 0 and t.text]


@pytest.mark.parametrize(("n_pos", "width", "angle", "text_px"),
                         [(10, 1500, 0, 11), (24, 900, -45, 9), (48, 900, -45, None), (48, 600, -90, None),
                          (48, 420, -90, None)])
def test_labels_and_text_adapt_to_the_cell_width(n_pos: int, width: int, angle: float, text_px: int | None) -> None:
    svg = draw(lens.lens_heatmap(lens_frame(n_pos=n_pos), "top-1 probability"), width)
    assert float(svg.get("width")) == width  # fit-x: the whole chart is as wide as its container
    labels = x_labels(svg)
    assert len(labels) == n_pos and {a for _, a, _ in labels} == {angle}
    shown = [(x, text) for x, _, text in labels if text]
    assert shown[-1][1].startswith(f"{n_pos - 1} ")  # the last position (the next-token prediction) is labelled
    band = (labels[-1][0] - labels[0][0]) / (n_pos - 1)
    gap = min(b[0] - a[0] for a, b in zip(shown, shown[1:]))
    assert gap >= (band if angle == 0 else lens.LABEL_MIN_PX) - 0.01  # vertical labels: thinned to 12 px apart
    texts = cell_texts(svg)
    if text_px is None:
        assert band < lens.TEXT_MIN_CELL_PX and not texts  # too narrow to read: no text
    else:
        assert texts and {float(t.get("font-size").rstrip("px")) for t in texts} == {text_px}
        shown = {t.text for t in texts}
        if band > 100:
            assert shown == {"␣interpretability"}
        else:  # cut to the cell's width
            assert all(t.endswith("…") for t in shown), shown


@pytest.mark.parametrize("width", [260, 420, 900])
@pytest.mark.parametrize("build", [lambda: lens.lens_heatmap(lens_frame(), "KL to final"),
                                   lambda: lens.compare_heatmap(diff_frame(), "top-1 changed")])
def test_the_legend_is_drawn_inside_the_chart_at_any_width(width: int, build) -> None:
    svg = draw(build(), width)
    legends = [g for g in svg.iter(f"{SVG}g") if "role-legend" in (g.get("class") or "").split()]
    assert len(legends) == 1
    assert float(svg.get("width")) == width  # the legend did not widen the chart past its container


def test_a_download_without_a_container_is_as_wide_as_before() -> None:
    n_pos = 10
    svg = draw(lens.lens_heatmap(lens_frame(n_pos=n_pos), "entropy"), None)
    assert float(svg.get("width")) == lens.EXPORT_CELL_PX * n_pos + 120
    labels = x_labels(svg)
    assert math.isclose(labels[1][0] - labels[0][0], lens.EXPORT_CELL_PX, rel_tol=0.15)


def test_light_cells_get_dark_text_over_the_data_range() -> None:
    """The rank and entropy scales span the shown data: their lightest end is the smallest value, whatever it is."""
    data = lens.heatmap_data(lens_frame(rank_from=30))
    dark = lens._light_cell(data, "target_rank")
    assert dark[data.target_rank == data.target_rank.min()].all()
    assert not dark[data.target_rank == data.target_rank.max()].any()
    assert lens._light_cell(data, "entropy")[data.entropy == data.entropy.min()].all()


def test_strongly_changed_what_if_cells_get_white_text() -> None:
    """The diverging scale is dark at both of its extremes, light around 0."""
    white = lens._strong_change(pd.Series([-0.5, -0.1, 0.0, 0.05, 0.2]))
    assert white.tolist() == [True, False, False, False, True]

"""The chart builders of ui/charts/: tidy frame in, a valid Vega-Lite chart out, and no Streamlit call."""

from __future__ import annotations

import math
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import pytest

from core.analyses.depth.sections import SECTIONS, TABLES
from ui.charts import depth, extraction, lens, lens_training

CHARTS_DIR = Path(__file__).resolve().parents[2] / "ui" / "charts"


def spec(chart: alt.TopLevelMixin) -> dict:
    """The chart's Vega-Lite spec (to_dict validates it against the schema)."""
    return chart.to_dict()


def test_chart_modules_make_no_streamlit_calls() -> None:
    for path in sorted(CHARTS_DIR.glob("*.py")):
        assert "streamlit" not in path.read_text(encoding="utf-8"), path.name


def lens_frame(n_layers: int = 3, n_pos: int = 2) -> pd.DataFrame:
    """A lens result's frame: one row per layer x position (the columns run_lens returns that the charts use)."""
    rows = []
    for layer in range(n_layers + 1):
        for pos in range(n_pos):
            p = (layer + 1) / (n_layers + 2)
            rows.append({"layer": layer, "position": pos, "token": f" t{pos}", "top_tokens": [" a", " b"],
                         "top_probs": [p, (1 - p) / 2], "target": " a", "target_rank": n_layers + 1 - layer,
                         "target_prob": p, "entropy": 2.0 - p, "kl_to_final": float(n_layers - layer)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("metric", list(lens.HEATMAP_METRICS))
def test_lens_heatmap_colours_by_the_metric_and_frames_the_selected_cell(metric: str) -> None:
    chart = lens.lens_heatmap(lens_frame(), metric, selected=(2, 1))
    out = spec(chart)
    assert out["layer"][0]["encoding"]["color"]["field"] == lens.HEATMAP_METRICS[metric][0]
    assert len(out["layer"]) == 4  # cells, their text, and the selected cell's black and white frame
    assert out["layer"][0]["encoding"]["y"]["sort"] == ["3", "2", "1", "emb"]  # the last layer on top
    assert len(lens.lens_heatmap(lens_frame(), metric).to_dict()["layer"]) == 2  # no selection, no frame


def test_target_trajectories_dash_by_prompt_only_when_asked() -> None:
    targets = lens_frame()[["layer", "position", "target", "target_rank", "target_prob"]]
    plain = spec(lens.target_trajectories(targets))
    both = spec(lens.target_trajectories(pd.concat([targets.assign(prompt="A"), targets.assign(prompt="B")]),
                                         prompt_column="prompt"))
    assert "field" not in plain["hconcat"][0]["encoding"].get("strokeDash", {})
    assert both["hconcat"][0]["encoding"]["strokeDash"]["field"] == "prompt"


def test_layer_profile_keeps_one_position() -> None:
    chart = lens.layer_profile(lens_frame(n_layers=3, n_pos=2), position=1)
    spec(chart)
    assert len(chart.data) == 2 * 4  # entropy and KL at each of the 4 layers of position 1
    assert set(chart.data.statistic) == {"entropy", "kl_to_final"}


def curves(groups: tuple[str, ...] = ("DET", "NOUN")) -> pd.DataFrame:
    rows = [{"group": g, "k": k, "mean_layer": float(i + k), "std_layer": 0.5, "n": 3}
            for i, g in enumerate(groups) for k in (1, 10, 100)]
    rows.append({"group": "NOUN", "k": 1000, "mean_layer": np.nan, "std_layer": np.nan, "n": 0})  # never reached
    return pd.DataFrame(rows)


def test_depth_curves_leave_out_a_k_no_example_reached() -> None:
    chart = depth.curves_chart(curves(), "tag")
    spec(chart)
    assert len(chart.data) == 6 and not chart.data.mean_layer.isna().any()
    assert chart.to_dict()["encoding"]["y"]["scale"]["type"] == "log"


def depth_frames() -> dict[str, dict[str, pd.DataFrame]]:
    """Small frames of every section's tables that the figures draw from."""
    summary = pd.DataFrame({"task": ["a", "a", "b"], "example": [0, 1, 0], "identify_rel": [0.2, np.nan, 0.3],
                            "decision_rel": [0.6, 0.7, 0.8]})
    option_rows = pd.DataFrame([{"task": t, "option": o, "layer": layer, "prob": 0.1 * layer, "rank": 3 - layer}
                                for t in "ab" for o in ("yes", "no") for layer in range(3)])
    buckets = depth.BUCKETS
    shares = pd.DataFrame([{"column": c, "bucket": b, "share": 0.25, "count": 1}
                           for c in ("0", "1", "final") for b in buckets])
    flips = pd.DataFrame([{"layer": layer, "bucket": b, "flip_rate": 0.5, "n": 2} for layer in range(3)
                          for b in buckets])
    return {"pos": {"curves": curves()}, "facts": {"curves": curves(("1-token, token 1",))},
            "options": {"summary": summary, "rows": option_rows},
            "frequency": {"shares": shares, "flips": flips}}


def test_depth_figures_cover_every_section_and_draw_from_its_tables() -> None:
    assert set(depth.FIGURES) == set(SECTIONS)
    frames = depth_frames()
    for section, figures in depth.FIGURES.items():
        for table, build in figures:
            assert table in TABLES[section], (section, table)
            spec(build(frames[section]))


def test_options_chart_drops_examples_whose_options_never_filled_the_top() -> None:
    chart = depth.options_chart(depth_frames()["options"]["summary"])
    assert len(chart.data) == 5  # 3 decisions + 2 identifications (one example never identified its options)
    assert set(chart.data.measure) == {"options identified", "decision settled"}


def test_option_probability_chart_averages_over_examples() -> None:
    rows = depth_frames()["options"]["rows"]
    doubled = pd.concat([rows.assign(example=0), rows.assign(example=1, prob=rows.prob + 0.2)])
    chart = depth.option_probability_chart(doubled)
    data = chart.data
    first = data[(data.task == "a") & (data.option == "yes") & (data.layer == 1)]
    assert math.isclose(float(first.prob.iloc[0]), 0.1 + 0.1, rel_tol=1e-9)  # mean of 0.1 and 0.3


@pytest.mark.parametrize("metric", ["precision_at_1", "surprisal_patched", "surprisal_original"])
def test_extraction_metric_chart_axis(metric: str) -> None:
    summary = pd.DataFrame({"layer": [0, 1, 0, 1], "method": ["logit", "logit", "question", "question"],
                            metric: [0.1, 0.9, 0.2, 0.8], "n": 5})
    y = spec(extraction.metric_chart(summary, metric))["encoding"]["y"]
    assert y["field"] == metric
    if metric == "precision_at_1":
        assert y["scale"] == {"domain": [0, 1]}
    else:
        assert y["scale"] == {"type": "symlog"}


def test_kl_chart_labels_the_embeddings() -> None:
    frame = pd.DataFrame({"layer": [0, 1, 0, 1], "lens": ["tuned", "tuned", "affine", "affine"],
                          "kl": [3.0, 1.0, 2.5, 0.8]})
    chart = lens_training.kl_chart(frame)
    spec(chart)
    assert list(chart.data.layer_label) == ["emb", "1", "emb", "1"]


def test_symlog_axes_tick_where_the_data_is() -> None:
    from ui.format import symlog_ticks

    assert symlog_ticks([0.0, 3.2, 9.7]) == [0, 2, 5, 10]  # a 0-10 nats range keeps its ticks, none crowding 0
    assert symlog_ticks([0.05, 8.0]) == [0, 0.1, 0.2, 0.5, 1, 2, 5, 10]  # small values keep the small ticks
    assert symlog_ticks([1.2, 25.0]) == [0, 1, 2, 5, 10, 20, 50]
    assert symlog_ticks([0.05]) == [0, 0.1]
    assert symlog_ticks([float("nan"), 40.0])[-1] == 50
    frame = lens_frame()
    spec = lens.layer_profile(frame, 1).to_dict()
    assert spec["encoding"]["y"]["axis"]["values"][:3] == [0, 0.5, 1]  # the profile's values start near 1

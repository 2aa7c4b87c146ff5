"""Download buttons for what is shown: tables as CSV/JSON, charts as PNG/SVG (rendered on click)."""

from __future__ import annotations

import json
import re

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

CONTEXT_KEY = "_download_context"
"""What every download's file name starts with on this run: page, model, and (pages that read one prompt) a prompt
slug -- set by the page frame and :func:`name_prompt`."""


def slug(text: str, words: int = 5, limit: int = 40) -> str:
    """A file-name-safe short form: the first ``words`` words, lower case, [a-z0-9-] only."""
    kept = re.sub(r"[^a-z0-9]+", "-", " ".join(str(text).lower().split()[:words])).strip("-")
    return kept[:limit].strip("-") or "x"


def set_context(page: str, model: str) -> None:
    """Called by the page frame: downloads on this page are named ``layerscope_<page>_<model>_...``."""
    st.session_state[CONTEXT_KEY] = ["layerscope", slug(page, 3), slug(model.split(",")[0].split("/")[-1], 3, 30)]


def name_prompt(prompt: str) -> None:
    """For pages that analyse one prompt: its slug joins the download names."""
    context = st.session_state.get(CONTEXT_KEY, ["layerscope"])
    st.session_state[CONTEXT_KEY] = context[:3] + [slug(prompt)]


def file_stem(name: str) -> str:
    """``name`` behind the page / model / prompt context: "layerscope_lens_bundled_the-capital-of_lens_heatmap"."""
    return "_".join(st.session_state.get(CONTEXT_KEY, ["layerscope"]) + [name])


def _cell(value):
    """A CSV cell: scalars as they are, lists / arrays / dicts as JSON (never a Python repr)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    return value


def csv_text(frame: pd.DataFrame) -> str:
    """``frame`` as CSV with every cell a scalar or JSON."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object:
            out[column] = out[column].map(_cell)
    return out.to_csv(index=False)


def _png(chart: alt.TopLevelMixin) -> bytes:
    """The chart as a PNG at twice the screen size."""
    import vl_convert as vlc  # heavy (a bundled JavaScript engine): loaded only when an image is downloaded

    return vlc.vegalite_to_png(chart.to_json(), scale=2)


def _svg(chart: alt.TopLevelMixin) -> str:
    """The chart as SVG text."""
    import vl_convert as vlc  # heavy (a bundled JavaScript engine): loaded only when an image is downloaded

    return vlc.vegalite_to_svg(chart.to_json())


def table_downloads(frame: pd.DataFrame, name: str, key: str) -> None:
    """CSV and JSON buttons for ``frame``."""
    row = st.container(horizontal=True)
    stem = file_stem(name)
    row.download_button("CSV", csv_text(frame), f"{stem}.csv", "text/csv", key=f"{key}_csv",
                         on_click="ignore", icon=":material/download:")
    records = json.loads(frame.to_json(orient="records", force_ascii=False))
    row.download_button("JSON", json.dumps(records, ensure_ascii=False, indent=1), f"{stem}.json",
                          "application/json", key=f"{key}_json", on_click="ignore", icon=":material/download:")


def chart_downloads(chart: alt.TopLevelMixin, frame: pd.DataFrame, name: str, key: str) -> None:
    """PNG, SVG and CSV (the chart's data) buttons; images are rendered only when clicked."""
    row = st.container(horizontal=True)
    stem = file_stem(name)
    row.download_button("PNG", lambda: _png(chart), f"{stem}.png", "image/png", key=f"{key}_png",
                            on_click="ignore", icon=":material/image:")
    row.download_button("SVG", lambda: _svg(chart), f"{stem}.svg", "image/svg+xml", key=f"{key}_svg",
                            on_click="ignore", icon=":material/image:")
    row.download_button("CSV", csv_text(frame), f"{stem}.csv", "text/csv", key=f"{key}_csv",
                            on_click="ignore", icon=":material/download:")


def show_chart(chart: alt.TopLevelMixin, frame: pd.DataFrame, name: str, stretch: bool = False) -> None:
    """Draw ``chart`` with its PNG / SVG / CSV downloads (``name`` = file stem and widget key). ``stretch``: the
    chart takes its container's width (a chart in one of two columns, which at 1280 px is narrower than the
    chart's own width)."""
    st.altair_chart(chart, width="stretch" if stretch else "content")
    chart_downloads(chart, frame, name, key=f"dl_{name}")


def tables_expander(frames: dict[str, pd.DataFrame], name: str) -> None:
    """Every frame of a result in a "Tables" expander, each with CSV / JSON downloads."""
    with st.expander("Tables"):
        for table, frame in frames.items():
            st.markdown(f"**{table}**")
            st.dataframe(frame, hide_index=True, width="stretch", height=220)
            table_downloads(frame, f"{name}_{table}", key=f"dl_{name}_{table}_table")

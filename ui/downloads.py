"""Download buttons for what is shown: tables as CSV/JSON, charts as PNG/SVG (rendered on click)."""

from __future__ import annotations

import json

import altair as alt
import pandas as pd
import streamlit as st


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
    row.download_button("CSV", frame.to_csv(index=False), f"{name}.csv", "text/csv", key=f"{key}_csv",
                         on_click="ignore", icon=":material/download:")
    records = json.loads(frame.to_json(orient="records", force_ascii=False))
    row.download_button("JSON", json.dumps(records, ensure_ascii=False, indent=1), f"{name}.json",
                          "application/json", key=f"{key}_json", on_click="ignore", icon=":material/download:")


def chart_downloads(chart: alt.TopLevelMixin, frame: pd.DataFrame, name: str, key: str) -> None:
    """PNG, SVG and CSV (the chart's data) buttons; images are rendered only when clicked."""
    row = st.container(horizontal=True)
    row.download_button("PNG", lambda: _png(chart), f"{name}.png", "image/png", key=f"{key}_png",
                            on_click="ignore", icon=":material/image:")
    row.download_button("SVG", lambda: _svg(chart), f"{name}.svg", "image/svg+xml", key=f"{key}_svg",
                            on_click="ignore", icon=":material/image:")
    row.download_button("CSV", frame.to_csv(index=False), f"{name}.csv", "text/csv", key=f"{key}_csv",
                            on_click="ignore", icon=":material/download:")


def show_chart(chart: alt.TopLevelMixin, frame: pd.DataFrame, name: str) -> None:
    """Draw ``chart`` with its PNG / SVG / CSV downloads (``name`` = file stem and widget key)."""
    st.altair_chart(chart, width="content")
    chart_downloads(chart, frame, name, key=f"dl_{name}")


def tables_expander(frames: dict[str, pd.DataFrame], name: str) -> None:
    """Every frame of a result in a "Tables" expander, each with CSV / JSON downloads."""
    with st.expander("Tables"):
        for table, frame in frames.items():
            st.markdown(f"**{table}**")
            st.dataframe(frame, hide_index=True, width="stretch", height=220)
            table_downloads(frame, f"{name}_{table}", key=f"dl_{name}_{table}_table")

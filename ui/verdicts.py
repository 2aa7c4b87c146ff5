"""Verdict rows on a page: one line per claim with its icon, wording and the numbers it was judged on."""

from __future__ import annotations

from typing import Iterable

import pandas as pd
import streamlit as st

from ui.downloads import table_downloads

ICONS = {True: ":material/check_circle:", False: ":material/cancel:", None: ":material/help:"}
HOW = ("A claim **holds** when its whole 95 % interval lies on the claim's side of the threshold, **does not hold** "
       "when the whole interval lies on the other side, and is **cannot tell at this n** when the interval straddles "
       "it. A **check** is true by construction (a sanity check of the code), not a finding about the model.")


def show_verdicts(rows: Iterable[dict], name: str, *, note: str = "") -> None:
    """Each claim (``rows`` as :func:`core.analyses.uncertainty.verdict_row` makes them) as one line, checks
    apart from findings; a caption saying how the wording is decided; the table with its downloads."""
    rows = list(rows)
    if not rows:
        st.info("Nothing to judge yet: run the sections above.")
        return
    for row in rows:
        if row.get("kind") == "check":
            st.markdown(f"{ICONS[row['holds']]} Check (true by construction): {row['claim']} — {row['verdict']} "
                        f"({row['evidence']}).")
        else:
            st.markdown(f"{ICONS[row['holds']]} **{row['claim']}** — {row['verdict']} ({row['evidence']}).")
    st.caption(HOW + (" " + note if note else ""))
    with st.expander("Verdict table", expanded=False):
        frame = pd.DataFrame(rows)
        st.dataframe(frame, hide_index=True, width="stretch")
        table_downloads(frame, f"{name}_verdicts", key=f"dl_{name}_verdicts")


def method_differences(paper: str, items: Iterable[str]) -> None:
    """An expander listing every way this page's method differs from the paper's code, each with why."""
    with st.expander(f"How this page differs from {paper}", expanded=False):
        st.markdown("\n".join(f"- {item}" for item in items))

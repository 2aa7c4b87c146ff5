"""Building blocks of the Home page: the links to every analysis page and a quick lens look at the prompt."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.analyses.lens import LensResult
from ui import cached
from ui.charts import lens as charts
from ui.downloads import name_prompt
from ui.format import layer_label, show_token
from ui.menu import ANALYSES
from ui.page import stop_page
from ui.sidebar import Selection
from ui.state import shared_params

QUICK_TOP_K = 5


def page_links() -> None:
    """One card per analysis page (title, icon, one-line description); the links keep the model and prompt."""
    cols = st.columns(3)
    for i, (path, label, icon, blurb) in enumerate(ANALYSES):
        with cols[i % 3].container(border=True):
            st.page_link(path, label=label, icon=icon, query_params=shared_params())
            st.caption(blurb)


def _last_position_table(final: pd.DataFrame) -> pd.DataFrame:
    """Lens rows of the last position (one per layer) -> layer, its top-1 token and probability, the answer's rank."""
    return final.assign(
        layer=final.layer.map(layer_label), top1=final.top_tokens.str[0].map(show_token),
        p=final.top_probs.str[0].round(3), rank_of_answer=final.target_rank,
    )[["layer", "top1", "p", "rank_of_answer"]]


def _lens_result(selection: Selection) -> LensResult:
    """The logit lens at the sidebar prompt's last position (every layer); a bad prompt (empty, too long) ends the page
    with its message."""
    name_prompt(selection.prompt)
    try:
        n_tokens = len(cached.prompt_tokens(selection.spec.key(), selection.prompt))
        return cached.lens_result(selection.spec.key(), selection.prompt, QUICK_TOP_K, (), positions=(n_tokens - 1,))
    except (ValueError, MemoryError) as err:
        stop_page(str(err))


def quick_look(selection: Selection) -> None:
    """The model's answer at the last position: its rank and probability at every layer, and each layer's top-1."""
    st.subheader("Quick look: the last position")
    result = _lens_result(selection)
    last = len(result.tokens) - 1
    final = result.frame[(result.frame.position == last)].sort_values("layer")
    answer = final.target.iloc[-1]
    st.markdown(
        f"After **{show_token(result.tokens[-1])}** the model predicts **{show_token(answer)}** "
        f"(p = {final.target_prob.iloc[-1]:.3f}). Below: that token's rank and probability at every layer, "
        "and each layer's own top-1 guess."
    )
    left, right = st.columns([2, 1])
    with left:
        st.altair_chart(charts.target_trajectories(result.targets[result.targets.position == last], width=220),
                        width="content")
    with right:
        st.dataframe(_last_position_table(final), hide_index=True, height=300, width="stretch")

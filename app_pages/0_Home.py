"""Layerscope home (the default page of app.py's menu): what it is, the model and prompt, a quick lens view,
and the analysis pages."""

import streamlit as st

from ui.page import page, stop_page
from ui.views import home as home_view

INTRO = (
    "See how a transformer builds its next-token prediction **layer by layer**. Pick a model and type a "
    "prompt in the sidebar; each page runs the model once, caches what it captured, and shows one analysis. "
    "Everything runs locally: the default model, SmolLM2-135M-Instruct, ships with the app."
)

with page("Layerscope", ":material/layers:", require_model=False, remote_ok=True) as selection:
    st.markdown(INTRO)
    home_view.page_links()  # shown even when the model failed to load
    if selection is None:
        stop_page()  # the sidebar said why the model could not be loaded
    home_view.quick_look(selection)

"""Depth: how the model uses its depth — early guesses, later refinement (Gupta et al. 2025)."""

import streamlit as st

from ui import cached
from ui.views import depth as depth_view, lens_training
from ui.sidebar import sidebar
from ui.state import bound, write_url

st.set_page_config(page_title="Depth · Layerscope", page_icon=":material/stacked_line_chart:", layout="wide")
URL_KEYS = ["model", "prompt", "depth_lens", "depth_seed"]
SECTIONS = {"pos": "Parts of speech", "facts": "Multi-token facts", "options": "Option-constrained tasks",
            "frequency": "Frequency buckets and decision flips"}

selection = sidebar()
st.title("Depth: guess, then refine")
st.caption(
    "For each example, the rank of the model's final prediction under the lens at every layer. Parts of speech "
    "and facts are among correctly predicted tokens only; ℓ*(k) is the first layer where that rank is ≤ k. "
    "Options: when the answer options fill the top ranks, and when the choice among them settles. Frequency: "
    "which frequency bucket each layer's top-1 falls in, and how often it is overturned by the end."
)
if selection is None:
    write_url(URL_KEYS)
    st.stop()
spec_key = selection.spec.key()
c1, c2 = st.columns(2)
lens_name = bound(c1.selectbox, "depth_lens", "logit", "Lens", options=["logit", "tuned"],
                  format_func=cached.LENS_NAMES.get)
seed = int(bound(c2.number_input, "depth_seed", 42, "Seed", parse=int, min_value=0, max_value=2**31 - 1))
try:
    cached.build_lens(spec_key, lens_name)
except ValueError as err:
    st.error(str(err))
    lens_training.panel(spec_key)
    write_url(URL_KEYS)
    st.stop()

results = {}
tabs = st.tabs(list(SECTIONS.values()) + ["Verdict"])
for section, tab in zip(SECTIONS, tabs):
    with tab:
        frames = depth_view.section_job(spec_key, lens_name, section, seed)
        if frames is not None:
            results[section] = frames
            depth_view.show_section(section, frames)
with tabs[-1]:
    depth_view.show_verdicts(results)
write_url(URL_KEYS)

"""Top-k order: transformers settle their top tokens in order (Lioubashevski et al., "Looking Beyond the Top-1")."""

import streamlit as st

from ui.views import topk_more as topk_more_view, topk as topk_view
from ui.sidebar import sidebar
from ui.state import write_url

st.set_page_config(page_title="Top-k order · Layerscope", page_icon=":material/format_list_numbered:",
                   layout="wide")
URL_KEYS = ["model", "prompt"] + topk_view.URL_KEYS
TABS = ["Saturation", "Random-init baseline", "Probing", "Intervention", "Early exit", "Better LM",
        "Other modalities"]

selection = sidebar()
st.title("Top-k order: the top tokens settle in order")
st.caption(
    "Logit lens at every block output l0 (after block l0+1). The saturation layer of the rank-i token is the "
    "earliest layer from which slot i of the lens holds the final rank-i token at every later layer (held "
    "everywhere = 0). Positions whose top-1 settles late (s_0 > int(0.85·L)) are filtered out. Texts: the bundled "
    "Wikipedia evaluation paragraphs. The prompt in the sidebar is not used here."
)
if selection is None:
    write_url(URL_KEYS)
    st.stop()
spec_key = selection.spec.key()
params = topk_view.controls()
try:
    params.check()
except ValueError as err:
    st.error(str(err))
    write_url(URL_KEYS)
    st.stop()

tabs = dict(zip(TABS, st.tabs(TABS)))
with tabs["Saturation"]:
    frames = topk_view.section_job(spec_key, "saturation", params)
    if frames is not None:
        topk_view.show_saturation(frames, spec_key, params)
with tabs["Random-init baseline"]:
    if selection.spec.random_init:
        st.info("This is already the random-init twin: pick the trained model in the sidebar to compare the two.")
    else:
        st.caption("The same analyses on the untrained twin (same config and tokenizer, default initialisation).")
        frames = topk_view.section_job(spec_key, "baseline", params)
        if frames is not None:
            topk_view.show_baseline(frames)
with tabs["Probing"]:
    frames = topk_view.section_job(spec_key, "probing", params)
    if frames is not None:
        topk_view.show_probing(frames, params)
with tabs["Intervention"]:
    topk_more_view.intervention_tab(spec_key)
with tabs["Early exit"]:
    frames = topk_view.section_job(spec_key, "early-exit", params)
    if frames is not None:
        topk_view.show_early_exit(frames, spec_key, params)
with tabs["Better LM"]:
    frames = topk_view.section_job(spec_key, "better-lm", params)
    if frames is not None:
        topk_view.show_better_lm(frames)
with tabs["Other modalities"]:
    topk_more_view.modalities_tab()
write_url(URL_KEYS)

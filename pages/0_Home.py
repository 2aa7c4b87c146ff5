"""Layerscope home (the default page of app.py's menu): what it is, the model and prompt, a quick lens view,
and the analysis pages."""

import streamlit as st

from ui import cached
from ui.charts import lens as charts
from ui.format import layer_label, show_token
from ui.sidebar import sidebar
from ui.menu import ANALYSES
from ui.state import shared_params, write_url

st.set_page_config(page_title="Layerscope", page_icon=":material/layers:", layout="wide")
URL_KEYS = ["model", "prompt"]

selection = sidebar()
st.title("Layerscope")
st.markdown(
    "See how a transformer builds its next-token prediction **layer by layer**. Pick a model and type a "
    "prompt in the sidebar; each page runs the model once, caches what it captured, and shows one analysis. "
    "Everything runs locally: the default model, SmolLM2-135M-Instruct, ships with the app."
)

cols = st.columns(3)
for i, (path, label, icon, blurb) in enumerate(ANALYSES):
    with cols[i % 3].container(border=True):
        st.page_link(path, label=label, icon=icon, query_params=shared_params())
        st.caption(blurb)

if selection is None:
    write_url(URL_KEYS)
    st.stop()

st.subheader("Quick look: the last position")
try:
    result = cached.lens_result(selection.spec.key(), selection.prompt, 5, ())
except (ValueError, MemoryError) as err:
    st.error(str(err))
    write_url(URL_KEYS)
    st.stop()

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
    table = final.assign(
        layer=final.layer.map(layer_label), top1=final.top_tokens.str[0].map(show_token),
        p=final.top_probs.str[0].round(3), rank_of_answer=final.target_rank,
    )[["layer", "top1", "p", "rank_of_answer"]]
    st.dataframe(table, hide_index=True, height=300, width="stretch")
write_url(URL_KEYS)

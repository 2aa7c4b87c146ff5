"""Lens: what each layer would predict, at every position of the prompt."""

import streamlit as st

from ui import cached, lens_view
from ui.downloads import table_downloads
from ui.format import strided_layers
from ui.sidebar import sidebar
from ui.state import set_value, url_value, write_url

st.set_page_config(page_title="Lens · Layerscope", page_icon="🔭", layout="wide")
URL_KEYS = ["model", "prompt", "color", "top_k", "target", "stride", "positions", "cell", "whatif", "prompt_b"]

selection = sidebar()
st.title("Lens")
st.caption(
    "The logit lens reads the residual stream after every block through the model's own final norm and "
    "unembedding: what would the model predict if it stopped here? Rows are layers (emb = embeddings, "
    "l = after block l), columns are prompt positions, each cell shows that layer's top-1 next token."
)
if selection is None:
    write_url(URL_KEYS)
    st.stop()

session = selection.session
n_layers = session.adapter.n_layers
opts = lens_view.options(n_layers)
try:
    result = cached.lens_result(selection.spec.key(), selection.prompt, opts.top_k, opts.targets)
except (ValueError, MemoryError) as err:
    st.error(str(err))
    write_url(URL_KEYS)
    st.stop()
for note in result.notes:
    st.info(note)

n_pos = len(result.tokens)
layers = strided_layers(n_layers, opts.stride)
first, last = lens_view.position_window(n_pos)
shown = result.frame[result.frame.layer.isin(layers) & result.frame.position.between(first, last)]

cell = lens_view.current_cell(n_layers, n_pos)
cell = lens_view.heatmap(shown, opts.metric, cell)
set_value("cell", f"{cell[0]},{cell[1]}")

st.subheader("Selected cell")
st.caption("Click a cell in the heatmap, or pick it here.")
lens_view.cell_picker(cell, list(range(n_layers + 1)), n_pos, result.tokens)
lens_view.cell_details(result, cell)

with st.expander("Full table (every layer × position)"):
    st.dataframe(result.frame, hide_index=True, width="stretch", height=300)
    table_downloads(result.frame, "lens", key="dl_lens_table")

st.subheader("What if?")
whatif = st.toggle("Compare with an edited prompt", value=url_value("whatif", "0") == "1", key="w_whatif")
set_value("whatif", "1" if whatif else "0")
if whatif:
    try:
        lens_view.what_if(selection.spec.key(), selection.prompt, result, opts)
    except (ValueError, MemoryError) as err:
        st.error(str(err))
write_url(URL_KEYS)

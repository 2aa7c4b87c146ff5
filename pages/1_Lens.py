"""Lens: what each layer would predict, at every position of the prompt."""

import streamlit as st

from ui import cached
from ui.views import lens_training, lens as lens_view
from ui.downloads import table_downloads
from ui.format import strided_layers
from ui.sidebar import sidebar
from ui.state import set_value, url_value, write_url

st.set_page_config(page_title="Lens · Layerscope", page_icon=":material/layers:", layout="wide")
URL_KEYS = ["model", "prompt", "lens", "lens_b", "identity_prompt", "question_prompt", "color", "top_k", "target",
            "stride", "positions", "cell", "whatif", "prompt_b"]

selection = sidebar()
st.title("Lens")
st.caption(
    "Read the residual stream after every block as a next-token distribution: what would the model predict "
    "if it stopped here? Rows are layers (emb = embeddings, l = after block l), columns are prompt positions, "
    "each cell shows that layer's top-1 token. The logit lens uses the model's own final norm and unembedding; "
    "the tuned and affine lenses learn a map per layer first; the patchscopes patch the state into a target "
    "prompt and let the rest of the model read it."
)
if selection is None:
    write_url(URL_KEYS)
    st.stop()

session = selection.session
n_layers = session.adapter.n_layers
opts = lens_view.options(n_layers)
spec_key = selection.spec.key()
try:
    result = lens_view.fetch(spec_key, selection.prompt, opts, opts.lens)
    other = lens_view.fetch(spec_key, selection.prompt, opts, opts.lens_b) if opts.lens_b != "none" else None
except (ValueError, MemoryError) as err:
    st.error(str(err))
    if opts.lens in ("tuned", "affine") or opts.lens_b in ("tuned", "affine"):
        lens_training.panel(spec_key)
    write_url(URL_KEYS)
    st.stop()
for note in result.notes:
    st.info(note)

n_pos = len(result.tokens)
layers = strided_layers(n_layers, opts.stride)
first, last = lens_view.position_window(n_pos)

def visible(frame):
    return frame[frame.layer.isin(layers) & frame.position.between(first, last)]


cell = lens_view.current_cell(n_layers, n_pos)
if other is None:
    cell = lens_view.heatmap(visible(result.frame), opts.metric, cell)
else:
    sides = st.columns(2) if last - first < 10 else (st.container(), st.container())
    with sides[0]:
        st.markdown(f"**{cached.LENS_NAMES[opts.lens]}**")
        cell = lens_view.heatmap(visible(result.frame), opts.metric, cell)
    with sides[1]:
        st.markdown(f"**{cached.LENS_NAMES[opts.lens_b]}**")
        cell = lens_view.heatmap(visible(other.frame), opts.metric, cell, name="lens_b")
set_value("cell", f"{cell[0]},{cell[1]}")

st.subheader("Selected cell")
st.caption("Click a cell in the heatmap, or pick it here.")
lens_view.cell_picker(cell, list(range(n_layers + 1)), n_pos, result.tokens)
lens_view.cell_details(result, cell, other, (opts.lens, opts.lens_b))

with st.expander("Full table (every layer × position)"):
    st.dataframe(result.frame, hide_index=True, width="stretch", height=300)
    table_downloads(result.frame, "lens", key="dl_lens_table")

st.subheader("What if?")
whatif = st.toggle("Compare with an edited prompt", value=url_value("whatif", "0") == "1", key="w_whatif")
set_value("whatif", "1" if whatif else "0")
if whatif:
    try:
        lens_view.what_if(spec_key, selection.prompt, result, opts)
    except (ValueError, MemoryError) as err:
        st.error(str(err))
if {"tuned", "affine"} & {opts.lens, opts.lens_b}:
    with st.expander("Learned lenses: training and held-out KL"):
        lens_training.panel(spec_key)
write_url(URL_KEYS)

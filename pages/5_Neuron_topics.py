"""Neuron topics: neurons as superposed topic models (Lim & Lauw, EMNLP 2023)."""

import streamlit as st

from core.analyses.topics.vocab import MODES
from ui.views import topics as tv
from ui.downloads import chart_downloads, table_downloads
from ui.sidebar import sidebar
from ui.state import bound, write_url

st.set_page_config(page_title="Neuron topics · Layerscope", page_icon=":material/hub:", layout="wide")
URL_KEYS = ["model", "prompt", "topics_mode", "topics_block", "topics_unit", "topics_seed"]

selection = sidebar()
st.title("Neuron topics: superposed topic models")
st.caption(
    "A unit's vocabulary distribution β (the logits it alone produces), its top and bottom τ tokens mapped to "
    "words of a reference corpus, the NPMI graph among those words, disjoint word sets from the star heuristic, "
    "and for each set the 10 words of maximal mean pairwise NPMI (coherence), solved exactly as an integer "
    "program (SciPy milp / HiGHS). The random baseline puts a seeded permutation of the vocabulary in place of β."
)
if selection is None:
    write_url(URL_KEYS)
    st.stop()
spec_key, adapter = selection.spec.key(), selection.session.adapter
c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
mode = bound(c1.selectbox, "topics_mode", "hi-c", "Mode", options=list(MODES), format_func=MODES.get)
n_units = adapter.d_mlp if mode.startswith("hi") else adapter.d_model
block = int(bound(c2.number_input, "topics_block", adapter.n_layers // 2, "Block", parse=int, min_value=1,
                  max_value=adapter.n_layers, help="1-based block number (the app's labels: emb, 1 … L)."))
unit = int(bound(c3.number_input, "topics_unit", 0, "Neuron" if mode.startswith("hi") else "Dimension", parse=int,
                 min_value=0, max_value=n_units - 1))
seed = int(bound(c4.number_input, "topics_seed", 0, "Baseline seed", parse=int, min_value=0, max_value=2**31 - 1))
where = (f"MLP neuron {unit} of block {block}: its output direction (row {unit} of the down-projection as "
         "[d_mlp, d_model], plus the projection's bias where it has one, as GPT-2's c_proj)"
         if mode.startswith("hi") else f"residual dimension {unit} entering block {block} "
         f"(= after {'the embeddings' if block == 1 else f'block {block - 1}'})")
L = adapter.n_layers
runs = {"hi-c": f"blocks {block + 1}…{L}" if block < L else "no later block", "hi-i": "no block",
        "lo-c": f"blocks {block}…{L}", "lo-i": f"block {block} only"}[mode]
st.markdown(f"**{MODES[mode].split(':')[0]}** — {where}, injected as a one-token sequence, run through {runs}, "
            "then the final norm and the unembedding.")
params = tv.settings()
try:
    tv.check(params)
except ValueError as err:
    st.error(str(err))
    write_url(URL_KEYS)
    st.stop()
ref = tv.reference(spec_key, params)
if ref is None:
    write_url(URL_KEYS)
    st.stop()
tv.describe_reference(ref, params)
layer = block - 1
neuron_tab, scan_tab, compare_tab = st.tabs(["Neuron", "Find interesting neurons", "Real vs random"])
with neuron_tab:
    real_col, random_col = st.columns([3, 2])
    with real_col:
        st.subheader("This unit")
        real = tv.unit_job(spec_key, ref, mode, layer, unit, params, None)
    with random_col:
        st.subheader(f"Random baseline (seed {seed})")
        rand = tv.unit_job(spec_key, ref, mode, layer, unit, params, seed)
    if real is not None:
        for note in real.notes:
            st.warning(note)
        with real_col:
            tv.show_sets(real.sets, real.summary, f"topics_{mode}_b{block}_u{unit}", "topics_real")
    if rand is not None:
        with random_col:
            tv.show_sets(rand.sets, rand.summary, f"topics_random_{seed}", "topics_random")
    if real is not None:
        g1, g2 = st.columns([2, 3])
        pol = g1.radio("Graph of", ["pos", "neg"], horizontal=True, key="w_topics_graph",
                       format_func={"pos": "top τ pool", "neg": "bottom τ pool"}.get)
        only_sets = g2.checkbox("Only words in star sets", key="w_topics_only_sets")
        edges = real.edges[real.edges.polarity == pol]
        edges = edges[(edges.set_a > 0) & (edges.set_b > 0)] if only_sets else edges
        if edges.empty:
            st.info("No NPMI edge within the thresholds among words with at least κ lower such edges"
                    + (" and in star sets." if only_sets else "."))
        else:
            nodes, lines = tv.graph_frames(edges)
            chart = tv.graph_chart(nodes, lines)
            st.caption(f"NPMI edges within θ among words of degree ≥ κ lower (the {len(lines)} strongest of "
                       f"{len(edges)}); colour = star set; drag to pan, scroll to zoom.")
            st.altair_chart(chart, width="content")
            chart_downloads(chart, lines, f"topics_graph_{pol}", key="dl_topics_graph")
        with st.expander("Pools and edges"):
            st.dataframe(real.pools, hide_index=True, width="stretch", height=240)
            table_downloads(real.pools, "topics_pools", key="dl_topics_pools")
            table_downloads(real.edges, "topics_edges", key="dl_topics_edges")
with scan_tab:
    st.caption(f"Every unit of block {block} ({n_units}): pools and star sets of both polarities, without the "
               "exact topics; most word sets first. Show one in the Neuron tab with the button below.")
    scan = tv.scan_job(spec_key, ref, mode, layer, params)
    if scan is not None:
        tv.pick_from_scan(scan)
        st.dataframe(scan, hide_index=True, width="stretch", height=360)
        table_downloads(scan, f"topics_scan_{mode}_b{block}", key="dl_topics_scan")
with compare_tab:
    st.caption("Units drawn at random (seeded) from the block against the same number of random-permutation "
               "baselines, through the same pipeline; two-sided Mann-Whitney U tests. " + tv.MEASURED)
    n = int(st.number_input("units sampled from the block", 2, n_units, min(20, n_units), key="w_topics_cmp_n"))
    frames = tv.compare_job(spec_key, ref, mode, layer, n, seed, params)
    if frames is not None:
        tv.show_comparison(frames, f"topics_compare_{mode}_b{block}")
write_url(URL_KEYS)

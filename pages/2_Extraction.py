"""Next-token extraction: how well each lens reads the model's own prediction from one residual vector."""

import streamlit as st

from ui import cached
from ui import job_panel as jobs
from ui.views import extraction as extraction_view, lens_training
from ui.downloads import chart_downloads, table_downloads
from ui.sidebar import sidebar
from ui.state import write_url

st.set_page_config(page_title="Extraction · Layerscope", page_icon=":material/target:", layout="wide")
URL_KEYS = ["model", "prompt", "corpus", "n", "seed"]

selection = sidebar()
st.title("Next-token extraction")
st.caption(
    "Patchscopes §4.1 and logitscope: for each text one random position, the model's own top-1 there (y*), and "
    "for every layer and method the distribution read from that single residual vector. Precision@1 asks "
    "whether the reading's top-1 is y*; the two surprisals are the two codebases' definitions (they are not "
    "comparable with each other). The prompt in the sidebar is not used here."
)
if selection is None:
    write_url(URL_KEYS)
    st.stop()
spec_key = selection.spec.key()
request = extraction_view.controls(spec_key)
if cached.trained_lenses(spec_key) is None:
    with st.expander("The tuned and affine lenses need training for this model first"):
        lens_training.panel(spec_key)
if request is None:
    write_url(URL_KEYS)
    st.stop()

key = extraction_view.job_key(spec_key, request)
job = cached.job_registry().get(key)
if job is None:
    st.button("Run", type="primary", key="run_extraction",
              on_click=lambda: cached.job_registry().start(key, "Extraction",
                                                           extraction_view.work(spec_key, request)))
    st.caption(f"{len(request.texts)} texts from {request.corpus_label}; about 0.5 s per text on 2 CPU cores. "
               "Results are cached on disk.")
    write_url(URL_KEYS)
    st.stop()
if not job.done:
    jobs.watch(key)
    write_url(URL_KEYS)
    st.stop()
if job.error:
    st.error(f"The extraction failed: {job.error}")
    if st.button("Try again"):
        cached.job_registry().forget(key)
        st.rerun()
    write_url(URL_KEYS)
    st.stop()

rows = job.result
summary = extraction_view.summarise(rows)
st.subheader(f"{rows.text.nunique()} texts, {summary.layer.nunique()} layers, {summary.method.nunique()} methods")
extraction_view.verdicts(summary)
st.caption("Methods: " + "; ".join(f"**{m}** = {cached.LENS_NAMES[m]}" for m in sorted(summary.method.unique())))
for metric, description in extraction_view.METRICS.items():
    st.markdown(f"**{description}**")
    chart = extraction_view.metric_chart(summary, metric)
    st.altair_chart(chart, width="content")
    chart_downloads(chart, summary, f"extraction_{metric}", key=f"dl_{metric}")
with st.expander("Table (per layer and method)", expanded=False):
    st.dataframe(summary, hide_index=True, width="stretch")
    table_downloads(summary, "extraction_summary", key="dl_extraction_table")
    table_downloads(rows, "extraction_rows", key="dl_extraction_rows")
write_url(URL_KEYS)

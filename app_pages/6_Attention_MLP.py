"""Attention -> MLP: which attention heads switch on a next-token neuron (Neo, Cohen & Barez 2024)."""

import streamlit as st

from ui.page import page, stop_page
from ui.views import attention_mlp as view

with page("Attention → MLP", ":material/hub:", view.URL_KEYS, heading=view.HEADING,
          caption=view.CAPTION) as selection:
    view.translate_old_link()  # a link with the old 0-based amlp_layers opens the same neurons
    spec_key, session = selection.spec.key(), selection.session
    view.symbols()
    view.method_notes()
    settings = view.settings(session)
    if settings is None:
        stop_page()
    neurons = view.neuron_table(session, settings)
    if neurons.empty:
        stop_page("No neuron passes the filter in these blocks: try other blocks or more neurons per block.",
                  "warning")
    row = view.pick_neuron(neurons)
    result = view.neuron_job(spec_key, neurons, settings, int(row.block), int(row.neuron))
    if result is not None:
        view.show_neuron(result, row.token, settings.scan.keep, view.neuron_key(row.block, row.neuron))
    st.subheader("All neurons in the table")
    view.show_reference(selection.spec.source if not selection.spec.random_init else "")
    summary = view.summary_job(spec_key, neurons, settings)
    if summary is not None:
        view.show_summary(summary, settings.scan.keep)

"""Neuron topics: neurons as superposed topic models (Lim & Lauw, EMNLP 2023)."""

import streamlit as st

from ui.page import page, stop_page
from ui.views import topics as tv

with page("Neuron topics", ":material/hub:", tv.URL_KEYS, heading=tv.HEADING, caption=tv.CAPTION) as selection:
    spec_key = selection.spec.key()
    tv.header()
    unit = tv.unit_controls(selection.session)
    params = tv.settings()
    try:
        tv.check(params)
    except ValueError as err:
        stop_page(str(err))
    ref = tv.reference(spec_key, params)
    if ref is None:
        stop_page()
    tv.describe_reference(ref, params)
    tv.method_notes()
    neuron_tab, scan_tab, compare_tab = st.tabs(tv.TABS)
    with neuron_tab:
        tv.neuron_tab(spec_key, ref, unit, params)
    with scan_tab:
        tv.scan_tab(spec_key, ref, unit, params)
    with compare_tab:
        tv.compare_tab(spec_key, ref, unit, params)

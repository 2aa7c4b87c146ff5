"""Top-k order: transformers settle their top tokens in order (Lioubashevski et al., "Looking Beyond the Top-1")."""

import streamlit as st

from ui.page import page, stop_page
from ui.views import topk as topk_view
from ui.views import topk_more as topk_more_view

TABS = ["Saturation", "Random-init baseline", "Probing", "Intervention", "Early exit", "Better LM",
        "Other modalities", "Verdict"]

with page("Top-k order", ":material/format_list_numbered:", topk_view.URL_KEYS + topk_more_view.URL_KEYS,
          heading="Top-k order: the top tokens settle in order", caption=topk_view.PAGE_CAPTION) as selection:
    spec_key = selection.spec.key()
    topk_view.header(spec_key)
    params = topk_view.controls()
    try:
        params.check()
    except ValueError as err:
        stop_page(str(err))

    tabs = dict(zip(TABS, st.tabs(TABS)))
    results = {}
    with tabs["Saturation"]:
        results["saturation"] = topk_view.section_tab(spec_key, "saturation", params)
    with tabs["Random-init baseline"]:
        if selection.spec.random_init:
            st.info("This is already the random-init twin: pick the trained model in the sidebar to compare the two.")
        else:
            st.caption("The same analyses on the untrained twin (same config and tokenizer, default initialisation).")
            results["baseline"] = topk_view.section_tab(spec_key, "baseline", params)
    with tabs["Probing"]:
        results["probing"] = topk_view.section_tab(spec_key, "probing", params)
    with tabs["Intervention"]:
        results["intervention"] = topk_more_view.intervention_tab(spec_key)
    with tabs["Early exit"]:
        results["early-exit"] = topk_view.section_tab(spec_key, "early-exit", params)
    with tabs["Better LM"]:
        results["better-lm"] = topk_view.section_tab(spec_key, "better-lm", params)
    with tabs["Other modalities"]:
        kind, results[kind] = topk_more_view.modalities_tab()
    with tabs["Verdict"]:
        topk_view.show_verdicts(results)

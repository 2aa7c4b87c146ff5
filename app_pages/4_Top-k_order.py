"""Top-k order: transformers settle their top tokens in order (Lioubashevski et al., "Looking Beyond the Top-1")."""

import streamlit as st

from ui.page import page, stop_page
from ui.views import topk as topk_view
from ui.views import topk_more as topk_more_view

TABS = ["Saturation", "Random-init baseline", "Probing", "Intervention", "Early exit", "Better LM",
        "Other modalities"]

with page("Top-k order", ":material/format_list_numbered:", topk_view.URL_KEYS,
          heading="Top-k order: the top tokens settle in order", caption=topk_view.PAGE_CAPTION) as selection:
    spec_key = selection.spec.key()
    params = topk_view.controls()
    try:
        params.check()
    except ValueError as err:
        stop_page(str(err))

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

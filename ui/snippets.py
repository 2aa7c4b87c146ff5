""""Copy as code": an expander holding the Python that reproduces a view with the core API (:mod:`core.snippets`
builds the text); ``st.code`` gives it a copy button. The code is drawn only while the expander is open (opening it
reruns the page, which is cached): a closed one costs the browser nothing, where a highlighted code block on every
rerun of every view took a tenth of the Lens page's drawing time in headless Chromium."""

from __future__ import annotations

import streamlit as st


def show_snippet(code: str, label: str = "Copy as code", key: str = "view") -> None:
    """An expander ``label`` with ``code`` as Python (its copy button in the corner), drawn while it is open; run
    it at the repository root. ``key`` tells a page's snippets apart (it stays open across reruns)."""
    box = st.expander(label, icon=":material/code:", key=f"snippet_{key}", on_change="rerun")
    if box.open:
        with box:
            st.caption("Python that reproduces this view with Layerscope's core API (run it at the repository root).")
            st.code(code, language="python")

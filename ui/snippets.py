""""Copy as code": an expander holding the Python that reproduces a view with the core API (:mod:`core.snippets`
builds the text); ``st.code`` gives it a copy button."""

from __future__ import annotations

import streamlit as st


def show_snippet(code: str, label: str = "Copy as code") -> None:
    """An expander ``label`` with ``code`` as Python (its copy button in the corner); run it at the repository
    root."""
    with st.expander(label, icon=":material/code:"):
        st.caption("Python that reproduces this view with Layerscope's core API (run it at the repository root).")
        st.code(code, language="python")

"""Layerscope core: pure Python + torch, never imports Streamlit.

Usable from a notebook::

    from core.models import ModelSpec, load_session
    from core.lenses import LogitLens
    from core.stats import lens_stats
    session = load_session(ModelSpec())
    trace = session.trace("The capital of France is")
    stats = lens_stats(session, trace, LogitLens(session))
"""

CORE_VERSION = "1"

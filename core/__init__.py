"""Layerscope core: pure Python + torch, never imports Streamlit.

Usable from a notebook::

    from core.model.loading import ModelSpec
    from core.model.session import ModelSession
    from core.lenses import LogitLens
    from core.lenses.stats import lens_stats
    session = ModelSession.load(ModelSpec())
    trace = session.trace("The capital of France is")
    stats = lens_stats(session, trace, LogitLens(session.adapter))
"""

CORE_VERSION = "2"  # 2: lens rows in fixed position tiles, the last row = the model output (issue 11)

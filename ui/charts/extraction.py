"""Altair builders of the Next-token extraction page (no Streamlit calls): a tidy frame in, a chart out."""

from __future__ import annotations

import altair as alt
import pandas as pd

from ui.charts import categorical
from ui.format import symlog_ticks

METHOD_ORDER = ["logit", "affine", "tuned", "identity", "question", "question_bare"]


def metric_chart(summary: pd.DataFrame, metric: str) -> alt.Chart:
    """Summary rows (layer, method, ``metric``, n) -> one line per method across source layers.

    Surprisals go on a symlog axis: the embeddings' logit-lens reading is off by two orders of magnitude.
    """
    present = list(summary.method.unique())
    methods = [m for m in METHOD_ORDER if m in present] + sorted(m for m in present if m not in METHOD_ORDER)
    scale = alt.Scale(domain=[0, 1]) if metric == "precision_at_1" else alt.Scale(type="symlog")
    return alt.Chart(summary).mark_line(strokeWidth=2).encode(
        x=alt.X("layer:Q", title="source layer (0 = embeddings)"),
        y=alt.Y(f"{metric}:Q", scale=scale,
                title="precision@1" if metric == "precision_at_1" else f"{metric.replace('_', ' ')} (nats, symlog)",
                axis=alt.Axis() if metric == "precision_at_1"
                else alt.Axis(values=symlog_ticks(summary[metric]), format="~g")),
        **categorical(methods, "method", "method", dashes=True),
        tooltip=["layer", "method", alt.Tooltip(f"{metric}:Q", format=".3f"), "n"],
    ).properties(width=560, height=300)

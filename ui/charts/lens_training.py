"""Altair builder of the learned-lens panel (no Streamlit calls): held-out KL per layer and lens."""

from __future__ import annotations

import altair as alt
import pandas as pd

from ui.format import layer_label, symlog_ticks


def kl_chart(frame: pd.DataFrame) -> alt.Chart:
    """Rows (layer, lens, kl) -> one line per lens: held-out KL(final ‖ lens) across layers, symlog axis."""
    data = frame.assign(layer_label=frame.layer.map(layer_label))
    return alt.Chart(data).mark_line(point=True).encode(
        x=alt.X("layer:Q", title="layer (0 = embeddings)"),
        y=alt.Y("kl:Q", scale=alt.Scale(type="symlog"), title="held-out KL(final ‖ lens), nats (symlog)",
                axis=alt.Axis(values=symlog_ticks(frame.kl))),
        color=alt.Color("lens:N"), tooltip=["layer_label", "lens", alt.Tooltip("kl:Q", format=".3f")],
    ).properties(width=520, height=260)

"""Altair chart builders, one module per analysis: each takes a tidy frame, returns a chart, makes no Streamlit call.

Categorical colours come from :data:`OKABE_ITO` (Okabe & Ito's colour-blind-safe palette), so no two series of a
chart are told apart by red/green alone; line charts with several series also vary the dash, and their legends show
the line (:data:`LINE_LEGEND`)."""

from __future__ import annotations

import altair as alt

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000", "#F0E442"]
"""blue, orange, bluish green, reddish purple, vermillion, sky blue, black, yellow (yellow last: faint on white)."""

DASHES = [[1, 0], [6, 3], [2, 2], [6, 3, 1, 3], [8, 4, 2, 4], [1, 4], [10, 2], [4, 4]]
"""solid, dashed, dotted, dash-dot, long dash-dot, sparse dots, long dash, even dash."""


def line_legend(title: str | None) -> alt.Legend:
    """A legend whose symbols are short lines (so a dashed series shows its dash), not bare labels."""
    return alt.Legend(title=title, symbolType="stroke", symbolStrokeWidth=2.5, symbolSize=400, labelLimit=260)


def categorical(domain: list, title: str | None, field: str, dashes: bool = False) -> dict:
    """``color`` (and with ``dashes`` ``strokeDash``) encodings for ``field`` over ``domain``, in the Okabe-Ito
    palette, sharing one legend with line symbols."""
    legend = line_legend(title)
    out = {"color": alt.Color(f"{field}:N", scale=alt.Scale(domain=domain, range=OKABE_ITO[:len(domain)]),
                              legend=legend, sort=domain)}
    if dashes:
        out["strokeDash"] = alt.StrokeDash(f"{field}:N", scale=alt.Scale(domain=domain, range=DASHES[:len(domain)]),
                                           legend=legend, sort=domain)
    return out

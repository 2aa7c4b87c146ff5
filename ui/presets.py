"""Two buttons that set a page's controls at once: "Quick look" (seconds to a minute) and "Paper settings" (the
paper's sample sizes, or the most the bundled data allows). The values go through the URL-bound state, so the link
reopens the preset like any other setting."""

from __future__ import annotations

from typing import Any, Mapping

import streamlit as st

from ui.state import set_value

LABELS = {"quick": "Quick look", "paper": "Paper settings"}


def _apply(values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        set_value(name, value)


def preset_buttons(presets: Mapping[str, Mapping[str, Any]], key: str, notes: Mapping[str, str] = {}) -> None:
    """One button per preset (``presets``: "quick" / "paper" -> {URL name: value}); a click sets every named control
    before the rerun. ``notes`` says what each preset means (sizes, sources), shown as the button's help."""
    row = st.container(horizontal=True, vertical_alignment="center")  # side by side, whatever the page width
    for name, values in presets.items():
        row.button(LABELS.get(name, name), key=f"preset_{key}_{name}", on_click=_apply, args=(dict(values),),
                   help=notes.get(name))
    current = {name for name, values in presets.items()
               if all(st.session_state.get(f"ls_{k}") == v for k, v in values.items())}
    if current:
        row.caption("Now: " + ", ".join(LABELS.get(n, n) for n in current) + ".")

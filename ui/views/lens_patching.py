"""The Lens page's patching view: activation patching from the prompt (clean) into an edited one (corrupted), per
layer x position, and the patch lens (one residual cell of one prompt written into another, read with the lens)."""

from __future__ import annotations

import streamlit as st

from core.analyses.patching import (METRIC_KINDS, METRIC_LABELS, PATCH_SITES, SITE_LABELS, grid_snippet,
                                    patch_lens_snippet)
from ui import cached, cached_patching
from ui.charts import lens_patching as charts
from ui.downloads import chart_downloads, table_downloads
from ui.format import layer_label, show_token
from ui.snippets import show_snippet
from ui.state import bound, set_value, shown, url_choice, url_flag, url_value

URL_KEYS = ["patch_prompt_b", "patch_metric", "patch_token", "patch_other", "patch_site", "patch_run",
            "patch_color", "patch_source", "patch_target", "patch_lens_run"]
"""The URL keys this view binds (besides the model and prompt every page keeps)."""

_FORM_FIELDS = {"patch_prompt_b": None, "patch_metric": "logit_diff", "patch_token": "", "patch_other": "",
                "patch_site": "resid"}
"""Form fields -> default (None: the prompt itself): kept in the URL, applied when Run is pressed."""


def _parse_cell(text: str) -> tuple[int, int]:
    layer, pos = (int(x) for x in str(text).split(","))
    return layer, pos


def _form_defaults(prompt: str) -> dict:
    return {name: prompt if default is None else default for name, default in _FORM_FIELDS.items()}


def _apply_form() -> None:
    for name in _FORM_FIELDS:
        set_value(name, st.session_state[f"w_{name}"])
    set_value("patch_run", "1")


def patching_form(prompt: str) -> dict:
    """The corrupted prompt, metric, token(s) and site, applied together by Run; -> the values in use."""
    defaults = _form_defaults(prompt)
    choices = {"patch_metric": list(METRIC_KINDS), "patch_site": list(PATCH_SITES)}
    values = {name: url_choice(name, default, choices[name]) if name in choices else url_value(name, default)
              for name, default in defaults.items()}
    for name, value in values.items():
        if f"w_{name}" not in st.session_state:
            st.session_state[f"w_{name}"] = value
    with st.form("patch_form", border=False):
        st.text_area("Corrupted prompt (the same number of tokens as the prompt above)", key="w_patch_prompt_b",
                     height=80, help="Edit the prompt so that the answer changes, token for token, e.g. swap the "
                                     "subject for one of the same token length.")
        c1, c2, c3, c4 = st.columns([1.2, 1, 1, 1.2])
        c1.selectbox("Metric at the last position", list(METRIC_KINDS), format_func=METRIC_LABELS.get,
                     key="w_patch_metric")
        c2.text_input("Token", key="w_patch_token", placeholder="clean run's top-1",
                      help="One token, e.g. ' Paris' (mind the leading space). Empty: the clean run's final top-1.")
        c3.text_input("Other token (logit difference)", key="w_patch_other", placeholder="corrupted run's top-1",
                      help="Logit difference only. Empty: the corrupted run's final top-1.")
        c4.selectbox("Patch", list(PATCH_SITES), format_func=SITE_LABELS.get, key="w_patch_site")
        st.form_submit_button("Run", type="primary", on_click=_apply_form)
    return values


def patching_view(spec_key: str, prompt: str) -> None:
    """Draw the patching view of ``prompt`` (the clean prompt) on the model ``spec_key``."""
    st.caption("Run an edited (corrupted) prompt with one activation taken from the prompt above (clean) at a time: "
               "effect 1 = that cell alone restores the clean answer, 0 = it changes nothing. Layers: emb = "
               "embeddings, l = after block l.")
    values = patching_form(prompt)
    try:
        grid_section(spec_key, prompt, values)
    except (ValueError, MemoryError) as err:
        st.error(str(err))
    st.divider()
    patch_lens_panel(spec_key, prompt, values["patch_prompt_b"])


def grid_section(spec_key: str, prompt: str, values: dict) -> None:
    corrupt = values["patch_prompt_b"]
    clean_tokens = cached_patching.token_strings(spec_key, prompt)
    corrupt_tokens = cached_patching.token_strings(spec_key, corrupt)
    if len(clean_tokens) != len(corrupt_tokens):  # before any model work
        st.error(f"The prompt is {len(clean_tokens)} tokens and the corrupted prompt {len(corrupt_tokens)}: patching "
                 "pairs positions one to one, so edit the corrupted prompt until they match token for token.")
        st.caption("Clean: " + " · ".join(show_token(t) for t in clean_tokens))
        st.caption("Corrupted: " + " · ".join(show_token(t) for t in corrupt_tokens))
        return
    if not url_flag("patch_run"):
        st.info("Edit the corrupted prompt (e.g. swap the subject), pick the metric and press Run.")
        return
    kind, site = values["patch_metric"], values["patch_site"]
    metric, note = cached_patching.metric(spec_key, kind, prompt, corrupt, values["patch_token"],
                                          values["patch_other"] if kind == "logit_diff" else "")
    if note:
        st.info(note)
    result = cached_patching.grid(spec_key, prompt, corrupt, metric.kind, metric.token_id, metric.other_id, site,
                                  token=metric.token, other=metric.other)
    c1, c2, c3 = st.columns(3)
    c1.metric(f"Clean: {metric.label()}", f"{result.clean_value:.4g}")
    c2.metric(f"Corrupted: {metric.label()}", f"{result.corrupt_value:.4g}")
    c3.metric("Forward passes", f"{result.n_passes}", help=f"{len(result.frame)} cells, up to {result.batch_size} "
                                                           "per pass, plus the clean and corrupted runs")
    for text in result.notes:
        st.info(text)
    colour = bound(st.radio, "patch_color", "effect", "Colour by", options=list(charts.GRID_COLOURS),
                   horizontal=True, format_func=lambda c: "effect" if c == "effect" else "patched metric")
    if colour == "effect" and result.frame.effect.isna().all():
        colour = "value"
    chart = charts.patching_heatmap(result.frame, colour, metric.label())
    st.altair_chart(chart, width="stretch")
    chart_downloads(chart, result.frame, f"patching_{site}", key="dl_patching_heatmap")
    with st.expander("Table"):
        st.dataframe(result.frame, hide_index=True, width="stretch", height=300)
        table_downloads(result.frame, f"patching_{site}", key="dl_patching_table")
    show_snippet(grid_snippet(spec_key, prompt, corrupt, kind, metric.token or values["patch_token"],
                              metric.other or values["patch_other"], site), key="patch_grid")


def _cell_picker(label: str, name: str, default: tuple[int, int], n_layers: int,
                 tokens: tuple[str, ...]) -> tuple[int, int]:
    """Layer and position selectboxes (inside the patch-lens form) for the cell kept under URL key ``name``."""
    raw = url_value(name, f"{default[0]},{default[1]}")
    try:
        layer, pos = _parse_cell(raw)
    except ValueError:
        st.toast(f"Ignored the URL parameter {name}={shown(raw)!r}: give a cell as layer,position (e.g. 15,3).")
        layer, pos = default
        set_value(name, f"{layer},{pos}")
    cell = min(max(layer, 0), n_layers), min(max(pos, 0), len(tokens) - 1)
    if cell != (layer, pos):  # a link made for a longer prompt or a deeper model
        st.toast(f"{name} = {layer},{pos} is not a cell of this prompt (layers 0..{n_layers}, positions "
                 f"0..{len(tokens) - 1}): using {cell[0]},{cell[1]}.")
        set_value(name, f"{cell[0]},{cell[1]}")
    layer, pos = cell
    c1, c2 = st.columns(2)
    layer = c1.selectbox(f"{label} layer", list(range(n_layers + 1)), index=layer, format_func=layer_label,
                         key=f"w_{name}_layer_{n_layers}")
    pos = c2.selectbox(f"{label} position", list(range(len(tokens))), index=pos, key=f"w_{name}_pos_{len(tokens)}",
                       format_func=lambda p: f"{p} {show_token(tokens[p])}")
    return int(layer), int(pos)


def patch_lens_panel(spec_key: str, prompt: str, corrupt: str) -> None:
    """Source cell (the prompt) and target cell (the corrupted prompt): the patched run under the logit lens."""
    st.subheader("Patch lens")
    st.caption("Write the residual of the prompt above at one cell (source) into the corrupted prompt at another "
               "(target), then read every layer × position of the patched run with the logit lens. Only the dashed "
               "cone (the target cell, and every later layer at its position and after) can change; * = top-1 "
               "changed from the unpatched run.")
    try:
        source_tokens = cached_patching.token_strings(spec_key, prompt)
        target_tokens = cached_patching.token_strings(spec_key, corrupt)
    except (ValueError, MemoryError) as err:
        st.error(str(err))
        return
    n_layers = cached.get_session(spec_key).adapter.n_layers
    middle = n_layers // 2
    with st.form("patch_lens_form", border=False):
        source = _cell_picker("Source", "patch_source", (middle, len(source_tokens) - 1), n_layers, source_tokens)
        target = _cell_picker("Target", "patch_target", (middle, len(target_tokens) - 1), n_layers, target_tokens)
        run = st.form_submit_button("Run the patch lens", type="primary")
    if run:
        set_value("patch_source", f"{source[0]},{source[1]}")
        set_value("patch_target", f"{target[0]},{target[1]}")
        set_value("patch_lens_run", "1")
    if not url_flag("patch_lens_run"):
        return
    source = _parse_cell(url_value("patch_source", f"{source[0]},{source[1]}"))
    target = _parse_cell(url_value("patch_target", f"{target[0]},{target[1]}"))
    try:
        result = cached_patching.lens(spec_key, prompt, corrupt, source, target, top_k=5)
    except (ValueError, MemoryError) as err:
        st.error(str(err))
        return
    for text in result.notes:
        st.caption(text)
    changed = result.frame[result.frame.changed]
    st.caption(f"{len(changed)} of {int(result.frame.in_cone.sum())} cells in the cone changed; "
               f"{int((~result.frame.in_cone & result.frame.changed).sum())} outside it (should be 0).")
    chart = charts.patch_lens_heatmap(result.frame, target)
    st.altair_chart(chart, width="stretch")
    chart_downloads(chart, result.frame, "patch_lens", key="dl_patch_lens_heatmap")
    with st.expander("Table"):
        st.dataframe(result.frame, hide_index=True, width="stretch", height=300)
        table_downloads(result.frame, "patch_lens", key="dl_patch_lens_table")
    show_snippet(patch_lens_snippet(spec_key, prompt, corrupt, source, target, top_k=5), "Copy the patch lens as code",
                 key="patch_lens")

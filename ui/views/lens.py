"""Building blocks of the Lens page: options, the heatmap with cell selection, cell details, what-if."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from core.analyses.lens import LensResult, compare_frames, first_layer_reaching, settling_layer
from core.analyses.params import DEFAULT_TOP_K, MAX_TOP_K
from core.lenses.registry import LEARNED  # the lenses that need training first
from ui import cached
from ui.charts import lens as charts
from ui.downloads import chart_downloads, table_downloads
from ui.format import after_block, auto_stride, layer_label, show_token, strided_layers
from ui.page import stop_page
from ui.state import bound, set_value, url_list, url_value
from ui.views import lens_training

# besides the model and prompt every page keeps
URL_KEYS = ["lens", "lens_b", "identity_prompt", "question_prompt", "color", "top_k", "target", "stride",
            "positions", "cell", "whatif", "prompt_b"]
MAX_SHOWN_POSITIONS = 48


@dataclass(frozen=True)
class LensOptions:
    metric: str
    top_k: int
    targets: tuple[str, ...]
    stride: int
    lens: str = "logit"
    lens_b: str = "none"
    target_prompts: tuple[tuple[str, str], ...] = ()

    def target_prompt(self, lens: str) -> str:
        return dict(self.target_prompts).get(lens, "")


REMOTE_LENSES = ("logit",)
"""What runs on NDIF: the logit lens, reduced next to the model. The learned lenses' translators and the patchscopes'
readout need the weights (or every layer's residual stream) here."""


def lens_choice(remote: bool = False) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """Which lens (and optionally a second one side by side), and the patchscopes' target prompts."""
    if remote:
        st.caption("On NDIF: the logit lens, computed next to the model (only its statistics come back). The tuned "
                   "and affine lenses and the patchscopes need the model here.")
        set_value("lens", REMOTE_LENSES[0])
        set_value("lens_b", "none")
        return REMOTE_LENSES[0], "none", ()
    names = list(cached.LENS_NAMES)
    c1, c2 = st.columns(2)
    lens = bound(c1.selectbox, "lens", "logit", "Lens", options=names, format_func=cached.LENS_NAMES.get)
    lens_b = bound(c2.selectbox, "lens_b", "none", "Side by side with", options=["none"] + names,
                   format_func=lambda n: "— nothing —" if n == "none" else cached.LENS_NAMES[n])
    prompts = []
    if {"identity", "question"} & {lens, lens_b}:
        with st.expander("Patchscope target prompts"):
            for name in ("identity", "question"):
                if name in (lens, lens_b):
                    text = bound(st.text_area, f"{name}_prompt", cached.DEFAULT_TARGET_PROMPTS[name],
                                 f"{cached.LENS_NAMES[name]}: target prompt (patched at its last token)",
                                 height=100)
                    prompts.append((name, text or cached.DEFAULT_TARGET_PROMPTS[name]))
    return lens, lens_b, tuple(prompts)


def fetch(spec_key: str, prompt: str, opts: LensOptions, lens: str, target_ids: tuple[int, ...] = ()) -> LensResult:
    """Cached lens result for ``lens`` (its version ties tuned/affine results to the trained weights)."""
    version = ""
    if lens in LEARNED:
        trained = cached.trained_lenses(spec_key)
        version = str(trained.report.get("seconds", "")) if trained is not None else ""
    return cached.lens_result(spec_key, prompt, opts.top_k, opts.targets, target_ids, lens,
                              opts.target_prompt(lens), version)


def fetch_both(spec_key: str, prompt: str, opts: LensOptions) -> tuple[LensResult, LensResult | None]:
    """The chosen lens's result and the side-by-side one's (None without); bad input ends the page with its
    message (and the training panel when a learned lens is not trained yet)."""
    try:
        result = fetch(spec_key, prompt, opts, opts.lens)
        other = fetch(spec_key, prompt, opts, opts.lens_b) if opts.lens_b != "none" else None
    except (ValueError, MemoryError) as err:
        st.error(str(err))
        if opts.lens in LEARNED or opts.lens_b in LEARNED:
            lens_training.panel(spec_key)
        stop_page()
    for note in result.notes:
        st.info(note)
    return result, other


def _parse_targets(text: str) -> list[str]:
    """One target per line; a line's leading space is kept (it is part of the token)."""
    return [line for line in text.split("\n") if line.strip()]


def options(n_layers: int, remote: bool = False) -> LensOptions:
    """The lens controls (all bound to the URL); a model on NDIF offers the lenses that run there."""
    lens, lens_b, prompts = lens_choice(remote)
    c1, c2, c3, c4 = st.columns([1.3, 0.8, 1.6, 0.9])
    metric = bound(c1.selectbox, "color", "top-1 probability", "Colour cells by",
                   options=list(charts.HEATMAP_METRICS))
    top_k = bound(c2.number_input, "top_k", DEFAULT_TOP_K, "Top-k", parse=int, min_value=1, max_value=MAX_TOP_K, step=1)
    targets = url_list("target", [])
    if "w_targets" not in st.session_state:
        st.session_state["w_targets"] = "\n".join(targets)
    typed = c3.text_area("Target tokens (one per line; mind the leading space, e.g. ' Paris')",
                         key="w_targets", height=68,
                         help="Empty: each position's target is the model's final top-1 there.")
    set_value("target", _parse_targets(typed))
    stride = bound(c4.number_input, "stride", auto_stride(n_layers), "Layer stride", parse=int,
                   min_value=1, max_value=max(1, n_layers), step=1,
                   help="Show every n-th layer; the last layer is always shown.")
    return LensOptions(metric, int(top_k), tuple(_parse_targets(typed)), int(stride), lens, lens_b, prompts)


def position_window(n_pos: int) -> tuple[int, int]:
    """Which positions the heatmap shows (all of a short prompt; a window of a long one)."""
    if n_pos <= MAX_SHOWN_POSITIONS:
        return 0, n_pos - 1
    default = (n_pos - MAX_SHOWN_POSITIONS, n_pos - 1)

    def parse(text: str) -> tuple[int, int]:
        a, b = (int(x) for x in text.split("-"))
        return max(0, a), min(n_pos - 1, b)

    start, end = url_value("positions", f"{default[0]}-{default[1]}", parse=str).split("-")
    chosen = st.slider("Positions shown", 0, n_pos - 1, (int(start), min(int(end), n_pos - 1)),
                       help=f"The prompt has {n_pos} tokens; showing many at once makes cells unreadable.")
    set_value("positions", f"{chosen[0]}-{chosen[1]}")
    return int(chosen[0]), int(chosen[1])


def _parse_cell(text: str) -> tuple[int, int]:
    layer, pos = (int(x) for x in str(text).split(","))
    return layer, pos


def current_cell(n_layers: int, n_pos: int) -> tuple[int, int]:
    """The selected (layer, position): URL/state, else the last layer at the last position."""
    cell = url_value("cell", f"{n_layers},{n_pos - 1}", parse=str)
    try:
        layer, pos = _parse_cell(cell)
    except ValueError:
        layer, pos = n_layers, n_pos - 1
    return min(max(layer, 0), n_layers), min(max(pos, 0), n_pos - 1)


def heatmaps(result: LensResult, other: LensResult | None, opts: LensOptions, n_layers: int) -> tuple[int, int]:
    """The heatmap (two side by side with a second lens) over the shown layers and positions; a click on either
    selects a cell. Returns the selected (layer, position), also kept in the URL."""
    n_pos = len(result.tokens)
    layers = strided_layers(n_layers, opts.stride)
    first, last = position_window(n_pos)

    def visible(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame.layer.isin(layers) & frame.position.between(first, last)]

    cell = current_cell(n_layers, n_pos)
    if other is None:
        cell = heatmap(visible(result.frame), opts.metric, cell)
    else:
        sides = st.columns(2) if last - first < 10 else (st.container(), st.container())
        with sides[0]:
            st.markdown(f"**{cached.LENS_NAMES[opts.lens]}**")
            cell = heatmap(visible(result.frame), opts.metric, cell)
        with sides[1]:
            st.markdown(f"**{cached.LENS_NAMES[opts.lens_b]}**")
            cell = heatmap(visible(other.frame), opts.metric, cell, name="lens_b")
    set_value("cell", f"{cell[0]},{cell[1]}")
    return cell


def selected_cell(result: LensResult, other: LensResult | None, opts: LensOptions, cell: tuple[int, int],
                  n_layers: int) -> None:
    """The cell picker, the cell's top-k table(s) and target trajectories, then the full table."""
    st.subheader("Selected cell")
    st.caption("Click a cell in the heatmap, or pick it here.")
    cell_picker(cell, list(range(n_layers + 1)), len(result.tokens), result.tokens)
    cell_details(result, cell, other, (opts.lens, opts.lens_b))
    with st.expander("Full table (every layer × position)"):
        st.dataframe(result.frame, hide_index=True, width="stretch", height=300)
        table_downloads(result.frame, "lens", key="dl_lens_table")


def what_if_section(spec_key: str, prompt: str, result: LensResult, opts: LensOptions) -> None:
    """A toggle (bound to the URL) that opens the comparison with an edited prompt."""
    st.subheader("What if?")
    whatif = st.toggle("Compare with an edited prompt", value=url_value("whatif", "0") == "1", key="w_whatif")
    set_value("whatif", "1" if whatif else "0")
    if whatif:
        try:
            what_if(spec_key, prompt, result, opts)
        except (ValueError, MemoryError) as err:
            st.error(str(err))


def learned_lens_panel(spec_key: str, opts: LensOptions) -> None:
    """With a tuned or affine lens chosen: their training status, held-out KL and (re)training."""
    if set(LEARNED) & {opts.lens, opts.lens_b}:
        with st.expander("Learned lenses: training and held-out KL"):
            lens_training.panel(spec_key)


def heatmap(frame: pd.DataFrame, metric: str, cell: tuple[int, int], name: str = "lens") -> tuple[int, int]:
    """Draw the heatmap; a click on a cell selects it. Returns the (possibly new) selected cell."""
    if not ((frame.layer == cell[0]) & (frame.position == cell[1])).any():
        st.caption(f"The selected cell (layer {layer_label(cell[0])}, position {cell[1]}) is outside the rows "
                   "and columns shown; its details are below.")
    chart = charts.lens_heatmap(frame, metric, selected=cell)
    event = st.altair_chart(chart, on_select="rerun", key=f"{name}_heatmap", width="content")
    points = (event or {}).get("selection", {}).get(charts.SELECTION, []) if event else []
    if points:
        clicked = (int(points[0]["layer"]), int(points[0]["position"]))
        if clicked != st.session_state.get(f"_last_click_{name}"):
            st.session_state[f"_last_click_{name}"] = clicked
            cell = clicked
    chart_downloads(chart, frame, f"{name}_heatmap", key=f"dl_{name}_heatmap")
    return cell


def cell_picker(cell: tuple[int, int], layers: list[int], n_pos: int, tokens: tuple[str, ...]) -> None:
    """Selectboxes for the cell (also what a keyboard or a test uses); a change selects the cell."""
    lkey, pkey = f"w_cell_layer_{cell}", f"w_cell_pos_{cell}"

    def changed() -> None:
        set_value("cell", f"{st.session_state[lkey]},{st.session_state[pkey]}")

    c1, c2 = st.columns(2)
    c1.selectbox("Layer", layers, index=layers.index(cell[0]) if cell[0] in layers else len(layers) - 1,
                 format_func=layer_label, key=lkey, on_change=changed)
    c2.selectbox("Position", list(range(n_pos)), index=cell[1], key=pkey, on_change=changed,
                 format_func=lambda p: f"{p} {show_token(tokens[p])}")


def _topk_table(result: LensResult, cell: tuple[int, int], title: str, key: str) -> None:
    layer, pos = cell
    row = result.frame[(result.frame.layer == layer) & (result.frame.position == pos)].iloc[0]
    top = pd.DataFrame({"rank": range(1, len(row.top_tokens) + 1), "token": row.top_tokens,
                        "probability": row.top_probs})
    st.markdown(f"**{title}: top-{len(top)} {after_block(layer)} at position {pos} ({show_token(row.token)})**")
    st.dataframe(top.assign(token=top.token.map(show_token)), hide_index=True, width="stretch")
    table_downloads(top, f"topk_{key}_layer{layer}_pos{pos}", key=f"dl_topk_{key}")


def cell_details(result: LensResult, cell: tuple[int, int], other: LensResult | None = None,
                 names: tuple[str, str] = ("logit", "")) -> None:
    """Top-k table(s) of the selected cell and the trajectories of its targets."""
    layer, pos = cell
    left, right = st.columns([1, 2])
    with left:
        _topk_table(result, cell, cached.LENS_NAMES.get(names[0], names[0]).split(" (")[0], "a")
        if other is not None:
            _topk_table(other, cell, cached.LENS_NAMES.get(names[1], names[1]).split(" (")[0], "b")
    with right:
        targets = result.targets[result.targets.position == pos].assign(lens=names[0])
        if other is not None:
            targets = pd.concat([targets, other.targets[other.targets.position == pos].assign(lens=names[1])])
        st.markdown(f"**Targets across layers at position {pos}**")
        chart = charts.target_trajectories(targets, prompt_column="lens" if other is not None else None)
        st.altair_chart(chart, width="content")
        chart_downloads(chart, targets, f"targets_pos{pos}", key="dl_targets")
        _reach_summary(result.frame, pos)
        st.markdown(f"**Entropy and KL to the final layer at position {pos}**")
        st.altair_chart(charts.layer_profile(result.frame, pos), width="content")


def _reach_summary(frame: pd.DataFrame, pos: int) -> None:
    target = frame[frame.position == pos].target.iloc[0]
    first, settled = first_layer_reaching(frame, pos), settling_layer(frame, pos)
    if first is None:
        st.caption(f"{show_token(target)} never reaches rank 1 at position {pos}.")
    else:
        st.caption(f"{show_token(target)} first reaches rank 1 at layer {layer_label(first)} and stays "
                   f"there from layer {layer_label(settled) if settled is not None else '—'} on.")


def what_if(spec_key: str, prompt_a: str, base: LensResult, opts: LensOptions) -> None:
    """Compare the prompt with an edited one: aligned positions, what changed at each layer."""
    if "w_prompt_b" not in st.session_state:
        st.session_state["w_prompt_b"] = url_value("prompt_b", prompt_a)
    with st.form("what_if_form", border=False):
        st.text_area("Edited prompt (B)", key="w_prompt_b", height=80)
        st.form_submit_button("Compare", type="primary",
                              on_click=lambda: set_value("prompt_b", st.session_state["w_prompt_b"]))
    prompt_b = url_value("prompt_b", prompt_a)
    common = _common_targets(spec_key, prompt_a, prompt_b, base, opts)
    res_a = fetch(spec_key, prompt_a, opts, opts.lens, common)
    res_b = fetch(spec_key, prompt_b, opts, opts.lens, common)
    diff = compare_frames(res_a, res_b)
    metric = st.radio("Colour by", list(charts.COMPARE_METRICS), horizontal=True, key="w_compare_metric")
    shown = diff[diff.layer.isin(sorted(set(strided_layers(int(diff.layer.max()), opts.stride))))]
    chart = charts.compare_heatmap(shown, metric)
    st.altair_chart(chart, width="content")
    st.caption(f"Δ target probability is for {show_token(res_a.frame.target.iloc[-1])}. Positions are aligned "
               "by matching tokens; the last positions (the next-token predictions) always pair.")
    chart_downloads(chart, diff, "what_if", key="dl_whatif")
    last_a, last_b = len(res_a.tokens) - 1, len(res_b.tokens) - 1
    both = pd.concat([res_a.targets[res_a.targets.position == last_a].assign(prompt="A"),
                      res_b.targets[res_b.targets.position == last_b].assign(prompt="B")])
    st.markdown("**Targets at the last position, prompt A (solid) vs B (dashed)**")
    traj = charts.target_trajectories(both, prompt_column="prompt")
    st.altair_chart(traj, width="content")
    chart_downloads(traj, both, "what_if_targets", key="dl_whatif_targets")


def _common_targets(spec_key: str, prompt_a: str, prompt_b: str, base: LensResult,
                    opts: LensOptions) -> tuple[int, ...]:
    """Without typed targets, compare both prompts on their final top-1 tokens at the last position."""
    if opts.targets:
        return ()
    res_b = fetch(spec_key, prompt_b, opts, opts.lens)
    ids = [int(base.stats.target_ids[-1, 0]), int(res_b.stats.target_ids[-1, 0])]
    return tuple(dict.fromkeys(ids))

"""Building blocks of the Lens page: options, the heatmap with cell selection, cell details, what-if."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from core.analyses.lens import (
    LensResult,
    align_positions,
    compare_frames,
    deleted_tokens,
    first_layer_reaching,
    settling_layer,
)
from core.analyses.params import DEFAULT_TOP_K, MAX_TOP_K
from core.lenses.registry import LEARNED  # the lenses that need training first
from core.snippets import lens_snippet, whatif_snippet
from ui import cached
from ui.charts import lens as charts
from ui.downloads import chart_downloads, table_downloads
from ui.format import after_block, auto_stride, layer_label, show_token
from ui.page import stop_page
from ui.snippets import show_snippet
from ui.state import bound, set_value, url_list, url_value
from ui.views import lens_training

# besides the model and prompt every page keeps
URL_KEYS = ["view", "lens", "lens_b", "identity_prompt", "question_prompt", "question_bare_prompt", "color",
            "color_target",
            "top_k", "target", "stride", "positions", "cell", "whatif", "prompt_b", "whatif_color"]
MAX_SHOWN_POSITIONS = 48
"""The widest window the heatmap shows (at 1280 px its cells are then colour only)."""
SHOW_ALL_UP_TO = 32
"""Prompts up to this many tokens show every position; longer ones open on a window of their last
:data:`DEFAULT_SHOWN_POSITIONS` (readable cells at 1280 px, and half the work of the widest window before the first
heatmap), which the slider widens up to :data:`MAX_SHOWN_POSITIONS`."""
DEFAULT_SHOWN_POSITIONS = 24
SIDE_BY_SIDE_POSITIONS = 12
"""Two heatmaps stand side by side up to this many positions, else one above the other (never squeezed)."""


VIEWS = {"lens": "Lens", "patch": "Patching", "contrib": "Contributions", "attn": "Attention", "gen": "Generate"}
"""The Lens page's views (URL key ``view``); only the chosen one runs, so each stays as fast as it is alone."""
LOCAL_VIEWS = ("patch", "contrib", "attn", "gen")
"""Views that need the model's weights here (not on NDIF)."""


def view_picker(remote: bool = False) -> str:
    """Which view of the prompt the page shows (bound to the URL); a model on NDIF gets the lens only."""
    if remote:
        set_value("view", "lens")
        return "lens"
    view = bound(st.segmented_control, "view", "lens", "View", options=list(VIEWS), format_func=VIEWS.get,
                 label_visibility="collapsed")
    if view is None:  # a click on the chosen segment deselects it: stay where we were
        view = "lens"
        set_value("view", view)
    return view


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
    if set(cached.DEFAULT_TARGET_PROMPTS) & {lens, lens_b}:
        with st.expander("Patchscope target prompts"):
            if "question" in (lens, lens_b):
                st.caption('The logitscope seed ran through TransformerLens, which puts a BOS token first: its '
                           'target is [BOS, "?"]. Here the tokenizer\'s BOS (else EOS) goes first where the tokenizer '
                           'adds none; the bare-"?" variant leaves it out.')
            for name in cached.DEFAULT_TARGET_PROMPTS:
                if name in (lens, lens_b):
                    text = bound(st.text_area, f"{name}_prompt", cached.DEFAULT_TARGET_PROMPTS[name],
                                 f"{cached.LENS_NAMES[name]}: target prompt (patched at its last token)",
                                 height=100)
                    if not text.strip():
                        stop_page(f"The {cached.LENS_NAMES[name]} target prompt is empty: type one (the default "
                                  f"is {cached.DEFAULT_TARGET_PROMPTS[name]!r}).")
                    prompts.append((name, text))
    return lens, lens_b, tuple(prompts)


def lens_version(spec_key: str, lens: str) -> str:
    """What ties a tuned/affine result to the trained weights ("" for the other lenses)."""
    if lens not in LEARNED:
        return ""
    trained = cached.trained_lenses(spec_key)
    return str(trained.report.get("seconds", "")) if trained is not None else ""


def fetch(spec_key: str, prompt: str, opts: LensOptions, lens: str, target_ids: tuple[int, ...] = (),
          positions: tuple[int, ...] | None = None, layers: tuple[int, ...] | None = None) -> LensResult:
    """Cached lens result for ``lens`` at ``layers`` x ``positions`` (default: all)."""
    return cached.lens_result(spec_key, prompt, opts.top_k, opts.targets, target_ids, lens,
                              opts.target_prompt(lens), lens_version(spec_key, lens), positions, layers)


def prompt_tokens(spec_key: str, prompt: str) -> tuple[str, ...]:
    """The prompt's tokens (running its trace, with progress on long prompts); bad input ends the page."""
    try:
        return cached.prompt_tokens(spec_key, prompt)
    except (ValueError, MemoryError) as err:
        stop_page(str(err))


def fetch_both(spec_key: str, prompt: str, opts: LensOptions, positions: tuple[int, ...] | None = None,
               layers: tuple[int, ...] | None = None) -> tuple[LensResult, LensResult | None]:
    """The chosen lens's result and the side-by-side one's (None without) at ``layers`` x ``positions``; bad input
    ends the page with its message (and the training panel when a learned lens is not trained yet)."""
    try:
        result = fetch(spec_key, prompt, opts, opts.lens, positions=positions, layers=layers)
        other = (fetch(spec_key, prompt, opts, opts.lens_b, positions=positions, layers=layers)
                 if opts.lens_b != "none" else None)
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


def _prompt_changed(prompt: str) -> bool:
    """True on the first run after the analysed prompt changed (never on the first run of a browser session, whose
    URL values belong to its prompt)."""
    before = st.session_state.get("_lens_prompt")
    st.session_state["_lens_prompt"] = prompt
    return before is not None and before != prompt


def reset_on_new_prompt(prompt: str) -> bool:
    """A new prompt starts at its prediction cell with the default window (the old selection belongs to the old
    prompt). -> True when it reset."""
    if not _prompt_changed(prompt):
        return False
    for name in ("cell", "positions"):
        set_value(name, "")  # "" reads as "the default" (and not as the URL's value, which was the old prompt's)
    for key in [k for k in st.session_state if str(k).startswith("w_positions_")]:
        del st.session_state[key]
    return True


def position_window(n_pos: int, name: str = "positions", show_all: int = SHOW_ALL_UP_TO,
                    width: int = DEFAULT_SHOWN_POSITIONS, help: str | None = None) -> tuple[int, int]:
    """Which positions a heatmap shows (all of a short sequence, up to ``show_all``; a window of a long one, by default
    its last ``width``, where the next token is predicted), kept in the URL under ``name``."""
    if n_pos <= show_all:
        set_value(name, None)
        return 0, n_pos - 1
    default = f"{n_pos - width}-{n_pos - 1}"
    try:
        start, end = (int(x) for x in str(url_value(name, default, parse=str)).split("-"))
    except ValueError:
        start, end = n_pos - width, n_pos - 1
    start, end = max(0, min(start, n_pos - 1)), max(0, min(end, n_pos - 1))
    if end < start:
        start, end = end, start
    chosen = st.slider("Positions shown", 0, n_pos - 1, (start, end), key=f"w_{name}_{n_pos}",
                       help=help or f"The prompt has {n_pos} tokens; up to {MAX_SHOWN_POSITIONS} are shown at once "
                                    "(more make cells unreadable). The full table below has every position.")
    if chosen[1] - chosen[0] + 1 > MAX_SHOWN_POSITIONS:
        st.caption(f"Showing the last {MAX_SHOWN_POSITIONS} of the {chosen[1] - chosen[0] + 1} positions chosen.")
        chosen = (chosen[1] - MAX_SHOWN_POSITIONS + 1, chosen[1])
    set_value(name, f"{chosen[0]}-{chosen[1]}")
    return int(chosen[0]), int(chosen[1])


def _parse_cell(text: str) -> tuple[int, int]:
    layer, pos = (int(x) for x in str(text).split(","))
    return layer, pos


def current_cell(n_layers: int, n_pos: int) -> tuple[int, int]:
    """The selected (layer, position): URL/state, else the last layer at the last position (the prediction)."""
    cell = url_value("cell", f"{n_layers},{n_pos - 1}", parse=str)
    try:
        layer, pos = _parse_cell(cell)
    except ValueError:
        layer, pos = n_layers, n_pos - 1
    return min(max(layer, 0), n_layers), min(max(pos, 0), n_pos - 1)


def colour_target(result: LensResult, opts: LensOptions) -> str | None:
    """With several targets and a target metric: which target colours the cells (a picker; the first by default).
    Returns the chosen target's text, or None when the metric does not read a target."""
    if opts.metric not in ("target rank", "target probability"):
        return None
    if len(opts.targets) <= 1:
        what = (f"the target {show_token(result.frame.target.iloc[0])}" if opts.targets
                else "each position's own final top-1 token (type targets to follow others)")
        st.caption(f"Cells coloured by {opts.metric} of {what}.")
        return None
    shown = [show_token(t) for t in dict.fromkeys(result.targets.target)]
    index = min(int(url_value("color_target", 0, parse=int)), len(shown) - 1)
    pick = st.radio("Colour by the target", shown, index=max(0, index), horizontal=True, key="w_color_target",
                    help="The heatmap shows one target's rank or probability; the trajectories below show them all.")
    set_value("color_target", shown.index(pick))
    return list(dict.fromkeys(result.targets.target))[shown.index(pick)]


def _coloured_by(result: LensResult, target: str | None) -> pd.DataFrame:
    """The lens frame with target rank/probability of ``target`` (None: the frame's own first target)."""
    if target is None:
        return result.frame
    sub = result.targets[result.targets.target == target][["layer", "position", "target", "target_rank",
                                                           "target_prob"]]
    return result.frame.drop(columns=["target", "target_rank", "target_prob"]).merge(sub, on=["layer", "position"])


def heatmaps(result: LensResult, other: LensResult | None, opts: LensOptions, n_layers: int,
             n_pos: int) -> tuple[int, int]:
    """The heatmap (two with a second lens: side by side when few positions show, else one above the other) over the
    computed layers and positions; a click on either selects a cell. Returns the selected (layer, position), also
    kept in the URL."""
    cell = current_cell(n_layers, n_pos)
    target = colour_target(result, opts)
    if other is None:
        cell = heatmap(_coloured_by(result, target), opts.metric, cell)
    else:
        narrow = result.stats.positions.size <= SIDE_BY_SIDE_POSITIONS
        sides = st.columns(2) if narrow else (st.container(), st.container())
        with sides[0]:
            st.markdown(f"**{cached.LENS_NAMES[opts.lens]}**")
            cell = heatmap(_coloured_by(result, target), opts.metric, cell)
        with sides[1]:
            st.markdown(f"**{cached.LENS_NAMES[opts.lens_b]}**")
            cell = heatmap(_coloured_by(other, target), opts.metric, cell, name="lens_b")
    set_value("cell", f"{cell[0]},{cell[1]}")
    return cell


def lens_code(spec_key: str, prompt: str, opts: LensOptions, layers: tuple[int, ...],
              positions: tuple[int, ...]) -> None:
    """"Copy as code" for the heatmap: the core calls that give its table (the first lens; a second one is the same
    call with its name)."""
    show_snippet(lens_snippet(spec_key, prompt, opts.top_k, opts.targets, opts.lens, opts.target_prompt(opts.lens),
                              list(layers), list(positions)), key="lens")


def selected_cell(spec_key: str, prompt: str, tokens: tuple[str, ...], opts: LensOptions, cell: tuple[int, int],
                  n_layers: int) -> None:
    """The cell picker, the cell's top-k table(s) and its position's trajectories over every layer, then the full
    table (computed when asked for)."""
    st.subheader("Selected cell")
    st.caption("Click a cell in the heatmap, or pick it here.")
    cell_picker(cell, list(range(n_layers + 1)), len(tokens), tokens)
    result, other = fetch_both(spec_key, prompt, opts, positions=(cell[1],))
    cell_details(result, cell, other, (opts.lens, opts.lens_b))
    box = st.expander("Full table (every layer × position, computed when opened)", key="x_full_table",
                      on_change="rerun")
    if box.open:
        with box:
            st.caption(f"Every layer at all {len(tokens)} positions, with downloads.")
            full = fetch(spec_key, prompt, opts, opts.lens)
            st.dataframe(full.frame, hide_index=True, width="stretch", height=300)
            table_downloads(full.frame, "lens", key="dl_lens_table")


def what_if_section(spec_key: str, prompt: str, opts: LensOptions, layers: tuple[int, ...]) -> None:
    """A toggle (bound to the URL) that opens the comparison with an edited prompt."""
    st.subheader("What if?")
    whatif = st.toggle("Compare with an edited prompt", value=url_value("whatif", "0") == "1", key="w_whatif")
    set_value("whatif", "1" if whatif else "0")
    if whatif:
        try:
            what_if(spec_key, prompt, opts, layers)
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
    event = st.altair_chart(chart, on_select="rerun", key=f"{name}_heatmap", width="stretch")
    points = (event or {}).get("selection", {}).get(charts.SELECTION, []) if event else []
    if points:
        clicked = (int(points[0]["layer"]), int(points[0]["position"]))
        if clicked != st.session_state.get(f"_last_click_{name}"):
            st.session_state[f"_last_click_{name}"] = clicked
            cell = clicked
    chart_downloads(chart, frame, f"{name}_heatmap", key=f"dl_{name}_heatmap")
    return cell


def cell_for_view(tokens: tuple[str, ...], n_layers: int, layer: bool = True) -> tuple[int, int]:
    """The cell the Contributions and Attention views read: the one selected on the Lens heatmap (kept in the URL),
    changeable here (``layer`` False: the position only, for a view that picks its block itself)."""
    cell = current_cell(n_layers, len(tokens))
    cell_picker(cell, list(range(n_layers + 1)), len(tokens), tokens, layer=layer)
    cell = current_cell(n_layers, len(tokens))
    set_value("cell", f"{cell[0]},{cell[1]}")
    return cell


def cell_picker(cell: tuple[int, int], layers: list[int], n_pos: int, tokens: tuple[str, ...],
                layer: bool = True) -> None:
    """Selectboxes for the cell (also what a keyboard or a test uses); a change selects the cell (``layer`` False:
    the position only, the layer kept)."""
    lkey, pkey = f"w_cell_layer_{cell}_{n_pos}", f"w_cell_pos_{cell}_{n_pos}"

    def changed() -> None:
        chosen = st.session_state[lkey] if layer else cell[0]
        set_value("cell", f"{chosen},{st.session_state[pkey]}")

    c1, c2 = st.columns(2)
    if layer:
        c1.selectbox("Layer", layers, index=layers.index(cell[0]) if cell[0] in layers else len(layers) - 1,
                     format_func=layer_label, key=lkey, on_change=changed)
    (c2 if layer else c1).selectbox("Position", list(range(n_pos)), index=cell[1], key=pkey, on_change=changed,
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
    """Top-k table(s) of the selected cell and the trajectories of its targets (``result`` holds every layer at the
    cell's position)."""
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
        chart = charts.target_trajectories(targets, prompt_column="lens" if other is not None else None, width=190)
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


def what_if(spec_key: str, prompt_a: str, opts: LensOptions, layers: tuple[int, ...]) -> None:
    """Compare the prompt with an edited one: every position of B (inserted ones marked), what changed at each
    layer, and B's cells to inspect. B continues A's computation over the tokens both share."""
    if "w_prompt_b" not in st.session_state:
        st.session_state["w_prompt_b"] = url_value("prompt_b", prompt_a)
    with st.form("what_if_form", border=False):
        st.text_area("Edited prompt (B)", key="w_prompt_b", height=80)
        st.form_submit_button("Compare", type="primary",
                              on_click=lambda: set_value("prompt_b", st.session_state["w_prompt_b"]))
    prompt_b = url_value("prompt_b", prompt_a)
    tokens_a = cached.prompt_tokens(spec_key, prompt_a)
    session = cached.get_session(spec_key)
    cached.check_length(session.tokenize(prompt_b).numel())
    tokens_b = cached.edit_trace(spec_key, prompt_a, prompt_b).tokens if not session.ships_requests \
        else session.token_strings(session.tokenize(prompt_b))
    pairs = dict((b, a) for a, b in align_positions(tokens_a, tokens_b))
    shown_b = tuple(range(max(0, len(tokens_b) - (len(tokens_b) if len(tokens_b) <= SHOW_ALL_UP_TO
                                                  else DEFAULT_SHOWN_POSITIONS)), len(tokens_b)))
    shown_a = tuple(sorted({pairs[b] for b in shown_b if b in pairs}))
    common = _common_targets(spec_key, prompt_a, prompt_b, opts, tokens_a, tokens_b)
    version = lens_version(spec_key, opts.lens)
    res_a = cached.lens_result(spec_key, prompt_a, opts.top_k, opts.targets, common, opts.lens,
                               opts.target_prompt(opts.lens), version, shown_a, layers)
    res_b, reused = cached.edit_result(spec_key, prompt_a, prompt_b, opts.top_k, opts.targets, common, opts.lens,
                                       opts.target_prompt(opts.lens), version, shown_b, shown_a, layers)
    diff = compare_frames(res_a, res_b)
    metric = bound(st.radio, "whatif_color", "top-1 changed", "Colour by", options=list(charts.COMPARE_METRICS),
                   horizontal=True)
    chart = charts.compare_heatmap(diff, metric)
    selectable = charts.SELECTION in json.dumps(chart.to_dict())
    event = st.altair_chart(chart, width="stretch", key="whatif_heatmap",
                            **({"on_select": "rerun"} if selectable else {}))
    event = event if selectable else None
    inserted = diff[diff.status == "inserted"].position_b.unique()
    deleted = deleted_tokens(tokens_a, tokens_b)
    notes = [f"Δ target probability is for {show_token(res_b.frame.target.iloc[-1])}. Positions are aligned by "
             "matching tokens; the last positions (the next-token predictions) always pair."]
    if len(inserted):
        notes.append(f"{len(inserted)} position(s) of B have no counterpart in A (inserted, or rewritten into "
                     "another number of tokens): light blue, marked + on the axis, no Δ.")
    if deleted:
        notes.append("Deleted from A: " + ", ".join(f"{show_token(t)} (A position {p})" for p, t in deleted) + ".")
    if len(tokens_b) > len(shown_b):
        notes.append(f"Showing B's last {len(shown_b)} of {len(tokens_b)} positions.")
    if reused:
        notes.append(f"{reused} position(s) before the first edit were reused from A, not recomputed.")
    st.caption(" ".join(notes))
    chart_downloads(chart, diff, "what_if", key="dl_whatif")
    show_snippet(whatif_snippet(spec_key, prompt_a, prompt_b, opts.top_k, opts.targets, opts.lens,
                                opts.target_prompt(opts.lens), list(layers)), key="whatif")
    _inspect_b(event, res_b, tokens_b, layers)
    last_a, last_b = len(tokens_a) - 1, len(tokens_b) - 1
    both = pd.concat([res_a.targets[res_a.targets.position == last_a].assign(prompt="A"),
                      res_b.targets[res_b.targets.position == last_b].assign(prompt="B")])
    st.markdown("**Targets at the last position, prompt A (solid) vs B (dashed)**")
    traj = charts.target_trajectories(both, prompt_column="prompt")
    st.altair_chart(traj, width="content")
    chart_downloads(traj, both, "what_if_targets", key="dl_whatif_targets")


def _inspect_b(event, res_b: LensResult, tokens_b: tuple[str, ...], layers: tuple[int, ...]) -> None:
    """Prompt B's selected cell (a click on the comparison, or the pickers): its top-k table."""
    points = (event or {}).get("selection", {}).get(charts.SELECTION, []) if event else []
    if points and "position_b" in points[0]:
        st.session_state["_whatif_cell"] = (int(points[0]["layer"]), int(points[0]["position_b"]))
    shown = [int(p) for p in res_b.stats.positions]
    layer, pos = st.session_state.get("_whatif_cell", (layers[-1], shown[-1]))
    if pos not in shown or layer not in layers:
        layer, pos = layers[-1], shown[-1]
    c1, c2 = st.columns(2)
    layer = c1.selectbox("B: layer", list(layers), index=list(layers).index(layer), format_func=layer_label,
                         key=f"w_b_layer_{layer}_{pos}")
    pos = c2.selectbox("B: position", shown, index=shown.index(pos), key=f"w_b_pos_{layer}_{pos}",
                       format_func=lambda p: f"{p} {show_token(tokens_b[p])}")
    st.session_state["_whatif_cell"] = (layer, pos)
    _topk_table(res_b, (layer, pos), "Prompt B", "b_whatif")


def _common_targets(spec_key: str, prompt_a: str, prompt_b: str, opts: LensOptions, tokens_a: tuple[str, ...],
                    tokens_b: tuple[str, ...]) -> tuple[int, ...]:
    """Without typed targets, compare both prompts on their final top-1 tokens at the last position."""
    if opts.targets:
        return ()
    last_a, last_b = (len(tokens_a) - 1,), (len(tokens_b) - 1,)
    final = (cached.get_session(spec_key).adapter.n_layers,)
    res_a = fetch(spec_key, prompt_a, opts, opts.lens, positions=last_a, layers=final)
    res_b = fetch(spec_key, prompt_b, opts, opts.lens, positions=last_b, layers=final)
    ids = [int(res_a.stats.target_ids[-1, 0]), int(res_b.stats.target_ids[-1, 0])]
    return tuple(dict.fromkeys(ids))

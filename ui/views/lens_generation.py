"""The Lens page's Generate view: the model continues the prompt, and the lens reads prompt + continuation.

``generation_view(spec_key, prompt, n_layers)``: a form (new tokens, greedy or sampled with seed, temperature and
top-k) and its Generate button; then the continuation, the logit-lens heatmap over prompt and continuation (generated
positions marked ▸), the token table, and a button that makes prompt + continuation the analysed prompt of every
view. Its URL keys (:data:`URL_KEYS`) all start with ``gen_``.
"""

from __future__ import annotations

import streamlit as st

from core.analyses.generation import DEFAULT_NEW_TOKENS, MAX_NEW_TOKENS, Generation, generation_table
from core.analyses.params import DEFAULT_TOP_K, MAX_TEMPERATURE
from core.validate import MAX_SEED
from core.snippets import generation_snippet
from ui import cached, cached_generation
from ui.charts import lens as charts
from ui.downloads import chart_downloads, table_downloads
from ui.format import auto_stride, show_token, strided_layers
from ui.page import stop_page
from ui.snippets import show_snippet
from ui.state import bound, inside, set_value, url_flag, url_value
from ui.views import lens as lens_view

URL_KEYS = ["gen_n", "gen_sample", "gen_seed", "gen_temp", "gen_top_k", "gen_go", "gen_color", "gen_positions"]
GENERATED_MARK = "▸"
"""Prefix of a generated position's token on the heatmap's axis (and in its tooltip)."""
MAX_SHOWN = lens_view.MAX_SHOWN_POSITIONS
"""The widest window of positions the heatmap shows (the Lens view's limit)."""

_FIELDS = {  # URL key -> (widget key, default, parse)
    "gen_n": ("w_gen_n", DEFAULT_NEW_TOKENS, int),
    "gen_sample": ("w_gen_sample", False, lambda raw: str(raw).lower() in ("1", "true")),
    "gen_seed": ("w_gen_seed", 0, int),
    "gen_temp": ("w_gen_temp", 1.0, float),
    "gen_top_k": ("w_gen_top_k", 0, int),
}


_BOUNDS = {"gen_n": (1, MAX_NEW_TOKENS), "gen_seed": (0, MAX_SEED), "gen_temp": (0.01, MAX_TEMPERATURE)}
"""The form's bounds (top-k: 0 .. the vocabulary, set per model); a link's value outside them is brought inside."""


def _field(name: str, bounds: dict[str, tuple]):
    key, default, parse = _FIELDS[name]
    value = url_value(name, default, parse)
    if name in bounds:
        value = inside(name, value, *bounds[name])
    if key not in st.session_state:  # a form's widgets take no callbacks: they start from the URL's values
        st.session_state[key] = value
    return value


def _submit() -> None:
    for name, (key, _, _) in _FIELDS.items():
        set_value(name, st.session_state[key])
    set_value("gen_go", "1")


def _form(d_vocab: int) -> dict:
    """The generation request, as last submitted (the URL's values until Generate is pressed)."""
    bounds = {**_BOUNDS, "gen_top_k": (0, d_vocab)}
    for name in _FIELDS:
        _field(name, bounds)
    with st.form("gen_form", border=False):
        c1, c2, c3, c4, c5 = st.columns([1, 1, 1, 1, 1], vertical_alignment="bottom")
        c1.number_input("New tokens", min_value=1, max_value=MAX_NEW_TOKENS, step=1, key="w_gen_n",
                        help=f"At most {MAX_NEW_TOKENS}; decoding stops earlier when the model ends its turn.")
        c2.toggle("Sample", key="w_gen_sample", help="Off: greedy (the most likely token each step). On: drawn "
                                                     "from the distribution, reproducibly for a given seed.")
        c3.number_input("Seed", min_value=0, max_value=MAX_SEED, step=1, key="w_gen_seed",
                        help="Sampling only: the same seed, the same continuation.")
        c4.number_input("Temperature", min_value=0.01, max_value=MAX_TEMPERATURE, step=0.1, key="w_gen_temp",
                        help="Sampling only: logits are divided by it (below 1 sharper, above 1 flatter).")
        c5.number_input("Top-k", min_value=0, max_value=d_vocab, step=1, key="w_gen_top_k",
                        help="Sampling only: draw among the k most likely tokens (0: all).")
        st.form_submit_button("Generate", type="primary", on_click=_submit)
    return {name: url_value(name, default, parse) for name, (_, default, parse) in _FIELDS.items()}


def _new_prompt(prompt: str) -> bool:
    """True on the first run after the analysed prompt changed (not on a browser session's first run)."""
    before = st.session_state.get("_gen_prompt")
    st.session_state["_gen_prompt"] = prompt
    return before is not None and before != prompt


def _window(total: int, n_prompt: int) -> tuple[int, int]:
    """Which positions the heatmap shows: all up to :data:`MAX_SHOWN`, else a window (by default the last ones)."""
    return lens_view.position_window(total, "gen_positions", show_all=MAX_SHOWN, width=MAX_SHOWN,
                                     help=f"{n_prompt} prompt + {total - n_prompt} generated tokens; up to "
                                          f"{MAX_SHOWN} show at once. The table below has every position.")


def _use_as_prompt(text: str) -> None:
    """Prompt + continuation becomes the analysed prompt of every page (as typed: the chat wrap is already in it),
    and the Lens view shows it."""
    set_value("prompt", text)
    set_value("chat", False)
    set_value("view", "lens")


def marked(frame, gen: Generation):
    """The lens frame with each generated position's token prefixed by :data:`GENERATED_MARK`."""
    generated = frame.position >= gen.n_prompt
    return frame.assign(token=frame.token.where(~generated, GENERATED_MARK + frame.token))


def generation_view(spec_key: str, prompt: str, n_layers: int) -> None:
    """The Generate view over ``prompt`` (the analysed prompt: the sidebar's, wrapped as a chat turn when asked)."""
    session = cached.get_session(spec_key)
    if session.remote:
        stop_page("Generation needs the model here (each new token is a forward pass); this one runs on NDIF.",
                  kind="info")
    request = _form(session.adapter.d_vocab)
    if _new_prompt(prompt):
        set_value("gen_go", "0")  # a new prompt waits for Generate
    if not url_flag("gen_go"):
        st.caption("Press Generate to continue the prompt; the lens then reads prompt and continuation.")
        return
    try:
        gen = cached_generation.generation(spec_key, prompt, int(request["gen_n"]), bool(request["gen_sample"]),
                                           int(request["gen_seed"]), float(request["gen_temp"]),
                                           int(request["gen_top_k"]))
    except (ValueError, MemoryError) as err:
        stop_page(str(err))
    how = (f"sampled (seed {request['gen_seed']}, temperature {request['gen_temp']:g}"
           + (f", top-{request['gen_top_k']}" if request["gen_top_k"] else "") + ")") \
        if request["gen_sample"] else "greedy"
    ending = "the model ended its turn" if gen.stopped == "eos" else f"after {gen.n_new} tokens"
    st.markdown(f"**Continuation** ({gen.n_new} tokens, {how}; stopped: {ending})")
    st.code(gen.text or "(empty)", language=None, wrap_lines=True)
    _use_button(spec_key, prompt, gen)
    _lens(spec_key, gen, n_layers)
    with st.expander("Tokens of prompt and continuation"):
        table = generation_table(session, gen)
        st.dataframe(table, hide_index=True, width="stretch", height=260)
        table_downloads(table, "generation_tokens", key="dl_gen_tokens")
    show_snippet(generation_snippet(session.spec.key(), prompt, int(request["gen_n"]), bool(request["gen_sample"]),
                                    int(request["gen_seed"]), float(request["gen_temp"]), int(request["gen_top_k"]),
                                    lens_top_k=DEFAULT_TOP_K, layers=strided_layers(n_layers, auto_stride(n_layers))),
                 key="generation")


def _use_button(spec_key: str, prompt: str, gen: Generation) -> None:
    """"Use prompt + continuation as the prompt", with a note when its text reads back into other tokens."""
    text = prompt + gen.text
    st.button("Use prompt + continuation as the prompt", key="w_gen_use", on_click=_use_as_prompt, args=(text,),
              help="Every Lens view (what-if, patching, …) and page then reads prompt + continuation. The sidebar's "
                   "chat wrap is switched off: the text already holds it.")
    session = cached.get_session(spec_key)
    try:
        again = session.tokenize(text)
    except ValueError:
        return
    if again.tolist() != gen.ids.tolist():
        st.caption(f"As text, prompt + continuation reads as {again.numel()} tokens, not the {gen.ids.numel()} "
                   "generated (a tokenizer may split a text differently from how it was generated); the heatmap "
                   "below reads the generated ones.")


def _lens(spec_key: str, gen: Generation, n_layers: int) -> None:
    """The logit-lens heatmap over prompt + continuation, generated positions marked."""
    total = int(gen.ids.numel())
    first, last = _window(total, gen.n_prompt)
    layers = tuple(strided_layers(n_layers, auto_stride(n_layers)))
    metric = bound(st.selectbox, "gen_color", "top-1 probability", "Colour cells by",
                   options=list(charts.HEATMAP_METRICS))
    try:
        result = cached_generation.generation_lens(spec_key, tuple(gen.ids.tolist()), DEFAULT_TOP_K, layers,
                                                   tuple(range(first, last + 1)))
    except (ValueError, MemoryError) as err:
        stop_page(str(err))
    frame = marked(result.frame, gen)
    st.caption(f"Logit lens over prompt and continuation: columns marked {GENERATED_MARK} are generated tokens; "
               f"each column predicts the next one (the last prompt column, {show_token(gen.tokens[gen.n_prompt - 1])}"
               f", predicts the first generated token). Cells show each layer's top-1.")
    chart = charts.lens_heatmap(frame, metric)
    st.altair_chart(chart, width="stretch", key="gen_heatmap")
    chart_downloads(chart, frame, "generation_lens", key="dl_gen_heatmap")

"""The sidebar every page shares: model picker (source, precision, device) and prompt, both bound to the URL.

Precision and device travel inside the URL's model value (``?model=bundled,dtype=bfloat16``; left out when they
are the defaults, so old links open as before: float32 on CPU)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, replace

import streamlit as st
import torch

from core.model.loading import BUNDLED, ModelLoadError, ModelSpec, model_facts
from core.model.prompts import BOS_RULE, chat_prompt, has_chat_template, token_table
from core.model.session import ModelSession
from core.validate import DEFAULT_DEVICE, DEFAULT_DTYPE, DTYPES, NDIF, model_source, split_precision
from ui import cached, hosting
from ui.downloads import csv_text, file_stem
from ui.state import persistent, set_value, url_value

DEFAULT_PROMPT = "The capital of France is"
_BUNDLED_CHOICE = "SmolLM2-135M-Instruct (bundled, offline)"
_OTHER_CHOICE = "Hub id or local folder…"
_NDIF_HELP = ("Run this hub model on NDIF (the National Deep Inference Fabric) through nnsight: no weights here, "
              "the logit lens is computed next to the model and only its statistics come back. NDIF serves a "
              "changing set of models (nnsight.status() lists them; Llama-3.1-70B is a dedicated one). The Lens "
              "and Home pages run there; the other analyses need the weights here.")
NDIF_KEY_STATE = "_ndif_api_key"  # this browser session's key: memory only, never in the URL, a log or a file
_DTYPE_HELP = ("Precision of the weights. auto: float32 on CPU, bfloat16 on a GPU that supports it. bfloat16 halves "
               "the memory and is fast on CPUs with AMX; statistics are always reduced in float32.")


def _device_options(current: str) -> list[str]:
    """auto, cpu, each GPU of this machine, auto-shard (spread over the GPUs, CPU RAM and disk), and ``current``
    when it is none of them (its load then says why); NDIF is the "Run on NDIF" checkbox, not a device here."""
    options = ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())] + ["auto-shard"]
    return options if current in options or current == NDIF else options + [current]


def _precision_pickers(current: ModelSpec) -> tuple[str, str]:
    """The dtype and device selectboxes, side by side; -> (dtype, device)."""
    left, right = st.sidebar.columns(2)
    with left:
        dtype = persistent(st.selectbox, "model_dtype", current.dtype, "Precision", list(DTYPES), help=_DTYPE_HELP)
    with right:
        device = persistent(st.selectbox, "model_device", current.device, "Device", _device_options(current.device),
                            help="Where the model runs. auto: the GPU when there is one.")
    return dtype, device


@dataclass(frozen=True)
class Selection:
    """What the sidebar hands every page: ``prompt`` is the text every analysis reads (the typed text, wrapped as a
    chat turn when ``chat``); ``typed`` is the text as typed (the URL's ``prompt``)."""

    spec: ModelSpec
    session: ModelSession
    prompt: str
    typed: str = ""
    chat: bool = False


def _model_picker() -> ModelSpec:
    text = url_value("model", BUNDLED)
    try:
        current = ModelSpec.parse(text)
    except ValueError as err:  # an unknown dtype or device in the link: say so, open the model in the defaults
        st.sidebar.warning(f"{err} Opened with the defaults ({DEFAULT_DTYPE}, {DEFAULT_DEVICE}).")
        current = ModelSpec.parse(split_precision(text)[0])
    st.sidebar.subheader("Model")
    if hosting.hosted():
        return _hosted_picker(current)
    choice = persistent(st.sidebar.radio, "model_choice", _BUNDLED_CHOICE if current.source == BUNDLED
                        else _OTHER_CHOICE, "Model", [_BUNDLED_CHOICE, _OTHER_CHOICE], label_visibility="collapsed")
    source = BUNDLED
    if choice == _OTHER_CHOICE:
        typed = persistent(
            st.sidebar.text_input, "model_source", "" if current.source == BUNDLED else current.source,
            "Hub id or local folder", placeholder="gpt2, EleutherAI/pythia-160m, ./my-checkpoint",
            help="Any GPT-2, Llama-family (Llama, Mistral, Qwen2, SmolLM), GPT-NeoX, GPT-J or OPT causal LM. "
                 "Remote code is never run.",
        ).strip()
        source = typed or BUNDLED
    remote = False
    if choice == _OTHER_CHOICE:
        remote = persistent(st.sidebar.checkbox, "model_remote", current.device == NDIF, "Run on NDIF (remote)",
                            help=_NDIF_HELP)
    if remote:
        _ndif_key_field()
        spec = ModelSpec(source=source, device=NDIF)
    else:
        random_init = persistent(st.sidebar.checkbox, "model_random", current.random_init,
                                 "Random-init twin (same config and tokenizer, untrained)",
                                 help="The untrained baseline the papers compare against.")
        here = current if current.device != NDIF else replace(current, device=DEFAULT_DEVICE)  # NDIF unticked
        dtype, device = _precision_pickers(here)
        spec = ModelSpec(source=source, random_init=random_init, dtype=dtype, device=device)
    set_value("model", spec.key())
    return spec


def _hosted_picker(current: ModelSpec) -> ModelSpec:
    """A hosted server's picker: the bundled model or one the host listed (no free text, no NDIF); a link naming
    another model opens the bundled one and says why."""
    allowed = [BUNDLED, *hosting.host().models]
    if current.source not in allowed or current.device == NDIF:
        try:
            hosting.host().check_model(current.source if current.device != NDIF else "NDIF: " + current.source)
        except ValueError as err:
            st.sidebar.warning(f"{err} Opened the bundled model instead.")
        current = ModelSpec.parse(BUNDLED)
        set_value("model_hosted", BUNDLED)
    source = persistent(st.sidebar.selectbox, "model_hosted", current.source, "Model", allowed,
                        format_func=lambda s: _BUNDLED_CHOICE if s == BUNDLED else s, label_visibility="collapsed",
                        help="The models this hosted server offers (its host lists them).")
    random_init = persistent(st.sidebar.checkbox, "model_random", current.random_init,
                             "Random-init twin (same config and tokenizer, untrained)",
                             help="The untrained baseline the papers compare against.")
    dtype, device = _precision_pickers(current)
    spec = ModelSpec(source=source, random_init=random_init, dtype=dtype, device=device)
    set_value("model", spec.key())
    return spec


def _ndif_key_field() -> None:
    """The NDIF API key, typed once per browser session (a password field): kept in this session's memory only, never
    in the URL, a log or a file; empty = the server's NDIF_API_KEY."""
    if NDIF_KEY_STATE in st.session_state and "w_ndif_key" not in st.session_state:
        st.session_state["w_ndif_key"] = st.session_state[NDIF_KEY_STATE]  # kept across page switches
    st.sidebar.text_input(
        "NDIF API key", type="password", key="w_ndif_key", placeholder="or set NDIF_API_KEY on the server",
        on_change=lambda: st.session_state.__setitem__(NDIF_KEY_STATE, st.session_state["w_ndif_key"]),
        help="Free at https://login.ndif.us. Used for this browser session's requests only: never written to the "
             "link, a log or a file.")


def ndif_key() -> str | None:
    """The NDIF key this browser session typed (None: use the server's NDIF_API_KEY)."""
    return (st.session_state.get(NDIF_KEY_STATE) or "").strip() or None


DRAFT_KEY = "ls_prompt_draft"
"""What the researcher typed in the sidebar's prompt box since the last Run: kept across reruns and pages (a page
control touched before Run must not throw it away), never analysed until Run."""


def _submit_prompt() -> None:
    st.session_state[DRAFT_KEY] = st.session_state["w_prompt"]
    set_value("prompt", st.session_state["w_prompt"])


def _keep_draft() -> None:
    st.session_state[DRAFT_KEY] = st.session_state["w_prompt"]


def _prompt_form() -> str:
    """The prompt box and its Run button. Only Run changes the analysed prompt; typed text in between is a draft,
    shown as "not run yet", kept when other controls rerun the page and across pages."""
    prompt = url_value("prompt", DEFAULT_PROMPT)
    draft = st.session_state.get(DRAFT_KEY)
    if draft is None or st.session_state.get("_prompt_seen") != prompt:  # a new prompt (Run, a link) resets the draft
        draft = st.session_state[DRAFT_KEY] = prompt
    st.session_state["_prompt_seen"] = prompt
    st.session_state["w_prompt"] = draft  # re-assigned on every run: the box survives page switches
    st.sidebar.subheader("Prompt")
    st.sidebar.text_area("Prompt", key="w_prompt", height=120, label_visibility="collapsed", on_change=_keep_draft)
    if draft != prompt:
        st.sidebar.caption(":orange[**Edited, not run yet.**] The page still shows the last prompt run; press Run "
                           "to analyse the text above.")
    st.sidebar.button("Run", type="primary", on_click=_submit_prompt, width="stretch", key="w_run_prompt")
    return prompt


CHAT_KEY = "chat"
"""URL key of the "Wrap as a chat turn" toggle (default off)."""
_CHAT_HELP = ("Analyse the prompt as the model's chat template writes a user turn, followed by the assistant's "
              "header: the text an assistant answers. Every page reads the wrapped text; the box keeps what you "
              "typed. The Tokens list below shows exactly what the model reads.")


def _parse_flag(raw: str) -> bool:
    return str(raw).strip().lower() in ("1", "true", "yes", "on")


def chat_toggle(session: ModelSession) -> bool:
    """The "Wrap as a chat turn" toggle (URL ``chat``), for a model with a chat template; -> whether it is on (always
    False for a model without one, which shows no toggle)."""
    url_value(CHAT_KEY, False, parse=_parse_flag)  # a link's "chat=True" read as a flag before the widget sees it
    if not has_chat_template(session.tokenizer):
        return False
    return bool(persistent(st.sidebar.toggle, CHAT_KEY, False, "Wrap as a chat turn", help=_CHAT_HELP))


def analysed_prompt(session: ModelSession, typed: str, chat: bool) -> str:
    """The text the pages analyse: ``typed``, wrapped as a user turn with the assistant's header when ``chat`` (an
    empty prompt stays empty, so each page says so in its own words)."""
    if not chat or not typed.strip():
        return typed
    try:
        return chat_prompt(session.tokenizer, typed)
    except ValueError as err:
        st.sidebar.warning(str(err))
        return typed


def tokens_expander(session: ModelSession, prompt: str) -> None:
    """The exact tokens the model reads (id, text with visible whitespace, special tokens marked), with a CSV
    download and the BOS rule in one sentence."""
    box = st.sidebar.expander("Tokens", key="x_tokens", on_change="rerun")  # drawn while open: every page has it
    if not box.open:
        return
    with box:
        try:
            ids = session.tokenize(prompt)
        except ValueError as err:
            st.caption(str(err))
            return
        table = token_table(session, ids)
        st.caption(f"{len(table)} tokens, {int(table.special.sum())} special (✓).")
        st.dataframe(table.drop(columns="position"), hide_index=False, height=min(300, 36 + 35 * len(table)),
                     width="stretch", column_config={"special": st.column_config.CheckboxColumn("special", width=50),
                                                     "id": st.column_config.NumberColumn("id", width=55)})
        st.download_button("CSV", csv_text(table), f"{file_stem('tokens')}.csv", "text/csv", key="dl_tokens_csv",
                           on_click="ignore", icon=":material/download:")
        st.caption(BOS_RULE)


def prompt_problem(session: ModelSession, prompt: str) -> None:
    """Say under the prompt box, on every page, when the analysed prompt is empty or longer than the app analyses
    (the Lens page's views then say it again where their results would be), and warn when it draws nothing (only
    spaces, line breaks, format or control characters, e.g. a lone right-to-left override)."""
    try:
        n_tokens = session.tokenize(prompt).numel()  # ValueError for an empty prompt
        cached.check_length(n_tokens)
    except ValueError as err:
        st.sidebar.error(str(err))
        return
    unseen = invisible_only(prompt)
    if unseen:
        st.sidebar.warning(f"The prompt shows nothing: it is {n_tokens} token{'s' * (n_tokens != 1)} of invisible "
                           f"characters only ({unseen}). The pages analyse it as it is; Tokens below lists them.")


CONTROL_NAMES = {"\n": "LINE FEED", "\t": "TAB", "\r": "CARRIAGE RETURN"}  # unicodedata names no control


def invisible_only(text: str) -> str:
    """"" when ``text`` has a visible character (or is empty), else the code points it holds, e.g.
    "U+202E RIGHT-TO-LEFT OVERRIDE" (spaces, line breaks, format and control characters draw nothing)."""
    if not text or any(unicodedata.category(c)[0] not in "ZC" for c in text):
        return ""
    points = list(dict.fromkeys(text))
    named = [f"U+{ord(c):04X} {unicodedata.name(c, CONTROL_NAMES.get(c, 'control'))}" for c in points[:3]]
    return ", ".join(named) + (f" and {len(points) - 3} more" if len(points) > 3 else "")


def load_session(spec: ModelSpec) -> ModelSession | None:
    """The cached session for ``spec``, or None after showing why it cannot be had."""
    try:
        if hosting.hosted():
            hosting.host().check_model(spec.source if spec.device != NDIF else "NDIF: " + spec.source)
        model_source(spec.key())  # a folder without a model or a missing path: said before loading starts
    except ValueError as err:
        st.error(str(err))
        return None
    try:
        cached.ensure_model_files(spec)
        return cached.get_session(spec.key())
    except ModelLoadError as err:
        st.error(str(err))
    except (OSError, ValueError, MemoryError, RuntimeError) as err:
        st.error(f"Could not load {spec.label()}: {err}")
    return None


def sidebar() -> Selection | None:
    """Render the shared sidebar; returns the loaded selection, or None if the model failed to load."""
    if hosting.settings_problem():
        st.sidebar.error(hosting.settings_problem())
    spec = _model_picker()
    prompt = _prompt_form()
    session = load_session(spec)
    if session is None:
        return None
    chat = chat_toggle(session)
    typed, prompt = prompt, analysed_prompt(session, prompt, chat)
    prompt_problem(session, prompt)
    tokens_expander(session, prompt)
    where = "runs on NDIF (no weights here)" if session.remote else model_facts(session.model).describe()
    if hosting.hosted():
        st.sidebar.caption(hosting.host().describe())
    st.sidebar.caption(
        f"{spec.label()} · {session.adapter.n_layers} layers · d_model {session.adapter.d_model} · "
        f"{session.adapter.n_heads} heads · vocab {session.adapter.d_vocab:,} · {where}"
    )
    return Selection(spec=spec, session=session, prompt=prompt, typed=typed, chat=chat)

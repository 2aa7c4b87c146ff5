"""The only home of ``st.cache_*``: loaded models and per-prompt results."""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from core.analyses.lens import LensResult, run_lens, run_lens_edit
from core.lenses import registry
from core.lenses.base import Lens
from core.lenses.learned import TrainedLenses, load_lenses
from core.lenses.patchscope import IDENTITY_PROMPT, QUESTION_PROMPT
from core.model.loading import (BUNDLED, ModelSpec, available_memory, bundled_model_dir, estimate_model_bytes,
                                 model_facts, models_to_release)
from core.model.session import ModelSession, Trace
from core.paths import cache_dir
from core.validate import BUNDLED_DIR
from ui import hosting
from ui.jobs import JobRegistry

MAX_APP_TOKENS = 2048
MEMORY_MARGIN = 2 * 2**30
"""Bytes left free for the analyses' working memory when deciding whether another model fits beside the held ones."""
FALLBACK_MODELS = 2
"""Models held when the free memory or the new model's size cannot be read (the count-bounded rule of old)."""


def ensure_model_files(spec: ModelSpec) -> None:
    """Convert the bundled model on first use, with a visible progress bar (about 20 s, once)."""
    if spec.source != BUNDLED or (cache_dir() / "models" / BUNDLED_DIR / "config.json").is_file():
        return
    bar = st.progress(0.0, text="Preparing the bundled model (one time)…")
    bundled_model_dir(lambda fraction, message: bar.progress(min(1.0, fraction), text=message))
    bar.empty()


class ModelStore:
    """Loaded sessions by resolved spec key, least recently used first, bounded by memory rather than by count:
    loading a model first releases the oldest held ones until it fits (:func:`models_to_release`)."""

    def __init__(self) -> None:
        self.sessions: OrderedDict[str, ModelSession] = OrderedDict()
        self.sizes: dict[str, int] = {}
        self.lock = threading.Lock()  # one load at a time: two browser sessions never load one model twice

    def get(self, spec: ModelSpec) -> ModelSession:
        key = spec.key()
        with self.lock:
            if key in self.sessions:
                self.sessions.move_to_end(key)
                return self.sessions[key]
            self.release(self.to_release(spec))
            session = _load(spec)
            self.sessions[key] = session
            self.sizes[key] = 0 if session.remote else model_facts(session.model).n_bytes
            return session

    def to_release(self, spec: ModelSpec) -> list[str]:
        """Keys to release before ``spec`` loads (oldest first)."""
        incoming, free = estimate_model_bytes(spec), available_memory()
        if incoming is None or free is None:
            return list(self.sessions)[:max(0, len(self.sessions) - FALLBACK_MODELS + 1)]
        return models_to_release([(k, self.sizes[k]) for k in self.sessions], incoming, free, MEMORY_MARGIN)

    def release(self, keys: list[str]) -> None:
        """Drop ``keys``; their memory returns once no running analysis holds the session any more."""
        for key in keys:
            del self.sessions[key], self.sizes[key]
        if keys:
            trained_lenses.clear()  # learned lenses share their model's unembedding: they would keep it alive
            gc.collect()


def _load(spec: ModelSpec) -> ModelSession:
    """Load with a spinner when called from a page (background jobs load silently)."""
    if get_script_run_ctx() is None:
        return ModelSession.load(spec)
    with st.spinner(f"Loading {spec.label()}…"):
        return ModelSession.load(spec)


@st.cache_resource
def model_store() -> ModelStore:
    """The models loaded by this server, shared by every browser session."""
    return ModelStore()


def get_session(spec_key: str) -> ModelSession:
    """One shared session per model and resolved dtype/device (``auto`` and what it resolves to share one);
    as many models are held as fit in memory."""
    spec = ModelSpec.parse(spec_key).resolved()
    if hosting.hosted():  # the sidebar refuses first, with a message; this holds for every other caller
        hosting.host().check_model(spec.source if spec.device != "ndif" else "NDIF: " + spec.source)
    return model_store().get(spec)


LENS_NAMES = registry.LABELS  # name -> display label, in the pickers' order
DEFAULT_TARGET_PROMPTS = {"identity": IDENTITY_PROMPT, "question": QUESTION_PROMPT, "question_bare": QUESTION_PROMPT}


@st.cache_resource
def job_registry() -> JobRegistry:
    """Background jobs shared by every browser session of this server."""
    limits = hosting.host()
    return JobRegistry(max_running=limits.max_jobs, max_age_s=limits.job_max_age_s,
                       max_bytes=limits.job_max_mb * 2**20)


@st.cache_resource(max_entries=4, show_spinner=False)
def trained_lenses(spec_key: str) -> TrainedLenses | None:
    """The tuned and affine lenses saved for this model in cache/lenses, if trained."""
    return load_lenses(get_session(spec_key))


def build_lens(spec_key: str, name: str, target_prompt: str = "") -> Lens:
    """A lens by name (core.lenses.registry), the learned ones from :func:`trained_lenses`; ValueError (with what
    to do) when a learned lens is not trained yet."""
    try:
        return registry.build_lens(get_session(spec_key), name, target_prompt, lambda: trained_lenses(spec_key))
    except registry.LensNotTrained as err:
        raise ValueError(err.with_hint("train it in the panel below (about 4 minutes on 2 CPU cores).")) from err


def lens_identity(spec_key: str, name: str, target_prompt: str = "") -> str:
    """What results of lens ``name`` depend on besides the model (:func:`core.lenses.registry.lens_identity`):
    the key part that ties a cached result to the trained weights or the target prompt."""
    return registry.lens_identity(build_lens(spec_key, name, target_prompt))


class TraceStore:
    """The residual traces of the prompts the Lens page shows (with their key/value caches, so a what-if edit
    continues them), least recently used first, at most :data:`MAX_TRACES`; shared by every browser session."""

    def __init__(self) -> None:
        self.traces: OrderedDict[tuple[str, str], Trace] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, spec_key: str, prompt: str) -> Trace | None:
        with self.lock:
            trace = self.traces.get((spec_key, prompt))
            if trace is not None:
                self.traces.move_to_end((spec_key, prompt))
            return trace

    def put(self, spec_key: str, prompt: str, trace: Trace) -> Trace:
        with self.lock:
            self.traces[(spec_key, prompt)] = trace
            while len(self.traces) > MAX_TRACES:
                self.traces.popitem(last=False)
        return trace


MAX_TRACES = 6
"""Traces held: a 2048-token trace of the bundled model is ~150 MB of residuals plus ~100 MB of key/value cache."""
LONG_PROMPT = 256
"""From this many tokens on, the forward pass shows a progress bar."""


@st.cache_resource
def trace_store() -> TraceStore:
    return TraceStore()


def check_length(n_tokens: int) -> None:
    limit = hosting.host().max_prompt_tokens if hosting.hosted() else MAX_APP_TOKENS
    if n_tokens > limit:
        where = "this hosted server analyses" if hosting.hosted() else "the app analyses"
        raise ValueError(
            f"The prompt is {n_tokens} tokens; {where} at most {limit} at once. "
            "Shorten it, or use `python -m core lens` for longer text."
        )


def prompt_tokens(spec_key: str, prompt: str) -> tuple[str, ...]:
    """The prompt's tokens; on a local model this runs (and keeps) its trace, with a progress bar on long prompts.
    ValueError for an empty or too long prompt, before any model work."""
    session = get_session(spec_key)
    ids = session.tokenize(prompt)
    check_length(ids.numel())
    if session.ships_requests:
        return session.token_strings(ids)
    return lens_trace(spec_key, prompt).tokens


def lens_trace(spec_key: str, prompt: str) -> Trace:
    """The prompt's residual trace (kept with its key/value cache); runs the model once per prompt and model."""
    store = trace_store()
    trace = store.get(spec_key, prompt)
    if trace is not None:
        return trace
    session = get_session(spec_key)
    ids = session.tokenize(prompt)
    check_length(ids.numel())
    bar = st.progress(0.0, text=f"Running the model on {ids.numel()} tokens…") \
        if ids.numel() >= LONG_PROMPT and get_script_run_ctx() is not None else None
    progress = (lambda f: bar.progress(min(1.0, f), text=f"Running the model on {ids.numel()} tokens… "
                                                         f"{f:.0%} of the blocks")) if bar is not None else None
    try:
        trace = session.trace(ids, keep_cache=True, progress=progress)
    finally:
        if bar is not None:
            bar.empty()
    return store.put(spec_key, prompt, trace)


@st.cache_data(max_entries=96, show_spinner="Reading the lens…")
def lens_result(spec_key: str, prompt: str, top_k: int, targets: tuple[str, ...] = (),
                target_ids: tuple[int, ...] = (), lens_name: str = "logit", target_prompt: str = "",
                lens_version: str = "", positions: tuple[int, ...] | None = None,
                layers: tuple[int, ...] | None = None) -> LensResult:
    """Lens statistics of ``prompt`` at ``layers`` x ``positions`` (default: every layer and position), cached per
    input, lens and request: the page asks for what it shows first, the full table when it is opened."""
    session = get_session(spec_key)
    lens = build_lens(spec_key, lens_name, target_prompt)
    if session.ships_requests:  # on NDIF: the whole prompt in one request (the statistics are small)
        check_length(session.tokenize(prompt).numel())
        return run_lens(session, prompt, lens=lens, top_k=top_k, targets=list(targets) or None,
                        target_ids=list(target_ids) or None, positions=None if positions is None else list(positions),
                        layers=None if layers is None else list(layers))
    return run_lens(session, prompt, lens=lens, top_k=top_k, targets=list(targets) or None,
                    trace=lens_trace(spec_key, prompt), target_ids=list(target_ids) or None,
                    positions=None if positions is None else list(positions),
                    layers=None if layers is None else list(layers))


@st.cache_data(max_entries=48, show_spinner="Reading the lens on the edited prompt…")
def edit_result(spec_key: str, base_prompt: str, prompt: str, top_k: int, targets: tuple[str, ...] = (),
                target_ids: tuple[int, ...] = (), lens_name: str = "logit", target_prompt: str = "",
                lens_version: str = "", positions: tuple[int, ...] | None = None,
                base_positions: tuple[int, ...] | None = None,
                layers: tuple[int, ...] | None = None) -> tuple[LensResult, int]:
    """What-if: the edited ``prompt``'s statistics at ``positions``, continuing the base prompt's trace and reusing
    the statistics of shared positions that the base result at ``base_positions`` holds -> (result, n reused)."""
    session = get_session(spec_key)
    if session.ships_requests or not session.executor.kv_cache:
        result = lens_result(spec_key, prompt, top_k, targets, target_ids, lens_name, target_prompt, lens_version,
                             positions, layers)
        return result, 0
    base = lens_result(spec_key, base_prompt, top_k, targets, target_ids, lens_name, target_prompt, lens_version,
                       base_positions, layers)
    trace = edit_trace(spec_key, base_prompt, prompt)
    result, reused = run_lens_edit(
        session, lens_trace(spec_key, base_prompt), base, trace, lens=build_lens(spec_key, lens_name, target_prompt),
        top_k=top_k,
        targets=list(targets) or None, target_ids=list(target_ids) or None,
        layers=None if layers is None else list(layers), positions=None if positions is None else list(positions))
    return result, reused


def edit_trace(spec_key: str, base_prompt: str, prompt: str) -> Trace:
    """The edited prompt's trace, continuing the base prompt's key/value cache over the tokens both share (kept like
    every trace of the page)."""
    store = trace_store()
    trace = store.get(spec_key, prompt)
    if trace is None:
        session = get_session(spec_key)
        check_length(session.tokenize(prompt).numel())
        trace, _ = session.trace_edit(lens_trace(spec_key, base_prompt), prompt)
        store.put(spec_key, prompt, trace)
    return trace

"""The only home of ``st.cache_*``: loaded models and per-prompt results."""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from core.analyses.lens import LensResult, run_lens
from core.lenses import registry
from core.lenses.base import Lens
from core.lenses.learned import TrainedLenses, load_lenses
from core.lenses.patchscope import IDENTITY_PROMPT, QUESTION_PROMPT
from core.model.loading import (BUNDLED, ModelSpec, available_memory, bundled_model_dir, estimate_model_bytes,
                                 model_facts, models_to_release)
from core.model.session import ModelSession
from core.paths import cache_dir
from core.validate import BUNDLED_DIR
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
    return model_store().get(ModelSpec.parse(spec_key).resolved())


LENS_NAMES = registry.LABELS  # name -> display label, in the pickers' order
DEFAULT_TARGET_PROMPTS = {"identity": IDENTITY_PROMPT, "question": QUESTION_PROMPT}


@st.cache_resource
def job_registry() -> JobRegistry:
    """Background jobs shared by every browser session of this server."""
    return JobRegistry()


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


@st.cache_data(max_entries=48, show_spinner="Running the model and the lens…")
def lens_result(spec_key: str, prompt: str, top_k: int, targets: tuple[str, ...] = (),
                target_ids: tuple[int, ...] = (), lens_name: str = "logit", target_prompt: str = "",
                lens_version: str = "") -> LensResult:
    """Lens statistics for every layer x position of ``prompt`` (cached per input and lens)."""
    session = get_session(spec_key)
    lens = build_lens(spec_key, lens_name, target_prompt)
    ids = session.tokenize(prompt)
    if ids.numel() > MAX_APP_TOKENS:
        raise ValueError(
            f"The prompt is {ids.numel()} tokens; the app analyses at most {MAX_APP_TOKENS} at once. "
            "Shorten it, or use `python -m core lens` for longer text."
        )
    return run_lens(session, prompt, lens=lens, top_k=top_k, targets=list(targets) or None,
                    trace=None if session.ships_requests else session.trace(ids), target_ids=list(target_ids) or None)

"""The only home of ``st.cache_*``: loaded models and per-prompt results."""

from __future__ import annotations

import streamlit as st

from core.analyses.lens import LensResult, run_lens
from core.lenses import registry
from core.lenses.base import Lens
from core.lenses.learned import TrainedLenses, load_lenses
from core.lenses.patchscope import IDENTITY_PROMPT, QUESTION_PROMPT
from core.model.loading import BUNDLED, ModelSpec, bundled_model_dir
from core.model.session import ModelSession
from core.paths import cache_dir
from core.validate import BUNDLED_DIR
from ui.jobs import JobRegistry

MAX_APP_TOKENS = 2048


def ensure_model_files(spec: ModelSpec) -> None:
    """Convert the bundled model on first use, with a visible progress bar (about 20 s, once)."""
    if spec.source != BUNDLED or (cache_dir() / "models" / BUNDLED_DIR / "config.json").is_file():
        return
    bar = st.progress(0.0, text="Preparing the bundled model (one time)…")
    bundled_model_dir(lambda fraction, message: bar.progress(min(1.0, fraction), text=message))
    bar.empty()


@st.cache_resource(max_entries=2, show_spinner="Loading the model…")
def get_session(spec_key: str) -> ModelSession:
    """One shared session per model (at most two kept in memory)."""
    return ModelSession.load(ModelSpec.parse(spec_key))


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
                    trace=session.trace(ids), target_ids=list(target_ids) or None)

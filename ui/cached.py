"""The only home of ``st.cache_*``: loaded models and per-prompt results."""

from __future__ import annotations

import streamlit as st

from core.analyses.lens import LensResult, run_lens
from core.lenses.patchscope import IDENTITY_PROMPT, QUESTION_PROMPT, Patchscope
from core.lenses.base import Lens
from core.lenses.logit import LogitLens
from core.model.loading import BUNDLED, ModelSpec, bundled_model_dir
from core.paths import cache_dir
from core.model.session import ModelSession
from core.lenses.learned import TrainedLenses, load_lenses
from ui.jobs import JobRegistry

MAX_APP_TOKENS = 2048


def ensure_model_files(spec: ModelSpec) -> None:
    """Convert the bundled model on first use, with a visible progress bar (about 20 s, once)."""
    if spec.source != BUNDLED or (cache_dir() / "models" / "smollm2-135m-instruct" / "config.json").is_file():
        return
    bar = st.progress(0.0, text="Preparing the bundled model (one time)…")
    bundled_model_dir(lambda fraction, message: bar.progress(min(1.0, fraction), text=message))
    bar.empty()


@st.cache_resource(max_entries=2, show_spinner="Loading the model…")
def get_session(spec_key: str) -> ModelSession:
    """One shared session per model (at most two kept in memory)."""
    return ModelSession.load(ModelSpec.parse(spec_key))


LENS_NAMES = {
    "logit": "Logit lens",
    "tuned": "Tuned lens (Belrose; trained here)",
    "affine": "Affine lens (least squares, Patchscopes baseline)",
    "identity": "Token-identity patchscope",
    "question": '"?" patchscope (logitscope)',
}
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
    """A lens by name; ValueError (with what to do) when a learned lens is not trained yet."""
    session = get_session(spec_key)
    if name == "logit":
        return LogitLens(session.adapter)
    if name in ("identity", "question"):
        return Patchscope(session, target_prompt or DEFAULT_TARGET_PROMPTS[name], name)
    if name in ("tuned", "affine"):
        trained = trained_lenses(spec_key)
        lens = None if trained is None else getattr(trained, name)
        if lens is None:
            raise ValueError(f"The {LENS_NAMES[name].split(' (')[0].lower()} is not trained for this model yet: "
                             "train it in the panel below (about 4 minutes on 2 CPU cores).")
        return lens
    raise ValueError(f"Unknown lens {name!r}; choose from {', '.join(LENS_NAMES)}.")


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

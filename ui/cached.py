"""The only home of ``st.cache_*``: loaded models and per-prompt results."""

from __future__ import annotations

import streamlit as st

from core.analyses.lens import LensResult, run_lens
from core.models import BUNDLED, ModelSpec, bundled_model_dir
from core.paths import cache_dir
from core.trace import ModelSession

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


@st.cache_data(max_entries=48, show_spinner="Running the model and the lens…")
def lens_result(spec_key: str, prompt: str, top_k: int, targets: tuple[str, ...] = (),
                target_ids: tuple[int, ...] = ()) -> LensResult:
    """Lens statistics for every layer x position of ``prompt`` (cached per input)."""
    session = get_session(spec_key)
    ids = session.tokenize(prompt)
    if ids.numel() > MAX_APP_TOKENS:
        raise ValueError(
            f"The prompt is {ids.numel()} tokens; the app analyses at most {MAX_APP_TOKENS} at once. "
            "Shorten it, or use `python -m core lens` for longer text."
        )
    return run_lens(session, prompt, top_k=top_k, targets=list(targets) or None, trace=session.trace(ids),
                    target_ids=list(target_ids) or None)

"""Building blocks of the Next-token extraction page."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import altair as alt
import pandas as pd
import streamlit as st

from core.analyses.extraction import qualitative_checks, run_extraction, summarise  # noqa: F401 (used by the page)
from core.cache import stable_key
from core.data import CORPORA, corpus_texts, evaluation_texts, parse_user_texts, sample_texts
from ui import cached
from ui.state import bound

METRICS = {
    "precision_at_1": "precision@1 (lens top-1 = the model's own prediction)",
    "surprisal_patched": "surprisal of the model's answer under the lens, −log p_lens(y*) (logitscope), nats",
    "surprisal_original": "surprisal of the lens's guess under the model, −log p_model(ŷ) (Patchscopes), nats",
}
UPLOAD = "upload a file…"


@dataclass(frozen=True)
class ExtractionRequest:
    corpus_label: str
    texts: tuple[str, ...]
    n: int
    seed: int
    methods: tuple[str, ...]


def controls(spec_key: str) -> ExtractionRequest | None:
    """Corpus, sample size, seed and methods; returns None when the input is not usable yet."""
    c1, c2, c3 = st.columns([1.4, 0.8, 0.8])
    corpus = bound(c1.selectbox, "corpus", "wikipedia", "Corpus", options=list(CORPORA) + [UPLOAD],
                   format_func=lambda c: CORPORA.get(c, c))
    n = int(bound(c2.number_input, "n", 100, "Texts (one random position each)", parse=int,
                  min_value=5, max_value=3000, step=5))
    seed = int(bound(c3.number_input, "seed", 0, "Seed", parse=int, min_value=0, max_value=2**31 - 1))
    available = [m for m in cached.LENS_NAMES if m not in ("tuned", "affine")
                 or cached.trained_lenses(spec_key) is not None]
    methods = st.multiselect("Methods", list(cached.LENS_NAMES), default=available,
                             format_func=cached.LENS_NAMES.get, key="w_methods")
    if not methods:
        st.warning("Pick at least one method.")
        return None
    if corpus == UPLOAD:
        upload = st.file_uploader("Text file: .txt (blank-line separated), .jsonl ('text'), .csv ('text')",
                                  type=["txt", "jsonl", "csv"])
        if upload is None:
            return None
        try:
            texts = parse_user_texts(upload.getvalue(), upload.name)
        except ValueError as err:
            st.error(str(err))
            return None
        label = upload.name
    else:
        texts, label = evaluation_texts(corpus_texts(corpus)), CORPORA[corpus]
    try:
        sample = sample_texts(texts, n, seed)
    except ValueError as err:
        st.error(str(err))
        return None
    return ExtractionRequest(label, tuple(sample), n, seed, tuple(methods))


def job_key(spec_key: str, request: ExtractionRequest) -> str:
    digest = hashlib.sha256("\x00".join(request.texts).encode("utf-8")).hexdigest()
    versions = {m: getattr(cached.build_lens(spec_key, m), "version", "") for m in request.methods
                if m in ("tuned", "affine")}
    return stable_key("extraction-job", model=cached.get_session(spec_key).identity(), texts=digest,
                      seed=request.seed, methods=request.methods, versions=versions)


def work(spec_key: str, request: ExtractionRequest):
    lenses = {m: cached.build_lens(spec_key, m) for m in request.methods}

    def run(progress):
        return run_extraction(cached.get_session(spec_key), list(request.texts), lenses, request.seed, progress)
    return run


def metric_chart(summary: pd.DataFrame, metric: str) -> alt.Chart:
    """One line per method across source layers (surprisals on a symlog axis: the embeddings' logit-lens
    reading is off by two orders of magnitude)."""
    scale = alt.Scale(domain=[0, 1]) if metric == "precision_at_1" else alt.Scale(type="symlog")
    return alt.Chart(summary).mark_line(point=True).encode(
        x=alt.X("layer:Q", title="source layer (0 = embeddings)"),
        y=alt.Y(f"{metric}:Q", scale=scale,
                title="precision@1" if metric == "precision_at_1" else f"{metric.replace('_', ' ')} (nats, symlog)"),
        color=alt.Color("method:N", title="method"),
        strokeDash=alt.StrokeDash("method:N", title="method"),
        tooltip=["layer", "method", alt.Tooltip(f"{metric}:Q", format=".3f"), "n"],
    ).properties(width=560, height=300)


def verdicts(summary: pd.DataFrame) -> None:
    """The papers' qualitative picture, checked against these numbers."""
    for check in qualitative_checks(summary):
        icon = ":material/check_circle:" if check["holds"] else ":material/cancel:"
        st.markdown(f"{icon} **{check['claim']}** — {'holds' if check['holds'] else 'does not hold'} here "
                    f"({check['evidence']}).")

"""Building blocks of the Next-token extraction page."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import streamlit as st

from core.analyses.extraction import extraction_is_cached, qualitative_checks, run_extraction, summarise
from core.analyses.params import EXTRACTION_PRESET_NOTES, EXTRACTION_PRESETS
from core.cache import stable_key
from core.data import CORPORA, corpus_texts, evaluation_texts, parse_user_texts, sample_texts
from core.lenses.registry import LEARNED
from core.progress import Progress
from ui import cached, hosting
from ui.charts.extraction import metric_chart
from ui.downloads import show_chart, table_downloads
from ui.job_panel import job_panel
from ui.presets import preset_buttons
from ui.state import bound, set_value, url_list
from ui.verdicts import method_differences, show_verdicts
from ui.views import lens_training

URL_KEYS = ["corpus", "n", "seed", "methods"]  # besides the model and prompt every page keeps
METRICS = {
    "precision_at_1": "precision@1 (lens top-1 = the model's own prediction)",
    "surprisal_patched": "surprisal of the model's answer under the lens, −log p_lens(y\\*) (logitscope), nats",
    "surprisal_original": "surprisal of the lens's guess under the model, −log p_model(ŷ) (Patchscopes), nats",
}
UPLOAD = "upload a file…"
DIFFERENCES = [
    "**Text.** The bundled English Wikipedia sample (gensim test data; the tenth used to train the learned lenses "
    "is left out) instead of the Pile, which cannot be downloaded here. The length filter is Patchscopes' (fewer "
    "than 250 words and 2,000 characters); logitscope kept < 200 words and < 1,600 characters of its first 2,000 "
    "documents (698 prompts).",
    "**Layers.** Layer l is the residual after block l, so the papers' 0-based block-output index ℓ0 is l = ℓ0 + 1 "
    "here; the embeddings (layer 0) are read as well, which neither paper does.",
    "**Position.** One random position per text, never the BOS position when the tokenizer adds one (Patchscopes' "
    "start_pos = 1); logitscope could also pick its BOS position.",
    "**'?' patchscope.** A sink token (BOS, else EOS) then '?', as logitscope's TransformerLens run really "
    "was; the bare '?' of its code, without the sink, is the separate method 'question_bare'.",
    "**Affine lens** (the Patchscopes paper's 'tuned lens'). The same least-squares map to the last layer's "
    "post-norm hidden state, fitted on every token of the held-out tenth of the corpus instead of 10,000 "
    "one-position Pile examples. The method called **tuned** here is a Belrose-style tuned lens (trained here: "
    "no pretrained one exists for most models), a different baseline.",
    "**Precision.** Weights in float32 on CPU (the papers ran 12-13B models in float16).",
    "**Verdicts.** 'Early' means layers 0 to L/3 and 'later' L/3 to L−1: the papers name GPT-J's layer 10 of "
    "28 for the crossover; the claims are judged per text with a bootstrap interval, which the papers do not report.",
]


@dataclass(frozen=True)
class ExtractionRequest:
    corpus_label: str
    texts: tuple[str, ...]
    n: int
    seed: int
    methods: tuple[str, ...]


def controls(spec_key: str) -> ExtractionRequest | None:
    """Corpus, sample size, seed and methods; returns None when the input is not usable yet."""
    available = [m for m in cached.LENS_NAMES if m not in LEARNED
                 or cached.trained_lenses(spec_key) is not None]
    presets = {name: {"n": p["n"], "seed": p["seed"], "corpus": p["corpus"],
                      "methods": [m for m in p["methods"] if m in available]}
               for name, p in EXTRACTION_PRESETS.items()}
    preset_buttons(presets, "extraction", EXTRACTION_PRESET_NOTES)
    c1, c2, c3 = st.columns([1.4, 0.8, 0.8])
    corpus = bound(c1.selectbox, "corpus", "wikipedia", "Corpus", options=list(CORPORA) + hosting.uploads([UPLOAD]),
                   format_func=lambda c: CORPORA.get(c, c))
    n = int(bound(c2.number_input, "n", 100, "Texts (one random position each)", parse=int,
                  min_value=5, max_value=3000, step=5, samples=True))
    seed = int(bound(c3.number_input, "seed", 0, "Seed", parse=int, min_value=0, max_value=2**31 - 1))
    chosen = [m for m in url_list("methods", available) if m in cached.LENS_NAMES]
    st.session_state["w_methods"] = chosen  # re-assigned each run (a preset may have changed it), as ui.state.bound
    methods = st.multiselect("Methods", list(cached.LENS_NAMES), format_func=cached.LENS_NAMES.get, key="w_methods",
                             on_change=lambda: set_value("methods", list(st.session_state["w_methods"])))
    set_value("methods", list(methods))
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


def learned_lens_hint(spec_key: str) -> None:
    """Without trained tuned and affine lenses, an expander with the panel that trains them."""
    if cached.trained_lenses(spec_key) is None:
        with st.expander("The tuned and affine lenses need training for this model first"):
            lens_training.panel(spec_key)


def job_key(spec_key: str, request: ExtractionRequest) -> str:
    """What the job computes: model identity, the sampled texts, seed, methods and the learned lenses' versions."""
    digest = hashlib.sha256("\x00".join(request.texts).encode("utf-8")).hexdigest()
    versions = {m: cached.lens_identity(spec_key, m) for m in request.methods if m in LEARNED}
    return stable_key("extraction-job", model=cached.get_session(spec_key).identity(), texts=digest,
                      seed=request.seed, methods=request.methods, versions=versions)


def work(spec_key: str, request: ExtractionRequest) -> Callable[[Progress], pd.DataFrame]:
    """The background job: the lenses are built now (in the script thread), the extraction runs in the job."""
    lenses = {m: cached.build_lens(spec_key, m) for m in request.methods}

    def run(progress: Progress) -> pd.DataFrame:
        return run_extraction(cached.get_session(spec_key), list(request.texts), lenses, request.seed, progress)
    return run


def run_job(spec_key: str, request: ExtractionRequest) -> pd.DataFrame | None:
    """The Run button, then the job's progress; returns its rows (one per text, layer and method) once done."""
    caption = (f"{len(request.texts)} texts from {request.corpus_label}, {len(request.methods)} methods. The progress "
               "bar shows the time to go, measured from the work done so far; a run can be cancelled. Results are "
               "cached on disk.")
    lenses = {m: cached.build_lens(spec_key, m) for m in request.methods}
    stored = extraction_is_cached(cached.get_session(spec_key), list(request.texts), lenses, request.seed)
    return job_panel(job_key(spec_key, request), "Extraction", work(spec_key, request), button_key="run_extraction",
                     caption=caption, start_now=stored)  # a link to a stored run shows it without a Run click


def show_result(rows: pd.DataFrame) -> None:
    """The verdicts, one chart per metric (with downloads) and the tables of a finished extraction."""
    summary = summarise(rows)
    st.subheader(f"{rows.text.nunique()} texts, {summary.layer.nunique()} layers, {summary.method.nunique()} methods")
    verdicts(rows)
    method_differences("Patchscopes and logitscope", DIFFERENCES)
    st.caption("Methods: " + "; ".join(f"**{m}** = {cached.LENS_NAMES[m]}" for m in sorted(summary.method.unique())))
    for metric, description in METRICS.items():
        st.markdown(f"**{description}**")
        show_chart(metric_chart(summary, metric), summary, f"extraction_{metric}")
    with st.expander("Table (per layer and method)", expanded=False):
        st.dataframe(summary, hide_index=True, width="stretch")
        table_downloads(summary, "extraction_summary", key="dl_extraction_table")
        table_downloads(rows, "extraction_rows", key="dl_extraction_rows")


def verdicts(rows: pd.DataFrame) -> None:
    """The papers' qualitative picture, judged on these per-text numbers: estimate, 95 % interval and n each."""
    show_verdicts(qualitative_checks(rows), "extraction",
                  note="The check: every lens's last layer is the model's own output, so precision@1 is 1 there.")

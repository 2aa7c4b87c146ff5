"""Building blocks of the Depth page: one tab per section, each a background job with its figure."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.analyses.depth.params import LENSES as DEPTH_LENSES
from core.analyses.depth.params import PRESET_NOTES, PRESETS
from core.analyses.depth.sections import run_section, section_is_cached
from core.analyses.depth.verdicts import verdicts
from core.cache import stable_key
from core.data import CORPORA
from ui import cached
from ui import job_panel as jobs
from ui.charts.depth import FIGURES
from ui.downloads import show_chart, tables_expander
from ui.presets import preset_buttons
from ui.state import bound
from ui.verdicts import method_differences
from ui.verdicts import show_verdicts as verdict_lines
from ui.views import lens_training

# besides the model and prompt every page keeps
URL_KEYS = ["depth_lens", "depth_seed"] + [f"depth_n_{s}" for s in ("pos", "facts", "options", "frequency")]
SECTIONS = {"pos": "Parts of speech", "facts": "Multi-token facts", "options": "Option-constrained tasks",
            "frequency": "Frequency buckets and decision flips"}
DEFAULT_N = PRESETS["quick"]  # the quick-look sizes
DIFFERENCES = [
    "**Layers.** Layer l is the residual after block l, so the paper's 0-based block index ℓ0 is l = ℓ0 + 1 here, "
    "and ℓ\\*(k) can also be 0: the embeddings are read too. The flip claim's \"first layer\" is layer 1 here.",
    "**Lens.** The logit lens by default. The paper's frequency and flip figures use a tuned lens from the "
    "tuned-lens package; none is published for most models, so pick \"Tuned lens\" after training one here.",
    "**Parts of speech.** The bundled English Wikipedia sample and the spaCy pipeline en_core_web_sm (as the paper; "
    "the package here is its offline build) instead of Wikipedia 20220301.en. Prompts are built as in the paper "
    "(spaCy tokens joined by spaces, at least 17 characters, kept only when the greedy token is the answer's first "
    "sub-token). n counts kept examples per tag; the paper drew 10,000 or 20,000 candidates per tag.",
    "**Facts.** Cloze prompts from the bundled relation lists (word2vec's questions-words: capitals, currencies, "
    "cities in states, nationalities), one demonstration each, instead of MQuAKE-CF-3k single hops. Teacher forcing "
    "is the paper's.",
    "**Options.** A 4-shot sentiment task on the bundled movie-review sentences (options negative/positive) and a "
    "2-shot capital-city multiple choice (A-D), instead of the paper's MMLU, SST, MRPC and NLI prompt files. The "
    "option token is the last token of \" \" + option, as in the paper. \"Identified\" and \"decided\" are "
    "RESEARCH.md's reconstruction of the paper's wording.",
    "**Frequency buckets.** Counted with this model's tokenizer over the bundled Wikipedia sample (the paper's "
    "counting corpus is not public); the prefixes are cut at a random word as in the paper.",
    "**Sample sizes.** See the presets; the paper used thousands of examples per group.",
]
N_HELP = {"pos": "kept examples per tag", "facts": "prompts in all (shared by the relations)",
          "options": "examples per task", "frequency": "random Wikipedia prefixes"}


def controls() -> tuple[str, int]:
    """The presets, the lens (logit or tuned) and the sampling seed, all bound to the URL."""
    preset_buttons({name: {f"depth_n_{s}": n for s, n in sizes.items()} for name, sizes in PRESETS.items()},
                   "depth", PRESET_NOTES)
    c1, c2 = st.columns(2)
    lens_name = bound(c1.selectbox, "depth_lens", "logit", "Lens", options=list(DEPTH_LENSES),
                      format_func=cached.LENS_NAMES.get)
    seed = int(bound(c2.number_input, "depth_seed", 42, "Seed", parse=int, min_value=0, max_value=2**31 - 1))
    return lens_name, seed


def lens_ready(spec_key: str, lens_name: str) -> bool:
    """Whether the lens can be built; if not (a tuned lens not trained yet), say why and offer the training panel."""
    try:
        cached.build_lens(spec_key, lens_name)
    except ValueError as err:
        st.error(str(err))
        lens_training.panel(spec_key)
        return False
    return True


def section_tabs(spec_key: str, lens_name: str, seed: int) -> None:
    """One tab per section (its job, then its figures), and a last tab with the verdict on the paper's claims."""
    results: dict[str, dict[str, pd.DataFrame]] = {}
    tabs = st.tabs(list(SECTIONS.values()) + ["Verdict"])
    for section, tab in zip(SECTIONS, tabs):
        with tab:
            frames = section_job(spec_key, lens_name, section, seed)
            if frames is not None:
                results[section] = frames
                show_section(section, frames)
    with tabs[-1]:
        show_verdicts(results)
        method_differences("Gupta et al.", DIFFERENCES)


def _key(spec_key: str, lens_name: str, section: str, n: int, seed: int) -> str:
    version = cached.lens_identity(spec_key, lens_name)  # "" for logit, the trained weights for tuned
    return stable_key("depth-job", model=cached.get_session(spec_key).identity(), section=section, n=n,
                      seed=seed, lens=lens_name, version=version)


def section_job(spec_key: str, lens_name: str, section: str, seed: int) -> dict[str, pd.DataFrame] | None:
    """Sample size + Run for one section; returns its frames once computed (None before)."""
    n = int(bound(st.number_input, f"depth_n_{section}", DEFAULT_N[section], f"n ({N_HELP[section]})", parse=int,
                  min_value=1, max_value=2000, samples=True))
    key = _key(spec_key, lens_name, section, n, seed)
    lens = cached.build_lens(spec_key, lens_name)
    session = cached.get_session(spec_key)
    return jobs.job_panel(key, f"Depth: {section}",
                          lambda progress: run_section(session, lens, section, n, seed, progress),
                          button_key=f"run_depth_{section}",
                          start_now=section_is_cached(session, lens, section, n, seed),  # a link reopens results
                          caption="Results are cached on disk: a second run with the same settings is instant.")


def show_section(section: str, frames: dict[str, pd.DataFrame]) -> None:
    """The section's figure(s) and tables with downloads."""
    if section == "pos":
        st.caption("Examples kept per tag (the model's greedy token is the word's first sub-token): "
                   + ", ".join(f"{r.tag} {r.kept} of {r.tried} tried" for r in frames["counts"].itertuples()))
    if section == "frequency":
        st.caption(f"Frequencies counted with this model's tokenizer over the {CORPORA['wikipedia']}.")
    for table, build in FIGURES[section]:
        show_chart(build(frames), frames[table], f"depth_{section}_{table}")
    tables_expander(frames, f"depth_{section}")


def show_verdicts(results: dict[str, dict[str, pd.DataFrame]]) -> None:
    """Each claim of the paper with its verdict on the sections run so far."""
    if not results:
        st.info("Run the sections above; each claim is judged on the sections it needs.")
        return
    verdict_lines(verdicts(results), "depth")

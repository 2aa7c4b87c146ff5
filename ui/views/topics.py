"""Building blocks of the Neuron topics page: the unit picker, settings, background jobs, the three tabs and
their tables (the charts are built in ui/charts/topics.py).

Blocks are 1-based (block l writes layer l; core/layers.py), in the ``topics_block`` URL key, the widgets, the
captions, the download names and the calls into the analysis (core.analyses.topics.cached_runs takes them so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd
import streamlit as st

from core.analyses.topics.cached_runs import Reference, compare_random, prepare, scan_layer, unit_result
from core.analyses.topics.corpus import DEFAULT_MIN_FREQ, DEFAULT_VOCAB_SIZE, MIN_WORD_LEN, WINDOW
from core.analyses.topics.neuron import TopicParams
from core.analyses.topics.params import PAPER_SIZE_LIMITS, PAPER_THRESHOLDS
from core.analyses.topics.vocab import DEFAULT_TAU, MODES
from core.analyses.topics.word_sets import DEFAULT_TIME_LIMIT, FUNCTION_SIZE_LIMITS, FUNCTION_THRESHOLDS
from core.cache import stable_key
from core.layers import after_block, layer_entering
from core.model.session import ModelSession
from core.validate import text_folder
from ui import cached
from ui import job_panel as jobs
from ui.charts import topics as charts
from ui.downloads import chart_downloads, table_downloads
from ui.state import bound, set_value

URL_KEYS = ["topics_mode", "topics_block", "topics_unit", "topics_seed"]
HEADING = "Neuron topics: superposed topic models"
CAPTION = (
    "A unit's vocabulary distribution β (the logits it alone produces), its top and bottom τ tokens mapped to "
    "words of a reference corpus, the NPMI graph among those words, disjoint word sets from the star heuristic, "
    "and for each set the 10 words of maximal mean pairwise NPMI (coherence), solved exactly as an integer "
    "program (SciPy milp / HiGHS). The random baseline puts a seeded permutation of the vocabulary in place of β. "
    "Blocks are numbered from 1 as on every page: block l writes layer l, and neuron n of block l is the same "
    "neuron as block l on the Attention → MLP page."
)
TABS = ["Neuron", "Find interesting neurons", "Real vs random"]


@dataclass(frozen=True)
class Unit:
    """The unit the page shows: ``mode``, 1-based ``block``, ``unit`` (neuron or residual dimension), the
    baseline ``seed``, and how many units the block has in this mode."""

    mode: str
    block: int
    unit: int
    seed: int
    n_units: int

    @property
    def hi(self) -> bool:
        return self.mode.startswith("hi")


def unit_controls(session: ModelSession) -> Unit:
    """Mode, block (1-based), unit and baseline seed, bound to the URL; then a line saying what is injected."""
    adapter = session.adapter
    c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
    mode = bound(c1.selectbox, "topics_mode", "hi-c", "Mode", options=list(MODES), format_func=MODES.get)
    n_units = adapter.d_mlp if mode.startswith("hi") else adapter.d_model
    block = int(bound(c2.number_input, "topics_block", adapter.n_layers // 2, "Block", parse=int, min_value=1,
                      max_value=adapter.n_layers,
                      help="1-based: block l writes layer l (the app's labels: emb, 1 … L). Hi modes read the MLP "
                           "of block l, Lo modes inject into the stream entering it."))
    unit = int(bound(c3.number_input, "topics_unit", 0, "Neuron" if mode.startswith("hi") else "Dimension",
                     parse=int, min_value=0, max_value=n_units - 1))
    seed = int(bound(c4.number_input, "topics_seed", 0, "Baseline seed", parse=int, min_value=0,
                     max_value=2**31 - 1))
    chosen = Unit(mode, block, unit, seed, n_units)
    st.markdown(describe_unit(chosen, adapter.n_layers))
    return chosen


def describe_unit(u: Unit, n_layers: int) -> str:
    """One line: which vector is injected, which blocks it runs through, then the final norm and unembedding."""
    where = (f"MLP neuron {u.unit} of block {u.block}: its output direction (row {u.unit} of the down-projection "
             "as [d_mlp, d_model], plus the projection's bias where it has one, as GPT-2's c_proj)"
             if u.hi else f"residual dimension {u.unit} entering block {u.block} "
             f"(= {after_block(layer_entering(u.block))})")
    runs = {"hi-c": f"blocks {u.block + 1}…{n_layers}" if u.block < n_layers else "no later block",
            "hi-i": "no block", "lo-c": f"blocks {u.block}…{n_layers}", "lo-i": f"block {u.block} only"}[u.mode]
    return (f"**{MODES[u.mode].split(':')[0]}** — {where}, injected as a one-token sequence, run through {runs}, "
            "then the final norm and the unembedding.")


def settings() -> TopicParams:
    """The pipeline's settings in an expander (paper defaults shown in the help)."""
    with st.expander("Settings (corpus, pools, star heuristic, exact solving)"):
        c1, c2, c3, c4 = st.columns(4)
        tau = c1.number_input("τ (pool tokens)", 50, 5000, DEFAULT_TAU, 50, key="w_topics_tau",
                              help="Top and bottom τ tokens of β (paper: 900).")
        min_freq = c2.number_input("min frequency (windows)", 1, 1000, DEFAULT_MIN_FREQ, key="w_topics_mf",
                                   help=MIN_FREQ_HELP)
        time_limit = c3.number_input("time limit per topic (s)", 1.0, 600.0, DEFAULT_TIME_LIMIT,
                                     key="w_topics_tl", help="Paper: 180 s (SCIP); 120 s in the notebook.")
        vocab = c4.number_input("corpus vocabulary", 1000, 200_000, DEFAULT_VOCAB_SIZE, 1000, key="w_topics_vocab",
                                help="The most frequent words (paper: Wikipedia-V40K).")
        c1, c2, c3, c4 = st.columns(4)
        lo = c1.number_input("θ lower", -1.0, 1.0, PAPER_THRESHOLDS[0], 0.025, key="w_topics_tlo")
        hi = c2.number_input("θ upper", -1.0, 1.0, PAPER_THRESHOLDS[1], 0.025, key="w_topics_thi")
        k_lo = c3.number_input("κ lower (min set size)", 2, 200, PAPER_SIZE_LIMITS[0], key="w_topics_klo")
        k_hi = c4.number_input("κ upper (max set size)", 2, 200, PAPER_SIZE_LIMITS[1], key="w_topics_khi")
        st.caption(f"Paper defaults: GPT-2 notebook θ = {PAPER_THRESHOLDS}, κ = {PAPER_SIZE_LIMITS} (used here); "
                   f"Llama notebook θ = (0.025, 1), κ = (10, 32); star_heuristic's own θ = {FUNCTION_THRESHOLDS}, "
                   f"κ = {FUNCTION_SIZE_LIMITS}. Topics have k = 10 words.")
        corpus = st.text_input("Reference corpus", "", key="w_topics_corpus",
                               placeholder="empty = the bundled Wikipedia sample; or a folder of .txt files",
                               help="A folder's .txt files are read as one document per blank-line paragraph "
                                    "(at most 200 MB).").strip() or "wikipedia"
    return TopicParams(tau=int(tau), min_freq=int(min_freq), thresholds=(float(lo), float(hi)),
                       size_limits=(int(k_lo), int(k_hi)), time_limit=float(time_limit), corpus=corpus,
                       vocab_size=int(vocab))


MIN_FREQ_HELP = (f"p(w) and p(a, b) count as 0 below this many windows. The paper's 100 is for billions of words; "
                 f"for the bundled sample (~0.5M words) the default {DEFAULT_MIN_FREQ} equals the window: one "
                 f"co-occurrence spans at most {WINDOW - 1} windows, so a pair must co-occur at least twice, while "
                 "a word seen once still counts. Measured on 39 Hi-C neurons of block 13: 2.2 word sets per pool "
                 "at 10, 0.5 at 20, 0.03 at 40; the random baseline gave 0 at all three.")


def check(params: TopicParams) -> None:
    """ValueError (one line, shown by the page) for settings the pipeline would reject, before a job starts:
    the analysis's own rules, and a corpus folder that does not exist or holds no .txt files."""
    params.check()
    if params.corpus not in ("", "wikipedia", "bundled"):
        text_folder(params.corpus)


def job(key: str, label: str, work: Callable[[Callable], Any], button: str, button_key: str,
        start_now: bool = False) -> Any:
    """A background job behind a button (or started at once): its result when done, else None."""
    return jobs.job_panel(key, label, work, button=button, button_key=button_key, start_now=start_now)


def reference(spec_key: str, params: TopicParams) -> Reference | None:
    """The counted corpus (a background job the first time: counting takes a few seconds, then cached)."""
    session = cached.get_session(spec_key)
    key = stable_key("topics-ref", model=session.identity(), corpus=params.corpus, vocab=params.vocab_size)
    return job(key, "Counting the reference corpus", lambda progress: prepare(session, params, progress),
               "Count", "topics_ref", start_now=True)


def describe_reference(ref: Reference, params: TopicParams) -> None:
    st.caption(
        f"Reference corpus — {ref.counts.describe()}. Words: lower-cased, alphabetic, at least {MIN_WORD_LEN} "
        f"letters; windows of {WINDOW} slide over the vocabulary-filtered words, while N = Σ max(1, len − "
        f"{WINDOW - 1}) uses raw document lengths (the reference convention). min frequency {params.min_freq} "
        f"windows (default {DEFAULT_MIN_FREQ}, not the paper's 100, which is for billions of words: at the window "
        f"size a pair must co-occur at least twice, as one co-occurrence spans at most {WINDOW - 1} windows). "
        "NPMI values depend on the corpus: they are not comparable with the paper's Wikipedia-V40K "
        f"(billions of words). Tokens → words: {ref.wmap.scheme}; {ref.wmap.multi_token_share:.0%} of corpus words "
        "are split into several tokens, so the multi-token rule applies (a word enters a pool when all of its "
        "mid-sentence tokens are in the top-τ set; the single-token rule — strip the leading space, lower-case — "
        "also counts, so ' Paris' gives 'paris'); the cut shrinks by 50 until the pool holds ≤ τ words.")


def unit_job(spec_key: str, ref: Reference, mode: str, block: int, unit: int, params: TopicParams,
             random_seed: int | None) -> Any:
    """One unit of 1-based ``block`` (or its random baseline), started at once."""
    session = cached.get_session(spec_key)
    which = "random baseline" if random_seed is not None else "neuron"
    key = stable_key("topics-unit-job", model=session.identity(), counts=ref.counts.key, mode=mode, block=block,
                     unit=unit, seed=random_seed, **params.cache_parts())
    return job(key, f"Topics of the {which}", lambda progress: unit_result(session, ref, mode, block, unit, params,
                                                                           random_seed),
               "Run", f"topics_unit_{which}", start_now=True)


def scan_job(spec_key: str, ref: Reference, mode: str, block: int, params: TopicParams) -> pd.DataFrame | None:
    """Every unit of 1-based ``block``, behind a button."""
    session = cached.get_session(spec_key)
    key = stable_key("topics-scan-job", model=session.identity(), counts=ref.counts.key, mode=mode, block=block,
                     **params.cache_parts())
    return job(key, f"Scanning block {block}",
               lambda progress: scan_layer(session, ref, mode, block, params, progress),
               "Scan the block", "topics_scan")


def compare_job(spec_key: str, ref: Reference, mode: str, block: int, n: int, seed: int,
                params: TopicParams) -> dict[str, pd.DataFrame] | None:
    """``n`` random units of 1-based ``block`` against the random baseline, behind a button."""
    session = cached.get_session(spec_key)
    key = stable_key("topics-compare-job", model=session.identity(), counts=ref.counts.key, mode=mode, block=block,
                     n=n, seed=seed, **params.cache_parts())
    return job(key, f"Real vs random ({n} units)",
               lambda progress: compare_random(session, ref, mode, block, n, seed, params, progress),
               "Compare", "topics_compare")


# -- tables and tabs ----------------------------------------------------------------------------------
def show_sets(sets: pd.DataFrame, summary: pd.DataFrame, name: str, key: str) -> None:
    """Per polarity: pool size, word sets with their best 10-word topic and its coherence."""
    for row in summary.itertuples():
        coh = "" if pd.isna(row.mean_coherence) else f", mean topic coherence {row.mean_coherence:.3f}"
        st.markdown(f"**{'top' if row.polarity == 'pos' else 'bottom'} τ ({row.polarity})**: pool of "
                    f"{row.pool_size} words (token cut {row.cut}), {row.n_sets} word sets{coh}")
    shown = sets[["polarity", "set", "size", "topic", "coherence", "status", "words"]]
    st.dataframe(shown, hide_index=True, width="stretch", height=min(400, 40 + 35 * max(1, len(shown))),
                 column_config={"coherence": st.column_config.NumberColumn(format="%.4f")})
    table_downloads(sets, f"{name}_sets", key=f"dl_{key}_sets")


MEASURED = (
    "Measured on the bundled SmolLM2-135M with the bundled Wikipedia sample and default settings (Hi-C, 20 neurons "
    "per block, seed 0, both polarities): block 13 — word sets per pool 1.53 real vs 0.00 random (Mann-Whitney "
    "p = 5e-6); block 25 — 0.40 vs 0.00 (p = 0.08). The random pools gave no word set at θ = (0.1, 1), so topic "
    "coherence could only be compared at star_heuristic's own θ = (0, 1), κ = (10, 32): block 13 — 2.58 vs 0.45 "
    "sets per pool (p = 0.012), mean topic coherence −0.044 (103 topics) vs −0.073 (18 topics), p = 0.12. "
    "Coherences are low because in a corpus of half a million words most word pairs never share a window "
    "(NPMI ≈ −0.3 … −0.9 for those).")


def show_comparison(frames: dict[str, pd.DataFrame], name: str) -> None:
    """Mann-Whitney table, the tick chart and the per-pool / per-topic tables."""
    tests = frames["tests"]
    for row in tests.itertuples():
        p = "n/a (no values to compare)" if pd.isna(row.p) else f"{row.p:.2g}"
        st.markdown(f"**{row.metric}**: real mean {row.real_mean:.3f} (n={row.n_real}) vs random "
                    f"{row.random_mean:.3f} (n={row.n_random}); Mann-Whitney U = {row.U:.0f}, p = {p}")
    chart = charts.comparison_chart(frames["rows"], frames["topics"])
    st.altair_chart(chart, width="content")
    chart_downloads(chart, frames["rows"], name, key="dl_topics_cmp_chart")
    with st.expander("Tables"):
        for table in ("tests", "rows", "topics"):
            st.markdown(f"**{table}**")
            st.dataframe(frames[table], hide_index=True, width="stretch", height=220)
            table_downloads(frames[table], f"{name}_{table}", key=f"dl_topics_cmp_{table}")


def _show_unit(unit: int) -> None:
    set_value("topics_unit", unit)
    st.session_state["w_topics_unit"] = unit


def pick_from_scan(scan: pd.DataFrame) -> None:
    """Choose one of the scan's most interesting units for the Neuron tab."""
    best = scan.head(50)
    if best.empty or int(best.n_sets.iloc[0]) == 0:
        st.info("No unit of this block gives a word set with these settings.")
        return
    row = st.container(horizontal=True, vertical_alignment="bottom")
    unit = row.selectbox("Unit", best.unit.tolist(), key="w_topics_pick",
                         format_func=lambda u: f"{u} ({int(best.set_index('unit').n_sets[u])} word sets)")
    row.button("Show its topics", key="topics_pick", on_click=_show_unit, args=(int(unit),))


def _graph(real) -> None:
    """The NPMI graph of the unit's top or bottom pool, optionally only among words in star sets."""
    g1, g2 = st.columns([2, 3])
    pol = g1.radio("Graph of", ["pos", "neg"], horizontal=True, key="w_topics_graph",
                   format_func={"pos": "top τ pool", "neg": "bottom τ pool"}.get)
    only_sets = g2.checkbox("Only words in star sets", key="w_topics_only_sets")
    edges = real.edges[real.edges.polarity == pol]
    edges = edges[(edges.set_a > 0) & (edges.set_b > 0)] if only_sets else edges
    if edges.empty:
        st.info("No NPMI edge within the thresholds among words with at least κ lower such edges"
                + (" and in star sets." if only_sets else "."))
        return
    nodes, lines = charts.graph_frames(edges)
    chart = charts.graph_chart(nodes, lines)
    st.caption(f"NPMI edges within θ among words of degree ≥ κ lower (the {len(lines)} strongest of "
               f"{len(edges)}); colour = star set; drag to pan, scroll to zoom.")
    st.altair_chart(chart, width="content")
    chart_downloads(chart, lines, f"topics_graph_{pol}", key="dl_topics_graph")


def neuron_tab(spec_key: str, ref: Reference, u: Unit, params: TopicParams) -> None:
    """The unit and its random baseline side by side, then the NPMI graph and the pools."""
    real_col, random_col = st.columns([3, 2])
    with real_col:
        st.subheader("This unit")
        real = unit_job(spec_key, ref, u.mode, u.block, u.unit, params, None)
    with random_col:
        st.subheader(f"Random baseline (seed {u.seed})")
        rand = unit_job(spec_key, ref, u.mode, u.block, u.unit, params, u.seed)
    if real is not None:
        for note in real.notes:
            st.warning(note)
        with real_col:
            show_sets(real.sets, real.summary, f"topics_{u.mode}_b{u.block}_u{u.unit}", "topics_real")
    if rand is not None:
        with random_col:
            show_sets(rand.sets, rand.summary, f"topics_random_{u.seed}", "topics_random")
    if real is None:
        return
    _graph(real)
    with st.expander("Pools and edges"):
        st.dataframe(real.pools, hide_index=True, width="stretch", height=240)
        table_downloads(real.pools, "topics_pools", key="dl_topics_pools")
        table_downloads(real.edges, "topics_edges", key="dl_topics_edges")


def scan_tab(spec_key: str, ref: Reference, u: Unit, params: TopicParams) -> None:
    """Every unit of the block (a job behind a button), with a picker that shows one in the Neuron tab."""
    st.caption(f"Every unit of block {u.block} ({u.n_units}): pools and star sets of both polarities, without the "
               "exact topics; most word sets first. Show one in the Neuron tab with the button below.")
    scan = scan_job(spec_key, ref, u.mode, u.block, params)
    if scan is not None:
        pick_from_scan(scan)
        st.dataframe(scan, hide_index=True, width="stretch", height=360)
        table_downloads(scan, f"topics_scan_{u.mode}_b{u.block}", key="dl_topics_scan")


def compare_tab(spec_key: str, ref: Reference, u: Unit, params: TopicParams) -> None:
    """Seeded random units of the block against as many random-permutation baselines (a job behind a button)."""
    st.caption("Units drawn at random (seeded) from the block against the same number of random-permutation "
               "baselines, through the same pipeline; two-sided Mann-Whitney U tests. " + MEASURED)
    n = int(st.number_input("units sampled from the block", 2, u.n_units, min(20, u.n_units), key="w_topics_cmp_n"))
    frames = compare_job(spec_key, ref, u.mode, u.block, n, u.seed, params)
    if frames is not None:
        show_comparison(frames, f"topics_compare_{u.mode}_b{u.block}")

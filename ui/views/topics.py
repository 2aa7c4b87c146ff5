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

from core.analyses.topics.cached_runs import (Reference, compare_is_cached, compare_random, prepare,
                                              scan_is_cached, scan_layer, unit_result)
from core.analyses.topics.corpus import DEFAULT_MIN_FREQ, DEFAULT_VOCAB_SIZE, MIN_WORD_LEN, WINDOW
from core.analyses.topics.neuron import TopicParams
from core.analyses.topics.method import SAME, differences_markdown
from core.analyses.topics.params import (DEFAULT_COMPARE_N, PAPER_SIZE_LIMITS, PAPER_THRESHOLDS, PAPER_TIME_LIMIT,
                                         PRESETS, default_block)
from core.analyses.topics.verdicts import compare_verdicts, per_neuron, scan_check, scan_share
from core.analyses.topics.vocab import DEFAULT_TAU, MODES
from core.analyses.topics.word_sets import DEFAULT_TIME_LIMIT, FUNCTION_SIZE_LIMITS, FUNCTION_THRESHOLDS
from core.cache import stable_key
from core.layers import after_block, layer_entering
from core.model.session import ModelSession
from core.validate import text_folder
from ui import cached, hosting
from ui import job_panel as jobs
from ui.charts import topics as charts
from ui.downloads import chart_downloads, table_downloads
from ui.glossary import glossary
from ui.presets import preset_buttons
from ui.state import bound, set_value, url_value
from ui.verdicts import show_verdicts

SETTING_KEYS = ["topics_tau", "topics_mf", "topics_tl", "topics_vocab", "topics_tlo", "topics_thi", "topics_klo",
                "topics_khi", "topics_corpus"]
URL_KEYS = (["topics_mode", "topics_block", "topics_unit", "topics_seed"] + SETTING_KEYS
            + ["topics_cmp_n", "topics_graph", "topics_only_sets"])
HEADING = "Neuron topics: superposed topic models"
CAPTION = (
    "A unit's vocabulary distribution β (the logits it alone produces through the unembedding), its top and bottom "
    "τ tokens (τ = pool size) mapped to words of a reference corpus, the NPMI graph among those words (normalised "
    "pointwise mutual information over windows of 10 words), disjoint word sets from the star heuristic, and for "
    "each set the 10 words of maximal mean pairwise NPMI (coherence), solved exactly as an integer program (MEKC, "
    "SciPy milp / HiGHS). The random baseline puts a seeded permutation of the vocabulary in place of β. Blocks "
    "are numbered from 1 as on every page: block l writes layer l, and neuron n of block l is the same neuron as "
    "block l on the Attention → MLP page."
)
GLOSSARY_EXTRA = {
    "MEKC": "maximum edge-weight k-clique: the k words of a word set with the largest summed pairwise NPMI, solved "
            "exactly as an integer program",
    "star set": "a word with its neighbours in the NPMI graph (edges within θ_l … θ_u), taken greedily, heaviest "
                "mean edge first; κ_l to κ_u words, disjoint within a pool",
    "coherence": "a topic's mean pairwise NPMI (45 pairs for 10 words)",
    "min_freq": "a word or pair counts as absent below this many windows (p = 0)",
    "Mann-Whitney U": "a rank test of two samples, the paper's test of real against random (p: two-sided)",
}
GLOSSARY = ["β", "τ (pool size)", "Hi-C / Hi-I", "Lo-C / Lo-I", "NPMI", "θ_l, θ_u", "κ_l, κ_u", "MEKC", "star set",
            "coherence", "min_freq", "Mann-Whitney U", "CI", "n"]
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


def _clamp(name: str, default: float, lo: float, hi: float, parse: Callable[[str], Any] = int) -> None:
    """Keep a numeric URL value within [lo, hi] before its widget is drawn (a link from a bigger model, a mode
    with fewer units, a hand-edited URL)."""
    value = url_value(name, default, parse)
    if isinstance(value, (int, float)) and not lo <= value <= hi:
        set_value(name, parse(min(max(value, lo), hi)))


def _number(where: Any, name: str, default: float, label: str, lo: float, hi: float,
            parse: Callable[[str], Any] = int, **kwargs: Any) -> Any:
    """A number input bound to the URL, its URL value clamped to [lo, hi] first."""
    _clamp(name, default, lo, hi, parse)
    return bound(where.number_input, name, default, label, parse=parse, min_value=lo, max_value=hi, **kwargs)


def _url_presets() -> dict[str, dict]:
    """core.analyses.topics.params.PRESETS under the page's URL names."""
    out = {}
    for name, v in PRESETS.items():
        out[name] = {"topics_tau": int(v["tau"]), "topics_mf": int(v["min_freq"]),
                     "topics_tl": float(v["time_limit"]), "topics_tlo": float(v["thresholds"][0]),
                     "topics_thi": float(v["thresholds"][1]), "topics_klo": int(v["size_limits"][0]),
                     "topics_khi": int(v["size_limits"][1]), "topics_cmp_n": int(v["compare_n"]),
                     "topics_seed": int(v["seed"])}
    return out


PRESET_NOTES = {
    "quick": "τ = {tau}, time limit {time_limit:g} s per topic, {compare_n} units for real vs random: about a "
             "minute.".format(**PRESETS["quick"]),
    "paper": "τ = {tau}, θ = (0.1, 1), κ = (10, 24) (GPT-2 notebook), windows of {window}, time limit "
             "{time_limit:g} s (the paper's code), min_freq {min_freq} (the paper's 100 is for all of Wikipedia; "
             "scaled to the bundled sample it would be below one window), {compare_n} units for real vs random "
             "(the paper uses every neuron): a few minutes.".format(**PRESETS["paper"]),
}


LATE_KEYS = {"topics_cmp_n": (DEFAULT_COMPARE_N, int), "topics_graph": ("pos", str),
             "topics_only_sets": (False, lambda v: v == "True")}  # drawn only once the corpus is counted


def header() -> None:
    """The symbols popover and the two preset buttons (they set the settings, the sample size and the seed).
    The tabs' URL values are read here, so a run that stops early (corpus still counting) keeps them in the URL."""
    for name, (default, parse) in LATE_KEYS.items():
        url_value(name, default, parse)
    glossary(GLOSSARY, extra=GLOSSARY_EXTRA)
    preset_buttons(_url_presets(), "topics", PRESET_NOTES)


def unit_controls(session: ModelSession) -> Unit:
    """Mode, block (1-based), unit and baseline seed, bound to the URL; then a line saying what is injected."""
    adapter = session.adapter
    c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
    mode = bound(c1.selectbox, "topics_mode", "hi-c", "Mode", options=list(MODES), format_func=MODES.get)
    n_units = adapter.d_mlp if mode.startswith("hi") else adapter.d_model
    block = int(_number(c2, "topics_block", default_block(adapter.n_layers), "Block", 1, adapter.n_layers,
                        help="1-based: block l writes layer l (the app's labels: emb, 1 … L). Hi modes read the MLP "
                             "of block l, Lo modes inject into the stream entering it."))
    unit = int(_number(c3, "topics_unit", 0, "Neuron" if mode.startswith("hi") else "Dimension", 0, n_units - 1))
    seed = int(_number(c4, "topics_seed", 0, "Baseline seed", 0, 2**31 - 1))
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
    """The pipeline's settings in an expander, each bound to the URL (paper defaults shown in the help)."""
    with st.expander("Settings (corpus, pools, star heuristic, exact solving)"):
        c1, c2, c3, c4 = st.columns(4)
        tau = _number(c1, "topics_tau", DEFAULT_TAU, "τ (pool tokens)", 50, 5000, step=50,
                      help="Top and bottom τ tokens of β (paper: 900).")
        min_freq = _number(c2, "topics_mf", DEFAULT_MIN_FREQ, "min_freq (windows)", 1, 1000, help=MIN_FREQ_HELP)
        time_limit = _number(c3, "topics_tl", DEFAULT_TIME_LIMIT, "time limit per topic (s)", 1.0, 600.0, float,
                             help=f"Paper: {PAPER_TIME_LIMIT:g} s (SCIP); 120 s in the notebook.")
        vocab = _number(c4, "topics_vocab", DEFAULT_VOCAB_SIZE, "corpus vocabulary", 1000, 200_000, step=1000,
                        help="The most frequent words (paper: Wikipedia-V40K).")
        c1, c2, c3, c4 = st.columns(4)
        lo = _number(c1, "topics_tlo", PAPER_THRESHOLDS[0], "θ_l (lowest NPMI of an edge)", -1.0, 1.0, float,
                     step=0.025)
        hi = _number(c2, "topics_thi", PAPER_THRESHOLDS[1], "θ_u (highest NPMI of an edge)", -1.0, 1.0, float,
                     step=0.025)
        k_lo = _number(c3, "topics_klo", PAPER_SIZE_LIMITS[0], "κ_l (min set size and degree)", 2, 200)
        k_hi = _number(c4, "topics_khi", PAPER_SIZE_LIMITS[1], "κ_u (max set size)", 2, 200)
        st.caption(f"Paper defaults: GPT-2 notebook θ = {PAPER_THRESHOLDS}, κ = {PAPER_SIZE_LIMITS} (used here); "
                   f"Llama notebook θ = (0.025, 1), κ = (10, 32); star_heuristic's own θ = {FUNCTION_THRESHOLDS}, "
                   f"κ = {FUNCTION_SIZE_LIMITS}. Topics have k = 10 words; windows of {WINDOW} words (fixed).")
        if hosting.hosted():
            st.caption(f"Reference corpus: the bundled Wikipedia sample. Corpus folders: {hosting.OFF_HOSTED}")
            corpus = url_value("topics_corpus", "") or "wikipedia"  # a link's folder is refused by check()
        else:
            corpus = bound(st.text_input, "topics_corpus", "", "Reference corpus",
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
        if hosting.hosted():
            raise ValueError(f"Corpus folder {params.corpus!r}: {hosting.OFF_HOSTED}")
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
        f"{WINDOW - 1}) uses raw document lengths (the reference convention). min_freq {params.min_freq} "
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
               "Scan the block", "topics_scan",
               start_now=scan_is_cached(session, ref, mode, block, params))  # a link reopens a stored scan


def compare_job(spec_key: str, ref: Reference, mode: str, block: int, n: int, seed: int,
                params: TopicParams) -> dict[str, pd.DataFrame] | None:
    """``n`` random units of 1-based ``block`` against the random baseline, behind a button."""
    session = cached.get_session(spec_key)
    key = stable_key("topics-compare-job", model=session.identity(), counts=ref.counts.key, mode=mode, block=block,
                     n=n, seed=seed, **params.cache_parts())
    return job(key, f"Real vs random ({n} units)",
               lambda progress: compare_random(session, ref, mode, block, n, seed, params, progress),
               "Compare", "topics_compare",
               start_now=compare_is_cached(session, ref, mode, block, n, seed, params))  # a link reopens a stored run


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
    "Measured on the bundled SmolLM2-135M with the bundled Wikipedia sample, Paper settings (Hi-C, block 15, 200 "
    "neurons, seed 0; 84 s on 2 CPU cores): 3.12 word sets per neuron real vs 0.00 random; 166 of 200 real neurons "
    "vs none of the random baselines had a word set. The random pools give no word set at θ = (0.1, 1), so topic "
    "NPMI cannot be compared at these thresholds. Coherences are low because in half a million words most word "
    "pairs never share a window (NPMI between −0.3 and −0.9 for those).")


def show_comparison(frames: dict[str, pd.DataFrame], params: TopicParams, u: Unit, name: str) -> None:
    """The verdicts (real vs random over neurons, then the checks), the per-neuron chart and the tables."""
    st.markdown(f"**Real vs random** — {MODES[u.mode].split(':')[0]} units of block {u.block}, seed {u.seed}.")
    show_verdicts(compare_verdicts(frames, params.size_limits, params.k), name,
                  note="Findings are judged over neurons: each neuron's word sets (both pools) and mean topic NPMI; "
                       "the Mann-Whitney test is the paper's and is shown as extra evidence.")
    chart = charts.comparison_chart(per_neuron(frames["rows"], frames["topics"]))
    st.altair_chart(chart, width="content")
    chart_downloads(chart, frames["rows"], name, key="dl_topics_cmp_chart")
    with st.expander("Tables"):
        st.caption("tests: the paper's Mann-Whitney U per pool and per topic (empty cells: no value to test); rows: "
                   "one per unit, source and pool; topics: one per star set with its members, topic and score.")
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
    """The NPMI graph of the unit's top or bottom pool, pruned to a readable number of edges."""
    g1, g2 = st.columns([2, 3])
    pol = bound(g1.radio, "topics_graph", "pos", "Graph of", options=["pos", "neg"], horizontal=True,
                format_func={"pos": "top τ pool", "neg": "bottom τ pool"}.get)
    only_sets = bound(g2.checkbox, "topics_only_sets", False, "Only words in star sets", parse=lambda v: v == "True")
    edges = real.edges[real.edges.polarity == pol]
    edges = edges[(edges.set_a > 0) & (edges.set_b > 0)] if only_sets else edges
    if edges.empty:
        st.info("No NPMI edge within θ_l … θ_u among words with at least κ_l such edges"
                + (" and in star sets." if only_sets else "."))
        return
    drawn = charts.prune_edges(edges)
    sets = real.sets[real.sets.polarity == pol]
    names = {int(r.set): f"set {r.set} ({r.centre})" for r in sets.itertuples()}
    nodes, lines = charts.graph_frames(drawn, names)
    n_words = len(set(edges.a) | set(edges.b))
    st.caption(f"NPMI edges within θ_l … θ_u among words of degree ≥ κ_l: {len(lines)} of {len(edges)} drawn "
               f"({len(nodes)} of {n_words} words) — each set word's strongest edge inside its set, each word's "
               f"strongest edges, then the heaviest, at most {charts.GRAPH_EDGES}; the rest are in the edges table "
               "below. Colour (and shape, past seven sets) = star set, named by its centre word; darker line = "
               "higher NPMI; drag to pan, scroll to zoom.")
    chart = charts.graph_chart(nodes, lines)
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
               "exact topics; most word sets first. The scan uses the settings above; show one unit in the Neuron "
               "tab with the button below.")
    scan = scan_job(spec_key, ref, u.mode, u.block, params)
    if scan is not None:
        st.markdown(scan_share(scan))
        show_verdicts([scan_check(scan, params.size_limits)], f"topics_scan_{u.mode}_b{u.block}")
        pick_from_scan(scan)
        st.dataframe(scan, hide_index=True, width="stretch", height=360)
        table_downloads(scan, f"topics_scan_{u.mode}_b{u.block}", key="dl_topics_scan")


def compare_tab(spec_key: str, ref: Reference, u: Unit, params: TopicParams) -> None:
    """Seeded random units of the block against as many random-permutation baselines (a job behind a button)."""
    st.caption("Units drawn at random (seed = the baseline seed above) from the block against the same number of "
               "random-permutation baselines, through the same pipeline and settings. " + MEASURED)
    n = int(_number(st, "topics_cmp_n", min(DEFAULT_COMPARE_N, u.n_units), "n (units sampled from the block)", 2,
                    u.n_units, samples=True))
    frames = compare_job(spec_key, ref, u.mode, u.block, n, u.seed, params)
    if frames is not None:
        show_comparison(frames, params, u, f"topics_compare_{u.mode}_b{u.block}")


def method_notes() -> None:
    """How this page's method differs from the paper's code, and why (an expander)."""
    with st.expander("Method: what differs from the paper's code, and why"):
        st.markdown(SAME)
        st.markdown(differences_markdown())

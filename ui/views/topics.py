"""Building blocks of the Neuron topics page: settings, background jobs, the NPMI graph, tables."""

from __future__ import annotations

from typing import Any, Callable

import altair as alt
import pandas as pd
import streamlit as st

from core.analyses.topics.neuron import TopicParams
from core.analyses.topics.corpus import DEFAULT_MIN_FREQ, DEFAULT_VOCAB_SIZE, MIN_WORD_LEN, WINDOW
from core.analyses.topics.word_sets import (
    DEFAULT_TIME_LIMIT, FUNCTION_SIZE_LIMITS, FUNCTION_THRESHOLDS, PAPER_SIZE_LIMITS, PAPER_THRESHOLDS,
)
from core.analyses.topics.cached_runs import Reference, compare_random, prepare, scan_layer, unit_result
from core.analyses.topics.vocab import DEFAULT_TAU
from core.cache import stable_key
from ui import cached
from ui import job_panel as jobs
from ui.downloads import chart_downloads, table_downloads

GRAPH_EDGES = 1500


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
    from core.validate import text_folder

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


def unit_job(spec_key: str, ref: Reference, mode: str, layer: int, unit: int, params: TopicParams,
             random_seed: int | None) -> Any:
    session = cached.get_session(spec_key)
    which = "random baseline" if random_seed is not None else "neuron"
    key = stable_key("topics-unit-job", model=session.identity(), counts=ref.counts.key, mode=mode, layer=layer,
                     unit=unit, seed=random_seed, **params.cache_parts())
    return job(key, f"Topics of the {which}", lambda progress: unit_result(session, ref, mode, layer, unit, params,
                                                                           random_seed),
               "Run", f"topics_unit_{which}", start_now=True)


def scan_job(spec_key: str, ref: Reference, mode: str, layer: int, params: TopicParams) -> pd.DataFrame | None:
    session = cached.get_session(spec_key)
    key = stable_key("topics-scan-job", model=session.identity(), counts=ref.counts.key, mode=mode, layer=layer,
                     **params.cache_parts())
    return job(key, f"Scanning block {layer + 1}",
               lambda progress: scan_layer(session, ref, mode, layer, params, progress),
               "Scan the block", "topics_scan")


def compare_job(spec_key: str, ref: Reference, mode: str, layer: int, n: int, seed: int,
                params: TopicParams) -> dict[str, pd.DataFrame] | None:
    session = cached.get_session(spec_key)
    key = stable_key("topics-compare-job", model=session.identity(), counts=ref.counts.key, mode=mode, layer=layer,
                     n=n, seed=seed, **params.cache_parts())
    return job(key, f"Real vs random ({n} units)",
               lambda progress: compare_random(session, ref, mode, layer, n, seed, params, progress),
               "Compare", "topics_compare")


# -- figures ------------------------------------------------------------------------------------------
_layouts: dict[int, tuple[pd.DataFrame, pd.DataFrame]] = {}


def graph_frames(edges: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Non-empty edge frame of one polarity -> (nodes with x, y, set, degree; edges with endpoint positions).

    The spring layout takes about a second, so the last few are remembered (keyed by the edges' content)."""
    edges = edges.head(GRAPH_EDGES)
    key = int(pd.util.hash_pandas_object(edges, index=False).sum())
    if key not in _layouts:
        if len(_layouts) >= 8:
            _layouts.pop(next(iter(_layouts)))
        _layouts[key] = _layout(edges)
    return _layouts[key]


def _layout(edges: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    import networkx as nx

    graph = nx.Graph()
    graph.add_weighted_edges_from(zip(edges.a, edges.b, edges.npmi))
    pos = nx.spring_layout(graph, seed=0, weight="weight") if len(graph) else {}
    set_of = dict(zip(edges.a, edges.set_a)) | dict(zip(edges.b, edges.set_b))
    nodes = pd.DataFrame([{"word": w, "x": float(xy[0]), "y": float(xy[1]), "degree": graph.degree(w),
                           "set": f"set {set_of[w]}" if set_of[w] else "no set"} for w, xy in pos.items()])
    lines = edges.assign(x=edges.a.map(lambda w: pos[w][0]), y=edges.a.map(lambda w: pos[w][1]),
                         x2=edges.b.map(lambda w: pos[w][0]), y2=edges.b.map(lambda w: pos[w][1]))
    return nodes, lines


def graph_chart(nodes: pd.DataFrame, lines: pd.DataFrame) -> alt.LayerChart:
    """Spring layout of the NPMI graph: edges as lines (opacity = NPMI), words as points coloured by set."""
    axis = dict(axis=None)
    zoom = alt.selection_interval(bind="scales")
    edge = alt.Chart(lines).mark_rule(strokeWidth=0.6).encode(
        x=alt.X("x:Q", **axis), y=alt.Y("y:Q", **axis), x2="x2:Q", y2="y2:Q",
        opacity=alt.Opacity("npmi:Q", scale=alt.Scale(range=[0.08, 0.6]), legend=None), color=alt.value("#888"),
        tooltip=["a", "b", alt.Tooltip("npmi:Q", format=".3f")])
    labels = sorted(set(nodes.set) - {"no set"}, key=lambda s: int(s.split()[1])) + ["no set"]
    palette = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d", "#ff9da6"]
    colours = alt.Scale(domain=labels, range=[palette[i % len(palette)] for i in range(len(labels) - 1)] + ["#c8c8c8"])
    point = alt.Chart(nodes).mark_circle(size=60).encode(
        x="x:Q", y="y:Q", color=alt.Color("set:N", title="star set", scale=colours, sort=labels),
        tooltip=["word", "set", alt.Tooltip("degree:Q", title="edges shown")])
    label = alt.Chart(nodes).mark_text(dy=-8, fontSize=10).encode(x="x:Q", y="y:Q", text="word:N",
                                                                   color=alt.Color("set:N", legend=None, scale=colours))
    return alt.layer(edge, point, label).add_params(zoom).properties(width=760, height=520)


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


def comparison_chart(rows: pd.DataFrame, topics: pd.DataFrame) -> alt.HConcatChart:
    """Word sets per pool and topic coherence, real vs random (one tick per pool / topic)."""
    sets = alt.Chart(rows).mark_tick(thickness=2).encode(
        x=alt.X("n_sets:Q", title="word sets per pool"), y=alt.Y("source:N", title=None),
        color=alt.Color("source:N", legend=None),
        tooltip=["unit:Q", "source:N", "polarity:N", "n_sets:Q", "pool_size:Q"],
    ).properties(width=320, height=90)
    coherent = alt.Chart(topics.dropna(subset=["coherence"])).mark_tick(thickness=2).encode(
        x=alt.X("coherence:Q", title="topic coherence (mean pairwise NPMI)"), y=alt.Y("source:N", title=None),
        color=alt.Color("source:N", legend=None),
        tooltip=["unit:Q", "source:N", "polarity:N", alt.Tooltip("coherence:Q", format=".3f"), "topic:N"],
    ).properties(width=320, height=90)
    return alt.hconcat(sets, coherent)


def show_comparison(frames: dict[str, pd.DataFrame], name: str) -> None:
    """Mann-Whitney table, the tick chart and the per-pool / per-topic tables."""
    tests = frames["tests"]
    for row in tests.itertuples():
        p = "n/a (no values to compare)" if pd.isna(row.p) else f"{row.p:.2g}"
        st.markdown(f"**{row.metric}**: real mean {row.real_mean:.3f} (n={row.n_real}) vs random "
                    f"{row.random_mean:.3f} (n={row.n_random}); Mann-Whitney U = {row.U:.0f}, p = {p}")
    chart = comparison_chart(frames["rows"], frames["topics"])
    st.altair_chart(chart, width="content")
    chart_downloads(chart, frames["rows"], name, key="dl_topics_cmp_chart")
    with st.expander("Tables"):
        for table in ("tests", "rows", "topics"):
            st.markdown(f"**{table}**")
            st.dataframe(frames[table], hide_index=True, width="stretch", height=220)
            table_downloads(frames[table], f"{name}_{table}", key=f"dl_topics_cmp_{table}")


def _show_unit(unit: int) -> None:
    from ui.state import set_value

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

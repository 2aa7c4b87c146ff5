"""Building blocks of the Top-k order page: controls, one background job per section, figures and tables.

Every number in the captions is read from the computed frames (never typed in). Layers are residual layers
(l = after block l) as in the frames; a caption quoting one of the paper's 0-based constants says so
(:func:`core.layers.paper_layer_note`). The charts are built in :mod:`ui.charts.topk`.
"""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from core.analyses.topk.collect import collect_text, slot_view, topk_texts
from core.analyses.topk.params import MIN_MAX_TOKENS, TopkParams
from core.analyses.topk.probes import MIN_LAYER_FOR_PROBING
from core.analyses.topk.probing import probe_path
from core.analyses.topk.sections import run_section
from core.cache import stable_key
from core.layers import block_of_layer, layer_of_block, paper_layer_note
from ui import cached
from ui import job_panel as jobs
from ui.charts import topk as charts
from ui.downloads import show_chart, tables_expander
from ui.format import p_text, show_token
from ui.state import bound

URL_KEYS = ["topk_n", "topk_k", "topk_seed", "topk_max_tokens", "topk_tasks", "topk_eval", "topk_perm"]
LABELS = {"saturation": "Saturation", "baseline": "Random-init baseline", "probing": "Probing",
          "early-exit": "Early exit", "better-lm": "Better LM"}
PAGE_CAPTION = (
    "Logit lens after every block: layer l is the residual stream after block l (1..L). The saturation layer of the "
    "rank-i token is the earliest layer from which slot i of the lens holds the final rank-i token at every later "
    "layer (held after every block = 1, settled only at the output = L). Positions whose top-1 settles late are "
    "filtered out: the paper's s_0 > int(0.85·L) on 0-based block indices, i.e. top-1 settled after layer "
    "int(0.85·L) + 1 here. Texts: the bundled Wikipedia evaluation paragraphs. The prompt in the sidebar is not "
    "used here.")


def controls() -> TopkParams:
    """Sample-size and definition controls, bound to the URL."""
    d = TopkParams()  # the defaults live in core.analyses.topk.params (the CLI reads the same ones)
    c = st.columns(7)
    n = bound(c[0].number_input, "topk_n", d.n, "Texts", parse=int, min_value=1, max_value=2000,
              help="Bundled Wikipedia evaluation paragraphs (probing / early exit: the probe's training texts).")
    k = bound(c[1].number_input, "topk_k", d.k, "k (top tokens)", parse=int, min_value=2, max_value=20)
    seed = bound(c[2].number_input, "topk_seed", d.seed, "Seed", parse=int, min_value=0, max_value=2**31 - 1)
    max_tokens = bound(c[3].number_input, "topk_max_tokens", d.max_tokens, "Max tokens per text", parse=int,
                       min_value=MIN_MAX_TOKENS, max_value=2048,
                       help="Longer texts are truncated; the count is reported.")
    tasks = bound(c[4].number_input, "topk_tasks", d.n_tasks, "Probing tasks", parse=int, min_value=2, max_value=20)
    n_eval = bound(c[5].number_input, "topk_eval", d.n_eval, "Early-exit texts", parse=int, min_value=1,
                   max_value=2000, help="Evaluation texts, disjoint from the probe's training texts.")
    n_perm = bound(c[6].number_input, "topk_perm", d.n_perm, "Permutations", parse=int, min_value=10,
                   max_value=100_000)
    return TopkParams(n=int(n), k=int(k), seed=int(seed), max_tokens=int(max_tokens), n_tasks=int(min(tasks, k)),
                      n_eval=int(n_eval), n_perm=int(n_perm))


def section_job(spec_key: str, section: str, params: TopkParams) -> dict[str, pd.DataFrame] | None:
    """Run button / live progress / error for one section; its frames once computed (None before)."""
    session = cached.get_session(spec_key)
    key = stable_key("topk-job", model=session.identity(), section=section, params=params.__dict__)
    return jobs.job_panel(key, f"Top-k: {LABELS[section]}",
                          lambda progress: run_section(session, section, params, progress),
                          button_key=f"run_topk_{section}",
                          caption="About 3-8 s per 128-token text on 2 CPU cores (the logit lens over every layer); "
                                  "results are cached on disk, and texts are shared between sections.")


def _p_perm(p: float, n_perm: int) -> str:
    """A permutation p; at its floor 1/(n_perm+1) it says that no permutation reached the actual value."""
    if p is not None and math.isfinite(p) and p <= 1.0 / (n_perm + 1) + 1e-12:
        return f"{p:.2g} (the floor: none of {n_perm} permutations reached it)"
    return p_text(p)


# -- sections ------------------------------------------------------------------------------------------------
def show_saturation(frames: dict[str, pd.DataFrame], spec_key: str, params: TopkParams) -> None:
    s = frames["summary"].iloc[0]
    paper_bound = block_of_layer(int(s.max_top1_layer))  # the filter as the paper states it (0-based)
    st.caption(
        f"{s.texts} texts ({s.truncated_texts} truncated to {params.max_tokens} tokens, "
        f"{s.tokens_dropped_by_truncation} tokens dropped), {s.positions} positions. Kept by the filter "
        f"s_0 ≤ int({params.ratio}·{s.layers}) = {paper_bound} ({paper_layer_note(paper_bound)}: top-1 settled "
        f"by layer {s.max_top1_layer}): **{s.kept} of {s.positions} "
        f"({s.fraction_kept:.1%})**. Strict Kendall's τ over the "
        f"{s.tau_positions} kept positions with k* ≥ 3: **mean τ = {s.mean_tau:.3f}** (skipped positions as 0: "
        f"{s.mean_tau_nan_as_zero:.3f}); permuted mean {s.perm_mean_tau:.3f}, "
        f"**p = {_p_perm(s.perm_p, int(s.n_perm))}**.")
    left, right = st.columns(2)
    with left:
        st.markdown("**Rank vs saturation order** (kept positions; slots settling only at the last layer excluded)")
        show_chart(charts.rank_order_chart(frames["rank_order"]), frames["rank_order"], "topk_rank_order")
    with right:
        st.markdown("**Where each rank saturates** (all positions, before the filter)")
        show_chart(charts.histogram_chart(frames["histogram"]), frames["histogram"], "topk_saturation_histogram")
    st.markdown("**Permutation test of the strict Kendall's τ** (dashed: the actual mean)")
    show_chart(charts.permutation_chart(frames["permutation"], frames["summary"]), frames["permutation"],
               "topk_permutation")
    position_view(spec_key, params)
    tables_expander(frames, "topk_saturation")


def position_view(spec_key: str, params: TopkParams) -> None:
    """Per text and position: which layers hold each final top-i token in slot i."""
    st.markdown("**Per position: which layers hold each final top-i token in slot i**")
    c1, c2 = st.columns(2)
    text_index = int(c1.number_input("Text", 0, params.n - 1, 0, key="w_topk_view_text"))
    session = cached.get_session(spec_key)
    record = collect_text(session, topk_texts(params.n, params.seed)[text_index], params.k, params.max_tokens)
    view = slot_view(session, record)
    positions = sorted(view.position.unique())
    position = int(c2.select_slider("Position", positions, value=positions[len(positions) // 2],
                                    key="w_topk_view_pos"))
    one = view[view.position == position]
    st.caption(f"Input token {show_token(one.token.iloc[0])!r}; final top-{params.k} with saturation layers "
               "(s = l: held from after block l on): "
               + ", ".join(f"{show_token(t)!r} (s = {s})" for t, s in
                           one.drop_duplicates("slot")[["final_token", "saturation_layer"]].itertuples(index=False)))
    show_chart(charts.slot_chart(one), one, "topk_slots_position")
    show_chart(charts.text_saturation_chart(view), view.drop_duplicates(["position", "slot"]), "topk_slots_text")


def show_baseline(frames: dict[str, pd.DataFrame]) -> None:
    summary = frames["summary"].set_index("model")
    bits = [f"**{m}**: kept {r.fraction_kept:.1%}, mean τ {r.mean_tau:.3f} (permuted {r.perm_mean_tau:.3f}, "
            f"p = {_p_perm(r.perm_p, int(r.n_perm))})" for m, r in summary.iterrows()]
    probe = frames["probe"].query("task == -1 and metric == 'balanced_accuracy'")
    bits += [f"**{m}** probe balanced accuracy {g.set_index('source')['mean'].get('probe', math.nan):.3f} vs "
             f"control {g.set_index('source')['mean'].get('random-feature control', math.nan):.3f}, chance "
             f"{g.set_index('source')['mean'].get('chance', math.nan):.3f}" for m, g in probe.groupby("model")]
    missing = sorted(set(summary.index) - set(probe.model))
    bits += [f"**{m}**: probe skipped (too few labelled examples per layer; use more texts)" for m in missing]
    st.caption(" · ".join(bits))
    left, right = st.columns(2)
    with left:
        st.markdown("**Rank vs saturation order, trained vs untrained**")
        show_chart(charts.rank_order_chart(frames["rank_order"]), frames["rank_order"], "topk_baseline_rank_order")
    with right:
        st.markdown("**Permutation tests of the strict τ**")
        show_chart(charts.permutation_chart(frames["permutation"], frames["summary"]), frames["permutation"],
                   "topk_baseline_permutation")
    st.markdown("**Pooled task probe, trained vs untrained**")
    data = frames["probe"].query("task == -1 or metric == 'accuracy'")
    show_chart(charts.baseline_probe_chart(data), data, "topk_baseline_probe")
    tables_expander(frames, "topk_baseline")


def show_probing(frames: dict[str, pd.DataFrame], params: TopkParams) -> None:
    s = frames["summary"].query("task == -1 and metric == 'balanced_accuracy'").set_index("source")
    rows = int(frames["dataset"]["rows"].sum())
    st.caption(
        f"{rows} balanced examples over {frames['dataset'].layer.nunique()} layers (layers ≥ "
        f"{layer_of_block(MIN_LAYER_FOR_PROBING)}, {paper_layer_note(MIN_LAYER_FOR_PROBING)}; tasks "
        f"1..{params.n_tasks} = determining the 1st..{params.n_tasks}th token). Pooled probe balanced accuracy "
        f"**{s.loc['probe', 'mean']:.3f} ± {s.loc['probe', 'sem']:.3f}** vs random-feature control "
        f"{s.loc['random-feature control', 'mean']:.3f} ± {s.loc['random-feature control', 'sem']:.3f} vs chance "
        f"{s.loc['chance', 'mean']:.3f} ({params.folds}-fold). The control keeps each task's scalar mean and spread, "
        "so it can beat chance.")
    show_chart(charts.probe_chart(frames["summary"]), frames["summary"], "topk_probe_summary")
    st.markdown("**One probe per layer** (dashed: chance)")
    show_chart(charts.per_layer_chart(frames["per_layer"], 1 / params.n_tasks), frames["per_layer"],
               "topk_probe_per_layer")
    tables_expander(frames, "topk_probing")


def probe_downloads(spec_key: str, params: TopkParams) -> None:
    """The exit probe as plain arrays (.npz, no pickle) + its metadata (.json)."""
    path = probe_path(cached.get_session(spec_key), params)
    if not path.is_file():
        return
    row = st.container(horizontal=True)
    row.download_button("Probe (.npz)", path.read_bytes(), "topk_probe.npz", "application/octet-stream",
                        key="dl_topk_probe_npz", on_click="ignore", icon=":material/download:")
    meta = path.with_suffix(".json")
    if meta.is_file():
        row.download_button("Probe metadata (.json)", meta.read_text(), "topk_probe.json", "application/json",
                            key="dl_topk_probe_json", on_click="ignore", icon=":material/download:")


def show_early_exit(frames: dict[str, pd.DataFrame], spec_key: str, params: TopkParams) -> None:
    s, points = frames["summary"].iloc[0], frames["points"].set_index("method")
    def at(method: str) -> str:
        row = points.loc[[method]].iloc[0]
        return f"{row.accuracy:.1%} at {row.speedup:.2f}×"
    st.caption(
        f"Probe trained on {s.train_texts} texts ({s.probe_examples} examples at layers {s.probe_layers}, applied "
        f"from layer {s.min_layer} on, {paper_layer_note(block_of_layer(int(s.min_layer)))}); every method scored on "
        f"{s.eval_texts} other texts ({s.eval_positions} positions). Baseline {at('baseline')}, oracle {at('oracle')}, "
        f"probe {at('probe')}, probe (task ≥ 2) {at('probe (task ≥ 2)')}. Dashed: softmax response and "
        "hidden-state saturation over their threshold grids.")
    show_chart(charts.exit_chart(frames["points"]), frames["points"], "topk_early_exit")
    probe_downloads(spec_key, params)
    tables_expander(frames, "topk_early-exit")


def show_better_lm(frames: dict[str, pd.DataFrame]) -> None:
    t = frames["test"].iloc[0]
    st.caption(f"{int(t.top1_wrong)} of {int(t.positions)} positions have a wrong final top-1. The top-2 is right in "
               f"{t.share_B:.1%} of them when it saturated early vs {t.share_A:.1%} when it settled only at the last "
               f"layer (two-proportion z = {t.z_B_minus_A:.2f}, p = {p_text(t.p)}).")
    show_chart(charts.better_lm_chart(frames["groups"]), frames["groups"], "topk_better_lm")
    tables_expander(frames, "topk_better-lm")

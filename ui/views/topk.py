"""Building blocks of the Top-k order page: controls, one background job per section, figures and tables.

Every number in the captions is read from the computed frames (never typed in).
"""

from __future__ import annotations

import math

import altair as alt
import pandas as pd
import streamlit as st

from core.analyses.topk.params import TopkParams
from core.analyses.topk.sections import run_section
from core.cache import stable_key
from ui import cached
from ui import job_panel as jobs
from ui.downloads import show_chart, tables_expander
from ui.format import p_text, show_token
from ui.state import bound

URL_KEYS = ["topk_n", "topk_k", "topk_seed", "topk_max_tokens", "topk_tasks", "topk_eval", "topk_perm"]
LABELS = {"saturation": "Saturation", "baseline": "Random-init baseline", "probing": "Probing",
          "early-exit": "Early exit", "better-lm": "Better LM"}


def controls() -> TopkParams:
    """Sample-size and definition controls, bound to the URL."""
    c = st.columns(7)
    n = bound(c[0].number_input, "topk_n", 40, "Texts", parse=int, min_value=1, max_value=2000,
              help="Bundled Wikipedia evaluation paragraphs (probing / early exit: the probe's training texts).")
    k = bound(c[1].number_input, "topk_k", 5, "k (top tokens)", parse=int, min_value=2, max_value=20)
    seed = bound(c[2].number_input, "topk_seed", 0, "Seed", parse=int, min_value=0, max_value=2**31 - 1)
    max_tokens = bound(c[3].number_input, "topk_max_tokens", 128, "Max tokens per text", parse=int,
                       min_value=8, max_value=2048, help="Longer texts are truncated; the count is reported.")
    tasks = bound(c[4].number_input, "topk_tasks", 4, "Probing tasks", parse=int, min_value=2, max_value=20)
    n_eval = bound(c[5].number_input, "topk_eval", 20, "Early-exit texts", parse=int, min_value=1,
                   max_value=2000, help="Evaluation texts, disjoint from the probe's training texts.")
    n_perm = bound(c[6].number_input, "topk_perm", 1000, "Permutations", parse=int, min_value=10, max_value=100_000)
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


# -- charts (no Streamlit calls) ------------------------------------------------------------------------------
def rank_order_chart(rank_order: pd.DataFrame) -> alt.LayerChart:
    """Bars: mean saturation order (1 = first to settle) per token rank, ± SEM; stars vs the next rank."""
    data = rank_order.assign(lo=rank_order.mean_order - rank_order["sem"], hi=rank_order.mean_order + rank_order["sem"],
                             label=rank_order.stars.where(rank_order.stars != "n.s.", ""))
    base = alt.Chart(data).encode(x=alt.X("rank:O", title="token rank (1 = final top-1)"),
                                  xOffset=alt.XOffset("model:N"))
    bars = base.mark_bar().encode(
        y=alt.Y("mean_order:Q", title="mean saturation order (1 = settles first)"), color=alt.Color("model:N"),
        tooltip=["model", "rank", alt.Tooltip("mean_order:Q", format=".2f"), alt.Tooltip("sem:Q", format=".3f"),
                 "n", alt.Tooltip("p_vs_next:Q", format=".2g"), "stars"])
    errors = base.mark_rule().encode(y="lo:Q", y2="hi:Q")
    marks = base.mark_text(dy=-8).encode(y="hi:Q", text="label:N")
    return (bars + errors + marks).properties(width=420, height=280)


def histogram_chart(histogram: pd.DataFrame) -> alt.Chart:
    return alt.Chart(histogram).mark_line(point=True).encode(
        x=alt.X("saturation_layer:Q", title="saturation layer l0 (0 = after block 1)"),
        y=alt.Y("share:Q", title="share of positions", axis=alt.Axis(format="%")), color=alt.Color("rank:O"),
        tooltip=["rank", "saturation_layer", "count", alt.Tooltip("share:Q", format=".1%")],
    ).properties(width=420, height=280)


def permutation_chart(permutation: pd.DataFrame, summary: pd.DataFrame) -> alt.LayerChart:
    """Histogram of the permuted mean taus, a rule at the actual mean tau (faceted by model if several)."""
    hist = alt.Chart(permutation).mark_bar(opacity=0.6).encode(
        x=alt.X("mean_tau:Q", bin=alt.Bin(maxbins=40), title="mean strict Kendall's τ"),
        y=alt.Y("count():Q", title="permutations"), color=alt.Color("model:N"))
    rule = alt.Chart(summary).mark_rule(strokeWidth=2, strokeDash=[4, 2]).encode(
        x="mean_tau:Q", color=alt.Color("model:N"), tooltip=["model", alt.Tooltip("mean_tau:Q", format=".3f"),
                                                               alt.Tooltip("perm_p:Q", format=".2g")])
    return (hist + rule).properties(width=420, height=240)


def slot_chart(view: pd.DataFrame) -> alt.Chart:
    """One position: layers x slots, filled where the slot holds its final token; tooltip = the lens's token."""
    data = view.assign(shown=view.layer_token.map(show_token), final=view.final_token.map(show_token))
    return alt.Chart(data).mark_rect(stroke="white").encode(
        x=alt.X("layer:O", title="layer l0 (after block l0+1)"), y=alt.Y("slot:O", title="slot (rank)"),
        color=alt.Color("held:N", scale=alt.Scale(domain=[True, False], range=["#2b7bba", "#e8e8e8"]),
                        title="holds its final token"),
        tooltip=["layer", "slot", alt.Tooltip("shown:N", title="lens token"), alt.Tooltip("final:N", title="final"),
                 "saturation_layer"],
    ).properties(width=620, height=160)


def text_saturation_chart(view: pd.DataFrame) -> alt.Chart:
    """One text: positions x slots, colour = saturation layer."""
    data = view.drop_duplicates(["position", "slot"]).assign(input=lambda f: f.token.map(show_token),
                                                            final=lambda f: f.final_token.map(show_token))
    return alt.Chart(data).mark_rect().encode(
        x=alt.X("position:O", axis=alt.Axis(labels=False, ticks=False)), y=alt.Y("slot:O", title="slot (rank)"),
        color=alt.Color("saturation_layer:Q", scale=alt.Scale(scheme="viridis", reverse=True),
                        title="saturation layer"),
        tooltip=["position", "input", "slot", "final", "saturation_layer"],
    ).properties(width=620, height=140)


def probe_chart(summary: pd.DataFrame) -> alt.Chart:
    data = summary.assign(what=summary.metric + summary.task.map(lambda t: "" if t < 0 else f" task {t + 1}"),
                          lo=summary["mean"] - summary["sem"].fillna(0), hi=summary["mean"] + summary["sem"].fillna(0))
    base = alt.Chart(data).encode(x=alt.X("what:N", title=None, axis=alt.Axis(labelAngle=-40)),
                                  xOffset=alt.XOffset("source:N"))
    bars = base.mark_bar().encode(y=alt.Y("mean:Q", scale=alt.Scale(domain=[0, 1]), title="score"),
                                  color=alt.Color("source:N"),
                                  tooltip=["source", "what", alt.Tooltip("mean:Q", format=".3f"),
                                           alt.Tooltip("sem:Q", format=".3f"), "folds"])
    return (bars + base.mark_rule().encode(y="lo:Q", y2="hi:Q")).properties(width=560, height=260)


def per_layer_chart(per_layer: pd.DataFrame, chance: float) -> alt.LayerChart:
    line = alt.Chart(per_layer).mark_line(point=True).encode(
        x=alt.X("layer:Q", title="layer l0 (after block l0+1)"),
        y=alt.Y("mean:Q", scale=alt.Scale(domain=[0, 1]), title="balanced accuracy (k-fold)"),
        color=alt.Color("source:N"), tooltip=["layer", "source", alt.Tooltip("mean:Q", format=".3f"),
                                               alt.Tooltip("sem:Q", format=".3f"), "rows"])
    rule = alt.Chart(pd.DataFrame({"chance": [chance]})).mark_rule(strokeDash=[4, 4]).encode(y="chance:Q")
    return (line + rule).properties(width=560, height=260)


def exit_chart(points: pd.DataFrame) -> alt.LayerChart:
    """Accuracy vs speedup: the baseline curves as dashed lines, the single-point methods as large points."""
    curves = points[points.threshold.notna()]
    singles = points[points.threshold.isna()]
    tooltip = ["method", "threshold", alt.Tooltip("accuracy:Q", format=".3f"), alt.Tooltip("speedup:Q", format=".2f"),
               alt.Tooltip("mean_blocks:Q", format=".1f")]
    lines = alt.Chart(curves).mark_line(strokeDash=[5, 3], point=True).encode(
        x=alt.X("speedup:Q", title="speedup (L·N / Σ blocks run)", scale=alt.Scale(zero=False)),
        y=alt.Y("accuracy:Q", title="next-token accuracy", scale=alt.Scale(zero=False)),
        color=alt.Color("method:N"), order="threshold:Q", tooltip=tooltip)
    dots = alt.Chart(singles).mark_point(size=140, filled=True).encode(
        x="speedup:Q", y="accuracy:Q", color="method:N", shape=alt.Shape("method:N", legend=None), tooltip=tooltip)
    return (lines + dots).properties(width=560, height=320)


def better_lm_chart(groups: pd.DataFrame) -> alt.Chart:
    return alt.Chart(groups).mark_bar().encode(
        x=alt.X("share:Q", title="share where the final top-2 is the actual next token", axis=alt.Axis(format="%")),
        y=alt.Y("group:N", title=None, axis=alt.Axis(labelLimit=320)),
        tooltip=["group", "positions", "top2_correct", alt.Tooltip("share:Q", format=".1%")],
    ).properties(width=520, height=120)


# -- sections ------------------------------------------------------------------------------------------------
def show_saturation(frames: dict[str, pd.DataFrame], spec_key: str, params: TopkParams) -> None:
    s = frames["summary"].iloc[0]
    st.caption(
        f"{s.texts} texts ({s.truncated_texts} truncated to {params.max_tokens} tokens, "
        f"{s.tokens_dropped_by_truncation} tokens dropped), {s.positions} positions. Kept by the filter "
        f"s_0 ≤ int({params.ratio}·{s.layers}) = {s.max_top1_layer}: **{s.kept} of {s.positions} "
        f"({s.fraction_kept:.1%})**. Strict Kendall's τ over the "
        f"{s.tau_positions} kept positions with k* ≥ 3: **mean τ = {s.mean_tau:.3f}** (skipped positions as 0: "
        f"{s.mean_tau_nan_as_zero:.3f}); permuted mean {s.perm_mean_tau:.3f}, "
        f"**p = {_p_perm(s.perm_p, int(s.n_perm))}**.")
    left, right = st.columns(2)
    with left:
        st.markdown("**Rank vs saturation order** (kept positions; slots settling only at the last layer excluded)")
        show_chart(rank_order_chart(frames["rank_order"]), frames["rank_order"], "topk_rank_order")
    with right:
        st.markdown("**Where each rank saturates** (all positions, before the filter)")
        show_chart(histogram_chart(frames["histogram"]), frames["histogram"], "topk_saturation_histogram")
    st.markdown("**Permutation test of the strict Kendall's τ** (dashed: the actual mean)")
    show_chart(permutation_chart(frames["permutation"], frames["summary"]), frames["permutation"], "topk_permutation")
    position_view(spec_key, params)
    tables_expander(frames, "topk_saturation")


def position_view(spec_key: str, params: TopkParams) -> None:
    """Per text and position: which layers hold each final top-i token in slot i."""
    from core.analyses.topk.collect import collect_text, slot_view, topk_texts

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
    st.caption(f"Input token {show_token(one.token.iloc[0])!r}; final top-{params.k}: "
               + ", ".join(f"{show_token(t)!r} (s = {s})" for t, s in
                           one.drop_duplicates("slot")[["final_token", "saturation_layer"]].itertuples(index=False)))
    show_chart(slot_chart(one), one, "topk_slots_position")
    show_chart(text_saturation_chart(view), view.drop_duplicates(["position", "slot"]), "topk_slots_text")


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
        show_chart(rank_order_chart(frames["rank_order"]), frames["rank_order"], "topk_baseline_rank_order")
    with right:
        st.markdown("**Permutation tests of the strict τ**")
        show_chart(permutation_chart(frames["permutation"], frames["summary"]), frames["permutation"],
                   "topk_baseline_permutation")
    st.markdown("**Pooled task probe, trained vs untrained**")
    data = frames["probe"].query("task == -1 or metric == 'accuracy'")
    chart = probe_chart(data).facet(column=alt.Column("model:N", title=None))
    show_chart(chart, data, "topk_baseline_probe")
    tables_expander(frames, "topk_baseline")


def show_probing(frames: dict[str, pd.DataFrame], params: TopkParams) -> None:
    s = frames["summary"].query("task == -1 and metric == 'balanced_accuracy'").set_index("source")
    rows = int(frames["dataset"]["rows"].sum())
    st.caption(
        f"{rows} balanced examples over {frames['dataset'].layer.nunique()} layers (layers ≥ 5; tasks "
        f"1..{params.n_tasks} = determining the 1st..{params.n_tasks}th token). Pooled probe balanced accuracy "
        f"**{s.loc['probe', 'mean']:.3f} ± {s.loc['probe', 'sem']:.3f}** vs random-feature control "
        f"{s.loc['random-feature control', 'mean']:.3f} ± {s.loc['random-feature control', 'sem']:.3f} vs chance "
        f"{s.loc['chance', 'mean']:.3f} ({params.folds}-fold). The control keeps each task's scalar mean and spread, "
        "so it can beat chance.")
    show_chart(probe_chart(frames["summary"]), frames["summary"], "topk_probe_summary")
    st.markdown("**One probe per layer** (dashed: chance)")
    show_chart(per_layer_chart(frames["per_layer"], 1 / params.n_tasks), frames["per_layer"], "topk_probe_per_layer")
    tables_expander(frames, "topk_probing")


def probe_downloads(spec_key: str, params: TopkParams) -> None:
    """The exit probe as plain arrays (.npz, no pickle) + its metadata (.json)."""
    from core.analyses.topk.probing import probe_path

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
        f"from layer {s.min_layer} on); every method scored on "
        f"{s.eval_texts} other texts ({s.eval_positions} positions). Baseline {at('baseline')}, oracle {at('oracle')}, "
        f"probe {at('probe')}, probe (task ≥ 2) {at('probe (task ≥ 2)')}. Dashed: softmax response and "
        "hidden-state saturation over their threshold grids.")
    show_chart(exit_chart(frames["points"]), frames["points"], "topk_early_exit")
    probe_downloads(spec_key, params)
    tables_expander(frames, "topk_early-exit")


def show_better_lm(frames: dict[str, pd.DataFrame]) -> None:
    t = frames["test"].iloc[0]
    st.caption(f"{int(t.top1_wrong)} of {int(t.positions)} positions have a wrong final top-1. The top-2 is right in "
               f"{t.share_B:.1%} of them when it saturated early vs {t.share_A:.1%} when it settled only at the last "
               f"layer (two-proportion z = {t.z_B_minus_A:.2f}, p = {p_text(t.p)}).")
    show_chart(better_lm_chart(frames["groups"]), frames["groups"], "topk_better_lm")
    tables_expander(frames, "topk_better-lm")

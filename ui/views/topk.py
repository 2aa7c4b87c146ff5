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
from core.analyses.topk.intervention import InterventionConfig
from core.analyses.topk.method_notes import METHOD_NOTES
from core.analyses.topk.params import MIN_MAX_TOKENS, PRESETS, TopkParams
from core.analyses.topk.probes import MIN_LAYER_FOR_PROBING
from core.analyses.topk.probing import probe_path
from core.analyses.topk.sections import run_section, section_is_cached
from core.analyses.topk.verdicts import verdicts
from core.cache import stable_key
from core.layers import block_of_layer, layer_of_block, paper_layer_note
from ui import cached
from ui import job_panel as jobs
from ui.charts import topk as charts
from ui.downloads import show_chart, tables_expander
from ui.format import p_text, show_token
from ui.glossary import glossary
from ui.presets import preset_buttons
from ui.state import bound, inside, url_value
from ui.verdicts import show_verdicts as verdict_lines

URL_KEYS = ["topk_n", "topk_k", "topk_seed", "topk_max_tokens", "topk_tasks", "topk_eval", "topk_perm",
            "topk_view_text", "topk_view_pos"]
LABELS = {"saturation": "Saturation", "baseline": "Random-init baseline", "probing": "Probing",
          "early-exit": "Early exit", "better-lm": "Better LM"}
PAGE_CAPTION = (
    "Logit lens after every block: layer l is the residual stream after block l (1 to L). The saturation layer s_i "
    "of the rank-(i+1) token is the earliest layer from which slot i+1 of the lens holds the final rank-(i+1) token "
    "at every later layer (held after every block = 1, settled only at the output = L); s_0 is the top-1's. "
    "Positions whose top-1 settles late are filtered out: the paper's s_0 > int(0.85·L) on 0-based block indices, "
    "i.e. top-1 settled after layer int(0.85·L) + 1 here. Texts: the bundled Wikipedia evaluation paragraphs. The "
    "prompt in the sidebar is not used here.")
# analysis parameter (core.analyses.topk.params.PRESETS) -> the URL names of the controls it sets
PRESET_URL = {"n": ["topk_n"], "k": ["topk_k"], "seed": ["topk_seed", "topk_int_seed", "topk_mod_seed"],
              "max_tokens": ["topk_max_tokens"], "n_tasks": ["topk_tasks"], "n_eval": ["topk_eval"],
              "n_perm": ["topk_perm"], "intervention_texts": ["topk_int_n"], "intervention_pairs": ["topk_int_pairs"],
              "modality_inputs": ["topk_mod_n"], "modality_k": ["topk_mod_k"], "modality_tasks": ["topk_mod_tasks"]}
PRESET_NOTES = {
    "quick": "Seconds to a minute per section on 2 CPU cores: 10 texts of 64 tokens, 200 permutations. Enough to see "
             "every figure, rarely enough to judge a claim.",
    "paper": "The paper's sizes where the bundled data allows: 461 texts per side ≈ the paper's 60K tokens (its 100 "
             "CNN/DM texts for early exit), top-5, 5 probing tasks, 1000 permutations, 100 intervention texts, 5000 "
             "generated ViT / Whisper inputs. Tens of minutes per section on 2 CPU cores.",
}
EXTRA_SYMBOLS = {
    "i": "a rank slot, 0-based in s_i: slot i+1 holds the rank-(i+1) token",
    "task i": "the probe's label: the model is determining its rank-i token (task 1 = the top-1) on the layers "
              "after the previous rank saturated, up to this rank's saturation layer",
    "p (permutation)": "the share of permutations (shuffled saturation layers) whose mean τ reaches the actual one, "
                       "counted as (1 + hits) / (1 + permutations)",
    "e, o": "intervention: e = the early token's top-1 saturation layer, o = the offset of the implant layer from e",
    "speedup": "early exit: L · positions / the blocks run in all (an exit after block l runs l blocks)",
}


def header(spec_key: str) -> None:
    """The symbols popover and the Quick look / Paper settings buttons (setting every control of the page)."""
    glossary(["l", "L", "s_i", "s_0", "i", "k*", "τ (Kendall)", "p (permutation)", "task i", "e, o", "speedup",
              "CI", "n"], extra=EXTRA_SYMBOLS)
    preset_buttons(preset_values(cached.get_session(spec_key).adapter.n_layers), "topk", PRESET_NOTES)


def preset_values(n_layers: int) -> dict[str, dict[str, int]]:
    """PRESETS as URL name -> value; the intervention's pair constants go back to the paper's scaled to L, and
    the modality tab gets the paper's task count for the model it shows (ViT: k, Whisper: 4)."""
    base = InterventionConfig.for_depth(n_layers)
    out: dict[str, dict[str, int]] = {}
    for preset, values in PRESETS.items():
        urls = {url: int(values[name]) for name, names in PRESET_URL.items() for url in names}
        if preset == "paper" and url_value("topk_mod_kind", "vit") == "vit":
            urls["topk_mod_tasks"] = int(values["modality_k"])  # ViT-L/16: 5 tasks (= k), chance 20 %
        urls.update({"topk_int_gap": base.min_gap, "topk_int_minsat": layer_of_block(base.min_sat),
                     "topk_int_dist": base.max_distance, "topk_int_adj": base.n_adjacent})
        out[preset] = urls
    return out


def clamp(name: str, default: int, low: int, high: int) -> None:
    """Bring a URL-bound integer into low..high before its widget is drawn (a link made for another model)."""
    inside(name, url_value(name, default, int), low, high)


def method_note(tab: str) -> None:
    """How the tab's method differs from the reference code, and why."""
    st.caption(f"Method vs the paper's code: {METHOD_NOTES[tab]}")


def controls() -> TopkParams:
    """Sample-size and definition controls, bound to the URL (out-of-range URL values are clamped)."""
    d = TopkParams()  # the defaults live in core.analyses.topk.params (the CLI reads the same ones)
    c = st.columns(7)

    def number(col, name: str, default: int, label: str, low: int, high: int, help: str | None = None,
               samples: bool = False) -> int:
        clamp(name, default, low, high)
        return int(bound(col.number_input, name, default, label, parse=int, min_value=low, max_value=high,
                         help=help, samples=samples))

    n = number(c[0], "topk_n", d.n, "Texts", 1, 2000,
               "Bundled Wikipedia evaluation paragraphs (probing / early exit: the probe's training texts).",
               samples=True)
    k = number(c[1], "topk_k", d.k, "k (top tokens)", 2, 20)
    seed = number(c[2], "topk_seed", d.seed, "Seed", 0, 2**31 - 1)
    max_tokens = number(c[3], "topk_max_tokens", d.max_tokens, "Max tokens per text", MIN_MAX_TOKENS, 2048,
                        "Longer texts are truncated; the count is reported.")
    tasks = number(c[4], "topk_tasks", d.n_tasks, "Probing tasks", 2, 20, "At most k: task i = determining the "
                   "rank-i token.")
    n_eval = number(c[5], "topk_eval", d.n_eval, "Early-exit texts", 1, 2000,
                    "Evaluation texts, disjoint from the probe's training texts.", samples=True)
    n_perm = number(c[6], "topk_perm", d.n_perm, "Permutations", 10, 100_000)
    # the per-position view draws its controls only once the saturation section ran: keep their URL values meanwhile
    clamp("topk_view_text", 0, 0, n - 1)
    if url_value("topk_view_pos", None, int) is not None:
        clamp("topk_view_pos", 0, 0, max_tokens - 1)
    return TopkParams(n=n, k=k, seed=seed, max_tokens=max_tokens, n_tasks=min(tasks, k), n_eval=n_eval,
                      n_perm=n_perm)


def section_job(spec_key: str, section: str, params: TopkParams) -> dict[str, pd.DataFrame] | None:
    """Run button / live progress / error for one section; its frames once computed (None before). A link to a
    stored run shows it without a Run click."""
    session = cached.get_session(spec_key)
    key = stable_key("topk-job", model=session.identity(), section=section, params=params.__dict__)
    return jobs.job_panel(key, f"Top-k: {LABELS[section]}",
                          lambda progress: run_section(session, section, params, progress),
                          button_key=f"run_topk_{section}",
                          start_now=section_is_cached(session, section, params),  # a link reopens a stored run
                          caption="About 3-8 s per 128-token text on 2 CPU cores (the logit lens over every layer); "
                                  "results are cached on disk, and texts are shared between sections.")


def section_tab(spec_key: str, section: str, params: TopkParams) -> dict[str, pd.DataFrame] | None:
    """One text section's tab: how its method differs from the paper's code, its job, then its figures."""
    frames = section_job(spec_key, section, params)
    if frames is not None:
        SHOW[section](frames, spec_key, params)
    method_note(section)
    return frames


def _p_perm(p: float, n_perm: int) -> str:
    """A permutation p; at its floor 1/(n_perm+1) it says that no permutation reached the actual value."""
    if p is not None and math.isfinite(p) and p <= 1.0 / (n_perm + 1) + 1e-12:
        return f"{p:.2g} (the floor: none of {n_perm} permutations reached it)"
    return p_text(p)


def _num(value: float, digits: int = 3) -> str:
    """A number for a caption; "n/a" when missing (never "nan")."""
    return f"{value:.{digits}f}" if value is not None and math.isfinite(float(value)) else "n/a"


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


# -- sections ------------------------------------------------------------------------------------------------
def show_saturation(frames: dict[str, pd.DataFrame], spec_key: str, params: TopkParams) -> None:
    s = frames["summary"].iloc[0]
    paper_bound = block_of_layer(int(s.max_top1_layer))  # the filter as the paper states it (0-based)
    st.caption(
        f"{int(s.texts)} texts ({int(s.truncated_texts)} truncated to {params.max_tokens} tokens, "
        f"{int(s.tokens_dropped_by_truncation)} tokens dropped), {int(s.positions)} positions. Kept by the filter "
        f"s_0 ≤ int({params.ratio}·{int(s.layers)}) = {paper_bound} ({paper_layer_note(paper_bound)}: top-1 settled "
        f"by layer {int(s.max_top1_layer)}): **{int(s.kept)} of {int(s.positions)} "
        f"({s.fraction_kept:.1%})**. Strict Kendall's τ (1 = the ranks settle strictly in order) over the "
        f"{int(s.tau_positions)} kept positions with k\\* ≥ 3 (k\\* = the leading ranks that settle before the last "
        f"layer): **mean τ = {_num(s.mean_tau)}** (skipped positions as 0: {_num(s.mean_tau_nan_as_zero)}); "
        f"permuted mean {_num(s.perm_mean_tau)}, **p = {_p_perm(s.perm_p, int(s.n_perm))}**.")
    left, right = st.columns(2)
    with left:
        st.markdown("**Rank vs saturation order** (kept positions; slots settling only at the last layer excluded)")
        show_chart(charts.rank_order_chart(frames["rank_order"]), frames["rank_order"], "topk_rank_order", stretch=True)
    with right:
        st.markdown("**Where each rank saturates** (all positions, before the filter)")
        show_chart(charts.histogram_chart(frames["histogram"]), frames["histogram"], "topk_saturation_histogram",
                   stretch=True)
    st.markdown(f"**Permutation test of the strict Kendall's τ** ({int(s.n_perm)} permutations; the labelled rule: "
                "the actual mean)")
    show_chart(charts.permutation_chart(frames["permutation"], frames["summary"]), frames["permutation"],
               "topk_permutation")
    position_view(spec_key, params)
    tables_expander(frames, "topk_saturation")


def position_view(spec_key: str, params: TopkParams) -> None:
    """Per text and position: which layers hold each final top-i token in slot i (both bound to the URL)."""
    st.markdown("**Per position: which layers hold each final top-i token in slot i**")
    c1, c2 = st.columns(2)
    clamp("topk_view_text", 0, 0, params.n - 1)
    text_index = int(bound(c1.number_input, "topk_view_text", 0, "Text", parse=int, min_value=0,
                           max_value=params.n - 1))
    session = cached.get_session(spec_key)
    record = collect_text(session, topk_texts(params.n, params.seed)[text_index], params.k, params.max_tokens)
    view = slot_view(session, record)
    positions = [int(p) for p in sorted(view.position.unique())]
    position = int(bound(c2.select_slider, "topk_view_pos", positions[len(positions) // 2], "Position", parse=int,
                         options=positions))
    one = view[view.position == position]
    st.caption(f"Input token {show_token(one.token.iloc[0])!r}; final top-{params.k} with saturation layers "
               "(s = l: held from after block l on): "
               + ", ".join(f"{show_token(t)!r} (s = {s})" for t, s in
                           one.drop_duplicates("slot")[["final_token", "saturation_layer"]].itertuples(index=False)))
    show_chart(charts.slot_chart(one), one, "topk_slots_position")
    show_chart(charts.text_saturation_chart(view), view.drop_duplicates(["position", "slot"]), "topk_slots_text")


def show_baseline(frames: dict[str, pd.DataFrame], spec_key: str = "", params: TopkParams | None = None) -> None:
    summary = frames["summary"].set_index("model")
    bits = [f"**{m}**: kept {r.fraction_kept:.1%}, mean τ {_num(r.mean_tau)} (permuted {_num(r.perm_mean_tau)}, "
            f"p = {_p_perm(r.perm_p, int(r.n_perm))})" for m, r in summary.iterrows()]
    probe = frames["probe"].query("task == -1 and metric == 'balanced_accuracy'")
    for m, g in probe.groupby("model"):
        mean = g.set_index("source")["mean"]
        control, chance = mean.get("random-feature control", math.nan), mean.get("chance", math.nan)
        bits.append(f"**{m}** probe balanced accuracy {_num(mean.get('probe', math.nan))} vs control "
                    f"{_num(control)}, chance {_num(chance)}")
    missing = sorted(set(summary.index) - set(probe.model))
    bits += [f"**{m}**: probe skipped (too few labelled examples per layer; use more texts)" for m in missing]
    st.caption(" · ".join(bits))
    left, right = st.columns(2)
    with left:
        st.markdown("**Rank vs saturation order, trained vs untrained**")
        show_chart(charts.rank_order_chart(frames["rank_order"]), frames["rank_order"], "topk_baseline_rank_order",
                   stretch=True)
    with right:
        st.markdown("**Permutation tests of the strict τ** (labelled rules: the actual means)")
        show_chart(charts.permutation_chart(frames["permutation"], frames["summary"]), frames["permutation"],
                   "topk_baseline_permutation", stretch=True)
    st.markdown("**Pooled task probe, trained vs untrained**")
    data = frames["probe"].query("task == -1 or metric == 'accuracy'")
    show_chart(charts.baseline_probe_chart(data), data, "topk_baseline_probe")
    tables_expander(frames, "topk_baseline")


def show_probing(frames: dict[str, pd.DataFrame], spec_key: str, params: TopkParams) -> None:
    s = frames["summary"].query("task == -1 and metric == 'balanced_accuracy'").set_index("source")
    rows = int(frames["dataset"]["rows"].sum())
    st.caption(
        f"{rows} balanced examples over {frames['dataset'].layer.nunique()} layers (layers ≥ "
        f"{layer_of_block(MIN_LAYER_FOR_PROBING)}, {paper_layer_note(MIN_LAYER_FOR_PROBING)}; tasks 1 to "
        f"{params.n_tasks}: task i = determining the {_ordinal(1)} to {_ordinal(params.n_tasks)} token in turn). "
        f"Pooled probe balanced accuracy **{_num(s.loc['probe', 'mean'])} ± {_num(s.loc['probe', 'sem'])}** vs "
        f"random-feature control {_num(s.loc['random-feature control', 'mean'])} ± "
        f"{_num(s.loc['random-feature control', 'sem'])} vs chance {_num(s.loc['chance', 'mean'])} "
        f"({params.folds}-fold, ± the SEM over folds). The control keeps each task's scalar mean and spread, so it "
        "can beat chance.")
    show_chart(charts.probe_chart(frames["summary"]), frames["summary"], "topk_probe_summary")
    st.markdown("**One probe per layer** (dashed: chance 1/k)")
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
        f"Probe trained on {int(s.train_texts)} texts ({int(s.probe_examples)} examples at layers {s.probe_layers}, "
        f"applied from layer {int(s.min_layer)} on, {paper_layer_note(block_of_layer(int(s.min_layer)))}); every "
        f"method scored on {int(s.eval_texts)} other texts ({int(s.eval_positions)} positions). Speedup = L · "
        f"positions / blocks run. Baseline {at('baseline')}, oracle (exit at s_0) {at('oracle')}, probe {at('probe')}, "
        f"probe (task ≥ 2) {at('probe (task ≥ 2)')}. Dashed: softmax response and hidden-state saturation over their "
        "threshold grids.")
    show_chart(charts.exit_chart(frames["points"]), frames["points"], "topk_early_exit")
    probe_downloads(spec_key, params)
    tables_expander(frames, "topk_early-exit")


def show_better_lm(frames: dict[str, pd.DataFrame], spec_key: str = "", params: TopkParams | None = None) -> None:
    t = frames["test"].iloc[0]
    st.caption(f"{int(t.top1_wrong)} of {int(t.positions)} positions have a wrong final top-1. The top-2 is right in "
               f"{_pct(t.share_B)} of them when it saturated early vs {_pct(t.share_A)} when it settled only at the "
               f"last layer (two-proportion z = {_num(t.z_B_minus_A, 2)}, p = {p_text(t.p)}; bars: 95 % Wilson "
               "intervals).")
    show_chart(charts.better_lm_chart(frames["groups"]), frames["groups"], "topk_better_lm")
    tables_expander(frames, "topk_better-lm")


def _pct(value: float) -> str:
    return f"{value:.1%}" if value is not None and math.isfinite(float(value)) else "n/a (no position)"


SHOW = {"saturation": show_saturation, "baseline": show_baseline, "probing": show_probing,
        "early-exit": show_early_exit, "better-lm": show_better_lm}


def show_verdicts(results: dict[str, dict[str, pd.DataFrame] | None]) -> None:
    """Each of the paper's claims this page measures, judged on the sections run so far (with the tabs' settings)."""
    done = {name: frames for name, frames in results.items() if frames is not None}
    st.caption("Each claim is judged on the tabs' current results; a tab not run yet leaves its claims at "
               "\"cannot tell yet\". The Quick look preset shows the method; the Paper settings give the claims a "
               "fair n.")
    verdict_lines(verdicts(done), "topk", note=METHOD_NOTES["verdict"])

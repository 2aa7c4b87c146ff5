"""Building blocks of the Attention -> MLP page: settings, the neuron table, background jobs per neuron and
for the whole table, the attribution heatmap, example lists and the ablation box plot."""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass

import altair as alt
import pandas as pd
import streamlit as st

from core.analyses.attention_mlp.prompts import ScanParams, corpus_hash
from core.analyses.attention_mlp.neurons import check_layers, default_layers
from core.analyses.attention_mlp.heads import RULES, head_summary  # noqa: F401 (head_summary: the page)
from core.analyses.attention_mlp.pipeline import (MIN_PROMPTS, HeadParams, choose_neurons, compute_heads,
                                             corpus_sample, max_activating_prompts, neuron_heads, neuron_prompts)
from core.cache import stable_key
from core.data import CORPORA, corpus_texts, evaluation_texts, parse_user_texts
from core.model.session import ModelSession
from ui import cached
from ui import job_panel as jobs
from ui.downloads import chart_downloads, table_downloads
from ui.format import show_token
from ui.state import bound

UPLOAD = "upload a file…"


@dataclass(frozen=True)
class Settings:
    layers: tuple[int, ...]
    per_layer: int
    control: bool
    reject: tuple[str, ...]
    corpus_label: str
    texts: tuple[str, ...]
    scan: ScanParams
    heads: HeadParams


def _parse_layers(text: str, session: ModelSession) -> list[int]:
    try:
        layers = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ValueError(f"Layers must be comma-separated block numbers, e.g. 26,27 — not {text!r}.") from None
    return check_layers(session, layers)


def settings(session: ModelSession) -> Settings | None:
    """Layers, count, control, corpus and scan settings; None (after saying why) when not usable yet."""
    default = ",".join(str(l) for l in default_layers(session.adapter.n_layers))
    c1, c2, c3, c4 = st.columns([1.2, 0.8, 1.3, 0.8])
    layer_text = bound(c1.text_input, "amlp_layers", default, "Layers (0-based blocks)",
                       help="The paper uses the last blocks: GPT-2 small 9-11 of 12; here by default the last "
                            f"{len(default_layers(session.adapter.n_layers))}.")
    per_layer = int(bound(c2.number_input, "amlp_per_layer", 20, "Neurons per layer", parse=int,
                          min_value=1, max_value=200))
    corpus = bound(c3.selectbox, "amlp_corpus", "wikipedia", "Corpus", options=list(CORPORA) + [UPLOAD],
                   format_func=lambda c: CORPORA.get(c, c))
    n_texts = int(bound(c4.number_input, "amlp_n_texts", 100, "Texts scanned", parse=int, min_value=1,
                        max_value=5000, step=10))
    with st.expander("More settings"):
        d1, d2, d3, d4 = st.columns(4)
        window = int(bound(d1.number_input, "amlp_window", 128, "Window (tokens)", parse=int, min_value=8,
                           max_value=1024))
        top = int(bound(d2.number_input, "amlp_top", 20, "Prompts per neuron", parse=int, min_value=MIN_PROMPTS,
                        max_value=100))
        control = bool(bound(d3.toggle, "amlp_control", False, "Random neurons (control)",
                             parse=lambda v: v == "True"))
        own = bool(bound(d4.toggle, "amlp_own", False, "Count the neuron's own block's heads",
                         parse=lambda v: v == "True",
                         help="The paper counts heads of earlier blocks only; the neuron's own block's attention "
                              "also writes before its MLP. Off: its heads are reported as an 'own heads' term."))
        reject = bound(st.text_input, "amlp_reject", "", "Extra tokens to reject (comma-separated)",
                       help="Added to the built-in list of known glitch tokens; compared without spaces.")
    try:
        layers = _parse_layers(layer_text, session)
        texts = _texts(corpus)
    except ValueError as err:
        st.error(str(err))
        return None
    if texts is None:
        return None
    label = CORPORA.get(corpus, "uploaded file")
    rejected = tuple(r for r in reject.split(",") if r.strip())
    return Settings(tuple(layers), per_layer, control, rejected, label, tuple(corpus_sample(texts, n_texts)),
                    ScanParams(window=window, top=top), HeadParams(include_own=own))


def _texts(corpus: str) -> list[str] | None:
    if corpus != UPLOAD:
        return evaluation_texts(corpus_texts(corpus))
    upload = st.file_uploader("Text file: .txt (blank-line separated), .jsonl ('text'), .csv ('text')",
                              type=["txt", "jsonl", "csv"], key="w_amlp_upload")
    return None if upload is None else parse_user_texts(upload.getvalue(), upload.name)


def neuron_table(session: ModelSession, s: Settings) -> pd.DataFrame:
    with st.spinner("Congruence of every neuron with the unembedding…"):
        return choose_neurons(session, list(s.layers), s.per_layer, s.control, reject=s.reject)


# -- background jobs -------------------------------------------------------------------------------


def _job(key: str, label: str, work, button: str, help_text: str):
    """Start button / progress / error / result of one background job (None until it has a result)."""
    name = label.replace(" ", "_")
    return jobs.job_panel(key, label, work, button=button, button_key=f"run_amlp_{name}", caption=help_text)


def neuron_job(spec_key: str, neurons: pd.DataFrame, s: Settings, layer: int, neuron: int) -> dict | None:
    """Prompts, attributions and ablation of one neuron, as a background job."""
    session = cached.get_session(spec_key)
    texts = list(s.texts)
    key = stable_key("amlp-neuron", model=session.identity(), corpus=corpus_hash(texts), layer=layer,
                     neuron=neuron, neurons=neurons[["layer", "neuron"]].values.tolist(), scan=asdict(s.scan),
                     heads=asdict(s.heads))

    def work(progress) -> dict:
        prompts = neuron_prompts(session, neurons, texts, s.scan, layer, neuron, lambda f, m: progress(0.7 * f, m))
        if len(prompts) < MIN_PROMPTS:
            return {"prompts": prompts}
        progress(0.7, f"attributions and ablation over {len(prompts)} prompts")
        return {"prompts": prompts, **neuron_heads(session, prompts, s.heads)}

    return _job(key, "neuron", work, "Find prompts and heads",
                f"Scans {len(texts)} texts in windows of {s.scan.window} tokens (one pass each, shared by every "
                "neuron in the table), trims the top prompts, attributes and ablates. Cached on disk.")


def summary_job(spec_key: str, neurons: pd.DataFrame, s: Settings) -> dict | None:
    """Every neuron of the table: share with context-dependent heads and the pooled KS test."""
    session = cached.get_session(spec_key)
    texts = list(s.texts)
    key = stable_key("amlp-all", model=session.identity(), corpus=corpus_hash(texts),
                     neurons=neurons[["layer", "neuron"]].values.tolist(), scan=asdict(s.scan), heads=asdict(s.heads))

    def work(progress) -> dict:
        prompts = max_activating_prompts(session, neurons, texts, s.scan, lambda f, m: progress(0.5 * f, m))
        return compute_heads(session, prompts, s.heads, lambda f, m: progress(0.5 + 0.5 * f, m))

    return _job(key, "all neurons", work, "Run every neuron",
                f"{len(neurons)} neurons x up to {s.scan.top} prompts: long on a CPU (minutes per neuron); "
                "neurons already run above are reused from the disk cache.")


# -- figures ---------------------------------------------------------------------------------------


def neuron_label(row) -> str:
    return f"block {row.layer} · neuron {row.neuron} → {show_token(row.token)} (congruence {row.congruence:.2f})"


def attribution_heatmap(attr: pd.DataFrame, rule: str) -> alt.LayerChart:
    """Prompts (y) x heads (x), colour = direct attribution; dots mark heads active under ``rule``."""
    order = attr.drop_duplicates("head_label").sort_values(["head_layer", "head"]).head_label.tolist()
    base = alt.Chart(attr).encode(
        x=alt.X("head_label:N", sort=order, title="head (block, head; the first head of each block labelled)",
                axis=alt.Axis(labelFontSize=8, labelExpr="indexof(datum.value, 'H0') >= 0 && "
                              "indexof(datum.value, 'H0') == length(datum.value) - 2 ? datum.value : ''")),
        y=alt.Y("prompt:O", title="prompt (by activation)"))
    limit = float(attr["attr"].abs().max()) or 1.0
    cells = base.mark_rect().encode(
        color=alt.Color("attr:Q", scale=alt.Scale(scheme="redblue", reverse=True, domain=[-limit, limit]),
                        title="attribution"),
        tooltip=["prompt", "head_label", alt.Tooltip("attr:Q", format=".3f"), f"active_{rule}", f"share_{rule}"])
    dots = base.transform_filter(alt.datum[f"active_{rule}"]).mark_point(
        shape="circle", size=14, filled=True, color="black")
    return (cells + dots).properties(width=max(400, 4 * len(order)), height=14 * attr.prompt.nunique() + 20)


def share_chart(heads: pd.DataFrame, rule: str) -> alt.LayerChart:
    """Share of prompts each head is active in; the 25-75 % band marks context-dependent heads."""
    data = heads[heads[f"share_{rule}"] > 0]
    bars = alt.Chart(data).mark_bar().encode(
        x=alt.X("head_label:N", sort="-y", title="head"), y=alt.Y(f"share_{rule}:Q", title="share of prompts active",
                                                                  scale=alt.Scale(domain=[0, 1])),
        color=alt.Color(f"context_{rule}:N", title="context-dependent"),
        tooltip=["head_label", alt.Tooltip(f"share_{rule}:Q", format=".0%"), alt.Tooltip("mean_attr:Q", format=".3f")])
    band = alt.Chart(pd.DataFrame({"y": [0.25], "y2": [0.75]})).mark_rect(opacity=0.1, color="green").encode(
        y="y:Q", y2="y2:Q")
    return (band + bars).properties(width=560, height=220)


def ablation_chart(ablation: pd.DataFrame, rule: str) -> alt.Chart:
    data = ablation.assign(group=ablation[f"active_{rule}"].map({True: "active", False: "inactive"}))
    return alt.Chart(data).mark_boxplot(extent="min-max").encode(
        x=alt.X("group:N", title="head on the prompt"), y=alt.Y("drop:Q", title="decrease in p(neuron token)"),
        color=alt.Color("group:N", legend=None),
    ).properties(width=120, height=200).facet(facet=alt.Facet("head_label:N", title=None), columns=6)


def example_html(row, token: str) -> str:
    """A trimmed prompt with its last (activating) token highlighted and the neuron's token appended;
    every piece of text is HTML-escaped."""
    text = html.escape(row.text[: len(row.text) - len(row.last_token)])
    last = html.escape(row.last_token)
    nxt = html.escape(token)
    return (f"<div style='font-family:monospace;margin:2px 0'>{text}<mark>{last}</mark>"
            f"<span style='opacity:0.6'>[{nxt}]</span> <small>({row.trimmed_activation:.2f})</small></div>")


# -- sections --------------------------------------------------------------------------------------


def show_prompts(prompts: pd.DataFrame, token: str) -> None:
    st.markdown(f"**{len(prompts)} max-activating prompts**, trimmed to the shortest suffix keeping > 0.8 of the "
                "activation (highlighted: the activating last token; in brackets: the neuron's token).")
    st.markdown("".join(example_html(r, token) for r in prompts.itertuples()), unsafe_allow_html=True)
    table_downloads(prompts, "amlp_prompts", key="dl_amlp_prompts")


def show_attributions(attr: pd.DataFrame, heads: pd.DataFrame, terms: pd.DataFrame, rule: str) -> None:
    chart = attribution_heatmap(attr, rule)
    st.altair_chart(chart, width="content")
    chart_downloads(chart, attr, "amlp_attributions", key="dl_amlp_heatmap")
    chart = share_chart(heads, rule)
    st.altair_chart(chart, width="content")
    chart_downloads(chart, heads, "amlp_head_shares", key="dl_amlp_shares")
    dependent = heads[heads[f"context_{rule}"]].sort_values("mean_attr", ascending=False)
    st.markdown(f"**Context-dependent heads** ({RULES[rule]}; active in 25–75 % of prompts): "
                + (", ".join(dependent.head_label) if len(dependent) else "none for this neuron."))
    with st.expander("Other terms of the pre-activation (per prompt)"):
        st.caption("embeddings, attention output biases, earlier MLPs and the neuron's own block's attention "
                   "(when not counted as candidates) complete the sum; preact = resid_dot / scale + constant.")
        st.dataframe(terms, hide_index=True, width="stretch", height=220)
        table_downloads(terms, "amlp_terms", key="dl_amlp_terms")


def head_options(heads: pd.DataFrame) -> list[str]:
    """Context-dependent heads (either rule) first, then the rest by mean attribution."""
    ranked = heads.assign(dep=heads.context_top3 | heads.context_sigma2).sort_values(
        ["dep", "mean_attr"], ascending=[False, False])
    return ranked.head_label.tolist()


def show_examples(prompts: pd.DataFrame, attr: pd.DataFrame, head_label: str, rule: str, token: str) -> None:
    flags = attr[attr.head_label == head_label].set_index("prompt")[f"active_{rule}"]
    c1, c2 = st.columns(2)
    for column, wanted, title in ((c1, True, "Active"), (c2, False, "Inactive")):
        rows = [r for r in prompts.itertuples() if bool(flags.get(r.prompt, False)) == wanted]
        column.markdown(f"**{title}** ({len(rows)})")
        column.markdown("".join(example_html(r, token) for r in rows) or "—", unsafe_allow_html=True)


def show_ablation(ablation: pd.DataFrame, head_label: str, rule: str) -> None:
    from core.analyses.attention_mlp.heads import ks_tests

    if ablation.empty:
        st.info("No context-dependent head to ablate for this neuron.")
        return
    chart = ablation_chart(ablation, rule)
    st.altair_chart(chart, width="content")
    chart_downloads(chart, ablation, "amlp_ablation", key="dl_amlp_ablation")
    picked = ablation[ablation.head_label == head_label]
    for name, frame in (("this neuron's ablated heads, pooled", ablation), (head_label, picked)):
        if frame.empty:
            st.caption(f"{head_label} is not context-dependent under either rule, so it was not ablated.")
            continue
        ks = ks_tests(frame).set_index("rule").loc[rule]
        st.markdown(f"KS test, {name}: D = {ks.ks_d:.3f}, p = {ks.p_value:.3g} "
                    f"({int(ks.n_active)} active vs {int(ks.n_inactive)} inactive prompt-head pairs).")


def show_summary(results: dict) -> None:
    share, ks = results["context_share"], results["ks"]
    for row in share.itertuples():
        st.markdown(f"**{RULES[row.rule]}**: {row.with_context_heads} of {row.neurons} neurons "
                    f"({row.share:.0%}) have at least one context-dependent head.")
    for row in ks.itertuples():
        st.markdown(f"Ablation KS ({row.rule}): D = {row.ks_d:.3f}, p = {row.p_value:.3g}; mean drop "
                    f"{row.mean_drop_active:.2e} active vs {row.mean_drop_inactive:.2e} inactive.")
    if not results["ablation"].empty:
        data = results["ablation"].assign(group=results["ablation"].active_top3.map({True: "active", False: "inactive"}))
        chart = alt.Chart(data).mark_boxplot(extent="min-max").encode(
            x=alt.X("group:N", title="head on the prompt (top-3 rule)"), y=alt.Y("drop:Q", title="decrease in p(token)"),
            color=alt.Color("group:N", legend=None)).properties(width=260, height=240)
        st.altair_chart(chart, width="content")
        chart_downloads(chart, results["ablation"], "amlp_ablation_all", key="dl_amlp_ablation_all")
    for name in ("context_share", "ks", "heads", "skipped"):
        st.markdown(f"**{name}**")
        st.dataframe(results[name], hide_index=True, width="stretch", height=180)
        table_downloads(results[name], f"amlp_{name}", key=f"dl_amlp_all_{name}")


BUNDLED_REFERENCE = (
    "Measured on the bundled model (blocks 26–29 0-based, 3 next-token neurons per block, 100 Wikipedia "
    "evaluation paragraphs spread over the corpus, windows of 128 tokens, 20 prompts per neuron; `python -m core "
    "attention-mlp --per-layer 3 --n-texts 100 --table ks`): neurons such as 27.1263 ' right' (congruence 23.3), "
    "27.876 ' too' (18.9), 27.831 ' order' (18.2), 26.1360 ' well' (16.9), 29.1135 ' her' (14.0). All 12 neurons "
    "have at least one context-dependent head under both rules (on average 3.2 heads per neuron with top-3, 7.0 "
    "with mean + 2σ). Ablation, active vs inactive prompt-head pairs: top-3 KS D = 0.165, p = 9.9e-8 (385 vs "
    "1435; mean drop 1.6e-3 vs 5.5e-4); mean + 2σ D = 0.123, p = 2.9e-6 (739 vs 1081). Random-neuron control "
    "(one per block, same texts): 4 of 4 neurons also have context-dependent heads, but ablation does not "
    "separate active from inactive: top-3 D = 0.059, p = 0.81; mean + 2σ D = 0.038, p = 0.95."
)


def show_reference(source: str) -> None:
    """The figures measured for the bundled model, for comparison with a run here."""
    if source == "bundled":
        st.caption(BUNDLED_REFERENCE)

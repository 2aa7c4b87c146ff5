"""Building blocks of the Attention -> MLP page: settings, the neuron table and picker, background jobs per
neuron and for the whole table, and the sections that show prompts, head attributions, examples and ablation.

Blocks are 1-based everywhere on the page (block l writes layer l; core/layers.py): the ``amlp_blocks`` URL key,
the tables' ``block`` and ``head_block`` columns, neuron labels and head labels ``B{block}H{head}``. Links from
before that numbering (``amlp_layers``, 0-based) are translated once by :func:`translate_old_link`.
"""

from __future__ import annotations

import html
import re
from dataclasses import asdict, dataclass

import pandas as pd
import streamlit as st

from core.analyses.attention_mlp.heads import RULES, head_label, head_summary, ks_tests
from core.analyses.attention_mlp.neurons import check_blocks, default_blocks
from core.analyses.attention_mlp.params import (
    DEFAULT_CORPUS,
    DEFAULT_PER_LAYER,
    DEFAULT_TOP_PROMPTS,
    DEFAULT_WINDOW,
    MAX_TRIMMED_TOKENS,
    PRESETS,
    TRIM_KEEP,
    TRIM_METHODS,
    preset_block_list,
)
from core.analyses.attention_mlp.pipeline import (
    MIN_PROMPTS,
    HeadParams,
    choose_neurons,
    corpus_sample,
    neuron_heads,
    neuron_is_cached,
    neuron_prompts,
    summarise,
    summary_is_cached,
)
from core.analyses.attention_mlp.prompts import ScanParams, corpus_hash
from core.analyses.attention_mlp.verdicts import verdicts
from core.cache import stable_key
from core.data import CORPORA, corpus_texts, evaluation_texts, parse_user_texts
from core.layers import layer_of_block, layers_of_blocks
from core.model.session import ModelSession
from ui import cached, hosting
from ui import job_panel as jobs
from ui.charts import attention_mlp as charts
from ui.downloads import chart_downloads, table_downloads
from ui.format import show_token
from ui.glossary import glossary
from ui.presets import preset_buttons
from ui.state import bound, set_value
from ui.verdicts import show_verdicts
from ui.views import attention_mlp_explainer as explainer

UPLOAD = "upload a file…"
URL_KEYS = ["amlp_blocks", "amlp_per_layer", "amlp_corpus", "amlp_n_texts", "amlp_window", "amlp_top", "amlp_keep",
            "amlp_max_tokens", "amlp_trim", "amlp_reject", "amlp_control", "amlp_own", "amlp_neuron", "amlp_rule",
            "amlp_head", "amlp_explainer"]
HEADING = "Attention → MLP: heads that switch on a next-token neuron"
CAPTION = (
    "Next-token neurons are MLP neurons whose output direction, read through the unembedding, promotes one "
    "token (congruence = max over tokens of W_out[n] · W_U, with the final norm's gain folded into W_U and W_U "
    "centred over the vocabulary). W_out is centred over d_model only for LayerNorm models: an RMSNorm (Llama "
    "family, the bundled model) does not remove the mean, so centring would change what the model computes. "
    "For each neuron: its max-activating corpus prompts, trimmed; each earlier head's direct contribution to "
    "the neuron's pre-activation at the last token; heads active in 25–75 % of prompts; and what zeroing a "
    "head does to the probability of the neuron's token. For SwiGLU MLPs (act(W_gate x) · W_up x) the "
    "attribution is onto the **gate** pre-activation W_gate x (pre-MLP RMSNorm gain folded in, its per-prompt "
    "scale ignored, as the paper ignores LayerNorm's); the activation itself is shown alongside. Blocks are "
    "numbered from 1 as on every page (block l writes layer l; a head B5H2 is head 2 of block 5); the paper "
    "numbers them from 0, so its layer b is block b + 1 here. The sidebar prompt is not used here."
)
ABLATION_CAPTION = (
    "Each head is ablated by zeroing its z (its attention-weighted values, the slice of the output "
    "projection's input that belongs to it) — exactly zeroing that query head's values. With "
    "grouped-query attention (the bundled model: 9 query heads, 3 key/value heads) zeroing the shared "
    "value head instead would remove three heads at once. The token is the neuron's own vocabulary "
    "entry (the paper's first sub-token of the string). Drop = p(clean) − p(ablated) at the last token."
)


@dataclass(frozen=True)
class Settings:
    blocks: tuple[int, ...]  # 1-based
    per_layer: int
    control: bool
    reject: tuple[str, ...]
    corpus_label: str
    texts: tuple[str, ...]
    scan: ScanParams
    heads: HeadParams


# -- links from the 0-based numbering -------------------------------------------------------------------
_OLD_CHECKED, _OLD_NOTE = "amlp_old_link_checked", "amlp_old_link_note"


def _old_pair(value: str | None, pattern: str) -> tuple[int, int] | None:
    """An old 0-based neuron ('26.5201') or head ('L25H3') value -> (1-based block, neuron or head), else None."""
    match = re.fullmatch(pattern, value or "")
    return (layer_of_block(int(match[1])), int(match[2])) if match else None


def translate_old_link() -> None:
    """A link from before the 1-based numbering (``amlp_layers=26,27``, ``amlp_neuron=26.5201``,
    ``amlp_head=L25H3``, all 0-based) opens the same blocks, neuron and head, with a note saying so: an old link
    never silently shows another neuron. Runs once per browser session, before the widgets read the URL."""
    params = st.query_params
    old = params.get("amlp_layers") if "amlp_blocks" not in params else None
    neuron = _old_pair(params.get("amlp_neuron"), r"(\d+)\.(\d+)")
    head = _old_pair(params.get("amlp_head"), r"L(\d+)H(\d+)")
    if _OLD_CHECKED not in st.session_state and (old is not None or neuron or head):
        try:
            blocks = layers_of_blocks(int(p) for p in (old or "").split(",") if p.strip())
        except ValueError:  # not numbers: the default blocks, and the note says what the link held
            blocks = []
        new = {"amlp_blocks": ",".join(str(b) for b in blocks), "amlp_neuron": neuron and neuron_key(*neuron),
               "amlp_head": head and head_label(*head)}
        for name, value in new.items():
            if value:
                set_value(name, value)
        st.session_state[_OLD_NOTE] = (
            "This link numbered blocks from 0, as the paper does"
            + (f"; amlp_layers={old} is shown as blocks {new['amlp_blocks'] or '(the default)'}" if old else "")
            + (f"; neuron {params.get('amlp_neuron')} as {new['amlp_neuron']}" if neuron else "")
            + (f"; head {params.get('amlp_head')} as {new['amlp_head']}" if head else "")
            + ". Blocks are now 1-based on every page (block l writes layer l); the address bar holds the new link.")
    st.session_state[_OLD_CHECKED] = True
    if _OLD_NOTE in st.session_state:
        st.info(st.session_state[_OLD_NOTE])


# -- settings and the neuron table ----------------------------------------------------------------------
def _parse_blocks(text: str, session: ModelSession) -> list[int]:
    try:
        blocks = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ValueError(f"Blocks must be comma-separated 1-based block numbers, e.g. 27,28, not {text!r}.") from None
    return check_blocks(session, blocks)


PRESET_NOTES = {
    "quick": "One neuron in the last block, 20 texts, 6 prompts per neuron: about a minute on a CPU.",
    "paper": "RESEARCH.md §5a: 20 neurons per block in the last quarter of the blocks (GPT-2 small: the last 3 of "
             "12), the top 20 prompts per neuron trimmed to keep > 0.8 of the activation, prompts of at most 100 "
             "tokens, heads of earlier blocks, both active-head rules; every paragraph of the bundled corpus (the "
             "paper scanned pile-10k's 10,000 texts). Hours on a CPU.",
}


def preset_values(n_layers: int) -> dict[str, dict]:
    """:data:`PRESETS` as the page's URL names and widget values (blocks scaled to this model's depth)."""
    out = {}
    for name, p in PRESETS.items():
        out[name] = {"amlp_blocks": ",".join(str(b) for b in preset_block_list(p, n_layers)),
                     "amlp_per_layer": p["per_layer"], "amlp_corpus": DEFAULT_CORPUS, "amlp_n_texts": p["n_texts"],
                     "amlp_window": p["window"], "amlp_top": p["top"], "amlp_keep": p["keep"],
                     "amlp_max_tokens": p["max_tokens"], "amlp_trim": p["trim"], "amlp_control": p["control"],
                     "amlp_own": p["include_own"]}
    return out


def settings(session: ModelSession) -> Settings | None:
    """Presets, blocks, count, control, corpus and scan settings; None (after saying why) when not usable yet."""
    preset_buttons(preset_values(session.adapter.n_layers), "amlp", PRESET_NOTES)
    defaults = default_blocks(session.adapter.n_layers)
    c1, c2, c3, c4 = st.columns([1.2, 0.8, 1.3, 0.8])
    block_text = bound(c1.text_input, "amlp_blocks", ",".join(str(b) for b in defaults),
                       "Blocks (1-based: block l writes layer l)",
                       help="The paper uses the last blocks: GPT-2 small's 0-based layers 9-11 of 12, blocks 10-12 "
                            f"here; by default the last {len(defaults)}.")
    per_layer = int(bound(c2.number_input, "amlp_per_layer", DEFAULT_PER_LAYER, "Neurons per block", parse=int,
                          min_value=1, max_value=200, samples=True))
    corpus = bound(c3.selectbox, "amlp_corpus", DEFAULT_CORPUS, "Corpus",
                   options=list(CORPORA) + hosting.uploads([UPLOAD]),
                   format_func=lambda c: CORPORA.get(c, c))
    n_texts = int(bound(c4.number_input, "amlp_n_texts", 100, "Texts scanned", parse=int, min_value=1,
                        max_value=10_000, step=10, help="Spread evenly over the corpus; more than it holds = all.",
                        samples=True))
    with st.expander("More settings"):
        scan, own, control, reject = _more_settings()
    try:
        blocks = _parse_blocks(block_text, session)
        texts = _texts(corpus)
    except ValueError as err:
        st.error(str(err))
        return None
    if texts is None:
        return None
    label = CORPORA.get(corpus, "uploaded file")
    rejected = tuple(r for r in reject.split(",") if r.strip())
    sample = corpus_sample(texts, n_texts)
    if n_texts > len(texts):
        st.caption(f"The corpus holds {len(texts)} texts: all of them are scanned.")
    return Settings(tuple(blocks), per_layer, control, rejected, label, tuple(sample), scan,
                    HeadParams(include_own=own))


def _more_settings() -> tuple[ScanParams, bool, bool, str]:
    """Window, prompts per neuron, trimming, length cap, control, own heads, rejected tokens (all in the URL)."""
    d1, d2, d3, d4 = st.columns(4)
    window = int(bound(d1.number_input, "amlp_window", DEFAULT_WINDOW, "Window (tokens)", parse=int, min_value=8,
                       max_value=1024, help="Texts are cut into windows of this many tokens; each window gives one "
                                            "candidate prompt (its most activating position)."))
    top = int(bound(d2.number_input, "amlp_top", DEFAULT_TOP_PROMPTS, "Prompts per neuron", parse=int,
                    min_value=MIN_PROMPTS, max_value=100))
    keep = float(bound(d3.number_input, "amlp_keep", TRIM_KEEP, "Trimming: keep more than", parse=float,
                       min_value=0.05, max_value=0.95, step=0.05, format="%.2f",
                       help="The shortest suffix whose activation at the last token is above this share of the "
                            "untrimmed prompt's (the paper: 0.8)."))
    max_tokens = int(bound(d4.number_input, "amlp_max_tokens", MAX_TRIMMED_TOKENS, "Longest trimmed prompt (tokens)",
                           parse=int, min_value=2, max_value=1024, help="Longer trimmed prompts are dropped."))
    e1, e2, e3 = st.columns(3)
    trim = bound(e1.selectbox, "amlp_trim", "binary", "Trimming search", options=list(TRIM_METHODS),
                 format_func={"binary": "binary search, verified", "linear": "every suffix, shortest first"}.get)
    control = bool(bound(e2.toggle, "amlp_control", False, "Random neurons (control)", parse=lambda v: v == "True"))
    own = bool(bound(e3.toggle, "amlp_own", False, "Count the neuron's own block's heads",
                     parse=lambda v: v == "True",
                     help="The paper counts heads of earlier blocks only; the neuron's own block's attention "
                          "also writes before its MLP. Off: its heads are reported as an 'own heads' term."))
    reject = bound(st.text_input, "amlp_reject", "", "Extra tokens to reject (comma-separated)",
                   help="Added to the built-in list of known glitch tokens; compared without spaces.")
    return ScanParams(window=window, top=top, keep=keep, max_tokens=max_tokens, trim=trim), own, control, reject


def _texts(corpus: str) -> list[str] | None:
    if corpus != UPLOAD:
        return evaluation_texts(corpus_texts(corpus))
    upload = st.file_uploader("Text file: .txt (blank-line separated), .jsonl ('text'), .csv ('text')",
                              type=["txt", "jsonl", "csv"], key="w_amlp_upload")
    return None if upload is None else parse_user_texts(upload.getvalue(), upload.name)


def neuron_table(session: ModelSession, s: Settings) -> pd.DataFrame:
    """The chosen neurons (cached), shown as a table with its downloads; empty when none passes the filter."""
    with st.spinner("Congruence of every neuron with the unembedding…"):
        neurons = choose_neurons(session, list(s.blocks), s.per_layer, s.control, reject=s.reject)
    st.subheader(f"{len(neurons)} {'random (control)' if s.control else 'next-token'} neurons")
    st.dataframe(neurons, hide_index=True, width="stretch", height=240)
    table_downloads(neurons, "amlp_neurons", key="dl_amlp_neurons")
    return neurons


def neuron_key(block: int, neuron: int) -> str:
    """The URL value of a neuron: 'B{block}N{neuron}', 1-based block (an old 0-based '26.5201' never matches)."""
    return f"B{int(block)}N{int(neuron)}"


def neuron_label(row) -> str:
    return f"block {row.block} · neuron {row.neuron} → {show_token(row.token)} (congruence {row.congruence:.2f})"


def pick_neuron(neurons: pd.DataFrame):
    """The neuron select box (URL key ``amlp_neuron``) -> the chosen row of ``neurons``."""
    rows = {neuron_key(r.block, r.neuron): r for r in neurons.itertuples()}
    picked = bound(st.selectbox, "amlp_neuron", next(iter(rows)), "Neuron", options=list(rows),
                   format_func=lambda key: neuron_label(rows[key]))
    return rows[picked]


# -- background jobs -------------------------------------------------------------------------------------
def _job(key: str, label: str, work, button: str, help_text: str, start_now: bool = False):
    """Start button / progress / error / result of one background job (None until it has a result); ``start_now``
    (a stored run) shows it without a click."""
    name = label.replace(" ", "_")
    return jobs.job_panel(key, label, work, button=button, button_key=f"run_amlp_{name}", caption=help_text,
                          start_now=start_now)


def neuron_job(spec_key: str, neurons: pd.DataFrame, s: Settings, block: int, neuron: int) -> dict | None:
    """Prompts, attributions and ablation of ``neuron`` of 1-based ``block``, as a background job."""
    session = cached.get_session(spec_key)
    texts = list(s.texts)
    key = stable_key("amlp-neuron", model=session.identity(), corpus=corpus_hash(texts), block=block,
                     neuron=neuron, neurons=neurons[["block", "neuron"]].values.tolist(), scan=asdict(s.scan),
                     heads=asdict(s.heads))

    def work(progress) -> dict:
        prompts = neuron_prompts(session, neurons, texts, s.scan, block, neuron, lambda f, m: progress(0.7 * f, m))
        if len(prompts) < MIN_PROMPTS:
            return {"prompts": prompts}
        progress(0.7, f"attributions and ablation over {len(prompts)} prompts")
        return {"prompts": prompts, **neuron_heads(session, prompts, s.heads)}

    return _job(key, "neuron", work, "Find prompts and heads",
                f"Scans {len(texts)} texts in windows of {s.scan.window} tokens (one pass each, shared by every "
                "neuron in the table), trims the top prompts, attributes and ablates. Cached on disk.",
                start_now=neuron_is_cached(session, neurons, texts, s.scan, s.heads, block, neuron))


def summary_job(spec_key: str, neurons: pd.DataFrame, s: Settings) -> dict | None:
    """Every neuron of the table: share with context-dependent heads and the pooled KS test."""
    session = cached.get_session(spec_key)
    texts = list(s.texts)
    key = stable_key("amlp-all", model=session.identity(), corpus=corpus_hash(texts),
                     neurons=neurons[["block", "neuron"]].values.tolist(), scan=asdict(s.scan), heads=asdict(s.heads))

    def work(progress) -> dict:
        return summarise(session, neurons, texts, s.scan, s.heads, progress)

    return _job(key, "all neurons", work, "Run every neuron",
                f"{len(neurons)} neurons × up to {s.scan.top} prompts: long on a CPU (minutes per neuron); "
                "neurons already run above are reused from the disk cache.",
                start_now=summary_is_cached(session, neurons, texts, s.scan, s.heads))


# -- sections --------------------------------------------------------------------------------------------
def example_html(row, token: str) -> str:
    """A trimmed prompt with its last (activating) token highlighted and the neuron's token appended;
    every piece of text is HTML-escaped."""
    text = html.escape(row.text[: len(row.text) - len(row.last_token)])
    last = html.escape(row.last_token)
    nxt = html.escape(token)
    return (f"<div style='font-family:monospace;margin:2px 0'>{text}<mark>{last}</mark>"
            f"<span style='opacity:0.6'>[{nxt}]</span> <small>({row.trimmed_activation:.2f})</small></div>")


def show_prompts(prompts: pd.DataFrame, token: str, keep: float = TRIM_KEEP) -> None:
    st.markdown(f"**{len(prompts)} max-activating prompts**, trimmed to the shortest suffix keeping more than "
                f"{keep:.2f} of the activation (highlighted: the activating last token; in brackets: the neuron's "
                "token; in parentheses: the neuron's activation at the highlighted token).")
    st.markdown("".join(example_html(r, token) for r in prompts.itertuples()), unsafe_allow_html=True)
    table_downloads(prompts, "amlp_prompts", key="dl_amlp_prompts")


def show_attributions(attr: pd.DataFrame, heads: pd.DataFrame, terms: pd.DataFrame, rule: str) -> None:
    chart = charts.attribution_heatmap(attr, rule)
    st.altair_chart(chart, width="stretch")  # the heatmap fills the main area's width
    chart_downloads(chart, attr, "amlp_attributions", key="dl_amlp_heatmap")
    chart = charts.share_chart(heads, rule)
    st.altair_chart(chart, width="content")
    chart_downloads(chart, heads, "amlp_head_shares", key="dl_amlp_shares")
    dependent = heads[heads[f"context_{rule}"]].sort_values("mean_attr", ascending=False)
    st.markdown(f"**Context-dependent heads** ({RULES[rule]}; active in 25–75 % of prompts): "
                + (", ".join(dependent.head_label) if len(dependent) else "none for this neuron."))
    with st.expander("Other terms of the pre-activation (per prompt)"):
        st.caption("The embeddings, the attention output biases, the earlier MLPs and the neuron's own block's "
                   "attention (when its heads are not candidates) complete the sum: resid_dot is the residual "
                   "entering the MLP dotted with the neuron's input direction, scale the norm's per-prompt RMS (or "
                   "standard deviation), and the pre-activation preact = resid_dot / scale + the bias terms.")
        st.dataframe(terms, hide_index=True, width="stretch", height=220)
        table_downloads(terms, "amlp_terms", key="dl_amlp_terms")


def head_options(heads: pd.DataFrame) -> list[str]:
    """Context-dependent heads (either rule) first, then the rest by mean attribution."""
    ranked = heads.assign(dep=heads.context_top3 | heads.context_sigma2).sort_values(
        ["dep", "mean_attr"], ascending=[False, False])
    return ranked.head_label.tolist()


def show_examples(prompts: pd.DataFrame, attr: pd.DataFrame, label: str, rule: str, token: str) -> None:
    flags = attr[attr.head_label == label].set_index("prompt")[f"active_{rule}"]
    c1, c2 = st.columns(2)
    for column, wanted, title in ((c1, True, "Active"), (c2, False, "Inactive")):
        rows = [r for r in prompts.itertuples() if bool(flags.get(r.prompt, False)) == wanted]
        column.markdown(f"**{title}** ({len(rows)})")
        column.markdown("".join(example_html(r, token) for r in rows) or "—", unsafe_allow_html=True)


def show_ablation(ablation: pd.DataFrame, label: str, rule: str) -> None:
    if ablation.empty:
        st.info("No context-dependent head to ablate for this neuron.")
        return
    chart = charts.ablation_chart(ablation, rule)
    st.altair_chart(chart, width="content")
    chart_downloads(chart, ablation, "amlp_ablation", key="dl_amlp_ablation")
    picked = ablation[ablation.head_label == label]
    for name, frame in (("this neuron's ablated heads, pooled", ablation), (label, picked)):
        if frame.empty:
            st.caption(f"{label} is not context-dependent under either rule, so it was not ablated.")
            continue
        ks = ks_tests(frame).set_index("rule").loc[rule]
        if not (ks.n_active and ks.n_inactive):
            st.markdown(f"KS test, {name}: not computed ({int(ks.n_active)} active and {int(ks.n_inactive)} "
                        "inactive prompt-head pairs; it needs both).")
            continue
        st.markdown(f"KS test, {name}: D = {ks.ks_d:.3f}, p = {ks.p_value:.3g} "
                    f"({int(ks.n_active)} active vs {int(ks.n_inactive)} inactive prompt-head pairs; D = the "
                    "largest gap between the two groups' cumulative distributions of the drop).")


def show_neuron(result: dict, token: str, keep: float = TRIM_KEEP, neuron: str = "") -> None:
    """One neuron's job result: prompts, then (with enough prompts) heads, examples, ablation and the explainer."""
    prompts = result["prompts"]
    show_prompts(prompts, token, keep)
    if "attributions" not in result:
        st.warning(f"Only {len(prompts)} prompts survived trimming; the 25–75 % rule needs {MIN_PROMPTS}: scan more "
                   "texts or allow longer prompts.")
        return
    attr = result["attributions"]
    heads = head_summary(attr)
    st.subheader("Which heads drive the neuron")
    rule = bound(st.radio, "amlp_rule", "top3", "Active rule", options=list(RULES), format_func=RULES.get,
                 horizontal=True)
    show_attributions(attr, heads, result["terms"], rule)
    options = head_options(heads)
    label = bound(st.selectbox, "amlp_head", options[0], "Head", options=options,
                  help="B = block (1-based), H = head within the block.")
    show_examples(prompts, attr, label, rule, token)
    st.subheader("Ablation: zero the head, watch p(token)")
    st.caption(ABLATION_CAPTION)
    show_ablation(result["ablation"], label, rule)
    explainer.panel(prompts, attr, label, rule, token, neuron)


SUMMARY_TABLES = {"context_share": "Neurons with a context-dependent head, per rule",
                  "ks": "Ablation, active vs inactive prompt-head pairs, per rule (KS test)",
                  "heads": "Every neuron-head: mean attribution and share of prompts active",
                  "skipped": "Neurons left out (fewer prompts than the 25–75 % rule needs)"}


def _worded(frame: pd.DataFrame) -> pd.DataFrame:
    """A table to show: the rule codes as words."""
    return frame.assign(rule=frame["rule"].map(RULES)) if "rule" in frame else frame


def show_summary(results: dict, keep: float = TRIM_KEEP) -> None:
    """Every neuron of the table: the verdicts on the paper's claims, the pooled ablation chart and the tables."""
    st.markdown("**Verdicts on the paper's claims** (RESEARCH.md §5d), from every neuron of the table:")
    show_verdicts(verdicts(results, explainer.scores(), keep), "amlp",
                  note="Drops are pooled over prompt-head pairs of all neurons, as the paper's KS test pools them; "
                       "pairs of one neuron share its prompts, so the interval is somewhat too narrow.")
    if not results["ablation"].empty:
        chart = charts.pooled_ablation_chart(results["ablation"])
        st.altair_chart(chart, width="content")
        chart_downloads(chart, results["ablation"], "amlp_ablation_all", key="dl_amlp_ablation_all")
    for name, title in SUMMARY_TABLES.items():
        st.markdown(f"**{title}**")
        st.dataframe(_worded(results[name]), hide_index=True, width="stretch", height=180)
        table_downloads(results[name], f"amlp_{name}", key=f"dl_amlp_all_{name}")


BUNDLED_REFERENCE = (
    "Measured on the bundled model (blocks 27–30, 1-based; the paper's 0-based numbering would say 26–29; 3 "
    "next-token neurons per block, 100 Wikipedia evaluation paragraphs spread over the corpus, windows of 128 "
    "tokens, 20 prompts per neuron; `python -m core attention-mlp --per-layer 3 --n-texts 100 --table ks`): "
    "neurons such as block 28 neuron 1263 ' right' (congruence 23.3), block 28 neuron 876 ' too' (18.9), "
    "block 28 neuron 831 ' order' (18.2), block 27 neuron 1360 ' well' (16.9), block 30 neuron 1135 ' her' "
    "(14.0). All 12 neurons have at least one context-dependent head under both rules (on average 3.2 heads per "
    "neuron with the top-3 rule, 7 with the mean + 2σ rule). Ablation, active vs inactive prompt-head pairs: "
    "top-3 KS D = 0.165, "
    "p = 9.9e-8 (385 vs 1435; mean drop 1.6e-3 vs 5.5e-4); mean + 2σ D = 0.123, p = 2.9e-6 (739 vs 1081). "
    "Random-neuron control (one per block, same texts): 4 of 4 neurons also have context-dependent heads, but "
    "ablation does not separate active from inactive: top-3 D = 0.059, p = 0.81; mean + 2σ D = 0.038, p = 0.95."
)


TERMS = {
    "block b": "block b of the model, numbered from 1 (block b writes residual layer b); the paper numbers blocks "
               "from 0, so its layer b is block b + 1 here",
    "B{b}H{h}": "head h (from 0) of block b (from 1)",
    "neuron": "one MLP hidden unit: its activation is the input of the down projection (W_out)",
    "W_out, W_U": "a neuron's output direction (a row of the down projection) and the unembedding (d_model × vocab)",
    "congruence": "max over tokens t of W_out[n] · W_U[:, t], the final norm's gain folded into W_U and W_U centred "
                  "over the vocabulary; the argmax is the neuron's token",
    "next-token neuron": "a neuron with high congruence whose token is a word start (a space marker and at least 2 "
                         "characters after it)",
    "trimming": "the shortest suffix of a max-activating prompt whose activation at its last token stays above the "
                "kept share (0.8) of the untrimmed prompt's",
    "attr(h)": "direct attribution: head h's write into the residual at the last token, o_h, dotted with the "
               "neuron's input direction (W_in column, or W_gate row for SwiGLU, norm gain folded in); the norm's "
               "per-prompt scale is ignored",
    "active head": "on one prompt, a head chosen by the rule: the top 3 attributions (the paper's first runs), or "
                   "an attribution above mean + 2σ of that prompt's heads (its final runs)",
    "σ": "the standard deviation (sample, n − 1) of the attributions of one prompt's heads",
    "context-dependent head": "a head active in 25 % to 75 % of a neuron's prompts",
    "drop": "p(neuron's token) at the last position before minus after zeroing the head's attention output",
    "KS D, p": "two-sample Kolmogorov–Smirnov test of the drops, active vs inactive: D = the largest gap between "
               "the two cumulative distributions, p its p-value",
    "balanced accuracy": "(true-positive rate + true-negative rate) / 2 of an explanation's yes/no guesses on "
                         "held-out prompts; 0.5 = chance",
}


def symbols() -> None:
    """The page's symbols in a popover (shared definitions plus this page's terms)."""
    glossary(["l", "n", "CI", *TERMS], extra=TERMS)


METHOD_DIFFERENCES = [
    "Data: the paper scanned NeelNanda/pile-10k (10,000 Pile texts) and scored explanations on a held-out Pile "
    "list; here a bundled corpus (3,220 Wikipedia paragraphs or 265 news articles) or your file, because nothing "
    "can be downloaded; the explainer's held-out examples are half of the same neuron's prompts.",
    "Scanning: texts are cut into windows (128 tokens by default; 1,024 with Paper settings) and each window gives "
    "one candidate, where the paper took one maximum per whole text (up to GPT-2's 1,024 tokens).",
    "Prompts per neuron: the paper kept 20-30 texts, trimmed them, dropped those over 100 tokens and used the first "
    "20; here the top N windows are trimmed and those over the length cap dropped, so fewer than N can remain; "
    "repeated trimmed texts are dropped too (a passage would count twice).",
    "Weights: as TransformerLens does (fold_ln, center_unembed, center_writing_weights), the final norm's gain is "
    "folded into W_U and W_U is centred over the vocabulary; W_out is centred over d_model only for LayerNorm "
    "models (TransformerLens skips centring for RMSNorm too: it would change what the model computes). The final "
    "norm's bias adds the same vector to every neuron's row and is left out: it cannot change congruence.",
    "Token filter: the word-start marker is read from the tokenizer ('Ġ' for GPT-2's byte-level BPE, '▁' for "
    "SentencePiece) instead of GPT-2's 'Ġ' only; the reject list holds GPT-2's known glitch tokens plus yours.",
    "BOS: TransformerLens prepends BOS (GPT-2's <|endoftext|>) to every prompt; here BOS is prepended only when "
    "the model's own tokenizer adds one (Llama-2 style), so GPT-2 and the bundled SmolLM2 run as their tokenizers "
    "feed them. The same rule holds for scanning, trimming, attribution and ablation, and positions count content "
    "tokens, so the paper's scan-with-BOS / trim-without-BOS off-by-one cannot arise.",
    "Trimming: a binary search as in the paper, then 3 extra probes of shorter suffixes; if one of them also keeps "
    "enough activation (the search's monotonicity assumption fails) the exact shortest-first scan is used instead. "
    "The search looks only at suffixes within the length cap (a longer one would be dropped anyway): the same kept "
    "prompts, without passes over the whole 1,024-token window; the untrimmed activation is the scan's reading.",
    "Attribution site: GPT-2-style MLPs use the W_in column with the pre-MLP LayerNorm's gain folded in and centred "
    "(as fold_ln does); SwiGLU MLPs (the bundled model) use the gate's row W_gate (the neuron is act(W_gate x) · "
    "W_up x; the paper's models have no gate). The norm's per-prompt scale is ignored, as in the paper.",
    "Candidate heads: heads of earlier blocks, as in the paper; optionally the neuron's own block's heads, which "
    "also write before its MLP (otherwise reported as a separate term).",
    "Active-head rules: both the paper's top-3 (its first runs) and mean + 2σ (its final runs, σ with n − 1) are "
    "computed; the 25–75 % band includes its ends.",
    "Ablation site: the paper zeroes the head's value vectors (hook_v); here the head's attention-weighted values z "
    "(its slice of the output projection's input). For multi-head attention (GPT-2) the two are the same; with "
    "grouped-query attention (the bundled model) zeroing a shared value head would remove several query heads.",
    "Ablation token: the neuron's own vocabulary id; the paper re-encodes the token string and takes the first "
    "sub-token (the same id whenever the string re-encodes to itself).",
    "Verdicts: the paper reports KS p < 0.05 for the ablation; here the claim is judged on a bootstrap interval of "
    "the difference of mean drops (KS D and p as extra evidence), and 'most neurons' on a Wilson interval.",
    "Model: the bundled model is SmolLM2-135M (Llama: RMSNorm, SwiGLU, grouped-query attention, 30 blocks, 4-bit "
    "weights dequantised); the paper used GPT-2 small to XL and Pythia. Paper settings take the last quarter of the "
    "blocks (GPT-2 small: 3 of 12; here 8 of 30), where the paper's larger models used 4-5.",
]


def method_notes() -> None:
    """How this page's method differs from the paper's code, and why."""
    with st.expander("How this differs from the paper's code"):
        st.markdown("\n".join(f"- {item}" for item in METHOD_DIFFERENCES))


def show_reference(source: str) -> None:
    """The figures measured for the bundled model, for comparison with a run here."""
    if source == "bundled":
        st.caption(BUNDLED_REFERENCE)

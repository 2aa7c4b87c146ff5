"""The optional explainer panel of the Attention -> MLP page: off by default, a manual mode, or any
OpenAI-compatible endpoint the user configures (the key stays in memory; nothing is sent unless asked)."""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from core.analyses.attention_mlp.explainer import (
    ChatEndpoint,
    Example,
    explain_and_score,
    explanation_prompt,
    score_labels,
    split_examples,
)
from ui import hosting
from ui.downloads import table_downloads
from ui.state import bound

MODES = ("off", "manual", "endpoint")
_SCORES = "amlp_explainer_scores"  # session state: "neuron head rule mode" -> balanced accuracy


def scores() -> list[float]:
    """The explanation scores (balanced accuracy) of the neuron-heads scored in this browser session."""
    return list(st.session_state.get(_SCORES, {}).values())
MODE_LABELS = {"off": "Off", "manual": "Manual: write an explanation and label examples yourself",
               "endpoint": "OpenAI-compatible endpoint (yours)"}


def examples_for(prompts: pd.DataFrame, attributions: pd.DataFrame, head_label: str, rule: str) -> list[Example]:
    """The neuron's prompts as examples; active = the head is active on that prompt under ``rule``."""
    flags = attributions[attributions.head_label == head_label].set_index("prompt")[f"active_{rule}"]
    return [Example(r.text, bool(flags.get(r.prompt, False))) for r in prompts.itertuples()]


def _score_row(score, head_label: str, mode: str) -> pd.DataFrame:
    row = {"head": head_label, "mode": mode, **(score.as_row() if score else {"balanced_accuracy": None})}
    return pd.DataFrame([row])


def _manual(examples: list[Example], token: str, head_label: str, key: str) -> None:
    """Write an explanation, label the held-out examples, score the labels."""
    shown, held = split_examples(examples)
    st.markdown("Examples to explain from (★ = head active):")
    st.code("\n".join(("★ " if e.active else "  ") + e.text + f"[{token}]" for e in shown), language=None)
    st.text_area("Your explanation", key=f"w_amlp_manual_text_{key}",
                 placeholder="The head is active when the earlier context …")
    if not held:
        st.info("No held-out examples left to score on.")
        return
    st.markdown("Held-out examples: tick those where your explanation says the head is active.")
    labels = [st.checkbox(e.text + f"[{token}]", key=f"w_amlp_label_{key}_{i}") for i, e in enumerate(held)]
    if st.button("Score my labels", key=f"score_manual_{key}"):
        score = score_labels(labels, [e.active for e in held])
        _report(score, head_label, "manual", key)


def _report(score, head_label: str, mode: str, key: str) -> None:
    """Show a score and keep it for the page's verdict on explanation scores."""
    if score is None:
        st.warning("The held-out examples are all active or all inactive: no score (skipped, as in the paper).")
        return
    st.session_state.setdefault(_SCORES, {})[f"{key} {mode}"] = float(score.balanced_accuracy)
    st.metric("Head explanation score (balanced accuracy)", f"{score.balanced_accuracy:.3f}",
              help="(TPR + TNR) / 2 over the held-out examples; 0.5 = chance.")
    frame = _score_row(score, head_label, mode)
    st.dataframe(frame, hide_index=True)
    table_downloads(frame, f"amlp_explanation_{head_label}", key=f"dl_amlp_expl_{mode}")


def _endpoint(examples: list[Example], token: str, head_label: str, key: str) -> None:
    """An OpenAI-compatible endpoint explains the head from the shown examples and labels the held-out ones."""
    c1, c2 = st.columns(2)
    base_url = c1.text_input("Base URL", placeholder="https://api.example.com/v1", key="w_amlp_base_url")
    model = c2.text_input("Model name", key="w_amlp_llm_model")
    c3, c4 = st.columns(2)
    env_name = c3.text_input("API key from environment variable", value="OPENAI_API_KEY", key="w_amlp_key_env")
    typed = c4.text_input("…or type the key (kept in memory only)", type="password", key="w_amlp_key")
    shown, _held = split_examples(examples)
    with st.expander("The request the explainer receives"):
        st.code(explanation_prompt(token, head_label, [e for e in shown if e.active],
                                   [e for e in shown if not e.active]), language=None)
    if not st.button("Explain and score", key=f"run_explainer_{key}"):
        return
    try:
        endpoint = ChatEndpoint(base_url, model, typed or os.environ.get(env_name.strip(), ""))
        with st.spinner("Asking the endpoint (one request for the explanation, one per held-out example)…"):
            explanation, score, _guesses = explain_and_score(endpoint, token, head_label, examples)
    except ValueError as err:
        st.error(str(err))
        return
    st.markdown(f"**Explanation:** {explanation}")
    _report(score, head_label, "endpoint", key)


def panel(prompts: pd.DataFrame, attributions: pd.DataFrame, head_label: str, rule: str, token: str,
          neuron: str = "") -> None:
    """The explainer panel for one neuron-head (collapsed; off until the user picks a mode). The mode is in the URL;
    the endpoint's address, model and key are not (a link must never carry a key or point others at an endpoint)."""
    with st.expander("Explain this head (optional)", expanded=False):
        modes = [m for m in MODES if m != "endpoint" or not hosting.hosted()]
        mode = bound(st.radio, "amlp_explainer", "off", "Explainer", options=modes, format_func=MODE_LABELS.get,
                     horizontal=True)
        if hosting.hosted():
            st.caption(f"Explainer endpoints: {hosting.OFF_HOSTED}")
        if mode == "off":
            st.caption("Off by default: nothing is sent anywhere. The paper asked GPT-4 for a 2-3 sentence "
                       "explanation from active/inactive examples, then scored it by asking Yes/No on held-out "
                       "examples (balanced accuracy).")
            return
        examples = examples_for(prompts, attributions, head_label, rule)
        key = f"{neuron}_{head_label}_{rule}"
        if mode == "manual":
            _manual(examples, token, head_label, key)
        elif not hosting.hosted():
            _endpoint(examples, token, head_label, key)

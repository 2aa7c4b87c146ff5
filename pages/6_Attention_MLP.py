"""Attention -> MLP: which attention heads switch on a next-token neuron (Neo, Cohen & Barez 2024)."""

import streamlit as st

from core.analyses.attention_mlp.heads import RULES
from ui.views import attention_mlp_explainer as attention_mlp_explain, attention_mlp as view
from ui.downloads import table_downloads
from ui.sidebar import sidebar
from ui.state import bound, write_url

st.set_page_config(page_title="Attention → MLP · Layerscope", page_icon=":material/hub:", layout="wide")
URL_KEYS = ["model", "prompt", "amlp_layers", "amlp_per_layer", "amlp_corpus", "amlp_n_texts", "amlp_window",
            "amlp_top", "amlp_reject", "amlp_control", "amlp_own", "amlp_neuron", "amlp_rule", "amlp_head"]


def stop() -> None:
    write_url(URL_KEYS)
    st.stop()


selection = sidebar()
st.title("Attention → MLP: heads that switch on a next-token neuron")
st.caption(
    "Next-token neurons are MLP neurons whose output direction, read through the unembedding, promotes one "
    "token (congruence = max over tokens of W_out[n] · W_U, with the final norm's gain folded into W_U and W_U "
    "centred over the vocabulary). W_out is centred over d_model only for LayerNorm models: an RMSNorm (Llama "
    "family, the bundled model) does not remove the mean, so centring would change what the model computes. "
    "For each neuron: its max-activating corpus prompts, trimmed; each earlier head's direct contribution to "
    "the neuron's pre-activation at the last token; heads active in 25–75 % of prompts; and what zeroing a "
    "head does to the probability of the neuron's token. For SwiGLU MLPs (act(W_gate x) · W_up x) the "
    "attribution is onto the **gate** pre-activation W_gate x (pre-MLP RMSNorm gain folded in, its per-prompt "
    "scale ignored, as the paper ignores LayerNorm's); the activation itself is shown alongside. The sidebar "
    "prompt is not used here."
)
if selection is None:
    stop()
spec_key, session = selection.spec.key(), selection.session
settings = view.settings(session)
if settings is None:
    stop()
neurons = view.neuron_table(session, settings)
st.subheader(f"{len(neurons)} {'random (control)' if settings.control else 'next-token'} neurons")
st.dataframe(neurons, hide_index=True, width="stretch", height=240)
table_downloads(neurons, "amlp_neurons", key="dl_amlp_neurons")
if neurons.empty:
    st.warning("No neuron passes the filter in these layers: try other layers or more neurons per layer.")
    stop()

labels = {f"{r.layer}.{r.neuron}": view.neuron_label(r) for r in neurons.itertuples()}
picked = bound(st.selectbox, "amlp_neuron", next(iter(labels)), "Neuron", options=list(labels),
               format_func=labels.get)
layer, neuron = (int(part) for part in picked.split("."))
row = neurons[(neurons.layer == layer) & (neurons.neuron == neuron)].iloc[0]
result = view.neuron_job(spec_key, neurons, settings, layer, neuron)
if result is not None:
    prompts = result["prompts"]
    view.show_prompts(prompts, row.token)
    if "attributions" not in result:
        st.warning(f"Only {len(prompts)} prompts survived trimming (at most 100 tokens): scan more texts.")
    else:
        attr, heads = result["attributions"], view.head_summary(result["attributions"])
        st.subheader("Which heads drive the neuron")
        rule = bound(st.radio, "amlp_rule", "top3", "Active rule", options=list(RULES), format_func=RULES.get,
                     horizontal=True)
        view.show_attributions(attr, heads, result["terms"], rule)
        options = view.head_options(heads)
        head = bound(st.selectbox, "amlp_head", options[0], "Head", options=options)
        view.show_examples(prompts, attr, head, rule, row.token)
        st.subheader("Ablation: zero the head, watch p(token)")
        st.caption(
            "Each head is ablated by zeroing its z (its attention-weighted values, the slice of the output "
            "projection's input that belongs to it) — exactly zeroing that query head's values. With "
            "grouped-query attention (the bundled model: 9 query heads, 3 key/value heads) zeroing the shared "
            "value head instead would remove three heads at once. The token is the neuron's own vocabulary "
            "entry (the paper's first sub-token of the string). Drop = p(clean) − p(ablated) at the last token."
        )
        view.show_ablation(result["ablation"], head, rule)
        attention_mlp_explain.panel(prompts, attr, head, rule, row.token)

st.subheader("All neurons in the table")
view.show_reference(selection.spec.source if not selection.spec.random_init else "")
summary = view.summary_job(spec_key, neurons, settings)
if summary is not None:
    view.show_summary(summary)
write_url(URL_KEYS)

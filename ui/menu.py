"""The app's pages: menu titles, icons and the home page's one-line descriptions (one list for both)."""

from __future__ import annotations

HOME = ("app_pages/0_Home.py", "Home", ":material/home:")

# (script, title, icon, what it shows)
ANALYSES: list[tuple[str, str, str, str]] = [
    ("app_pages/1_Lens.py", "Lens", ":material/layers:",
     "Logit lens over every layer × position: top-k tokens, target ranks, entropy, KL to the output; "
     "what-if comparison of two prompts; logit, tuned, affine lenses and patchscopes side by side."),
    ("app_pages/2_Extraction.py", "Next-token extraction", ":material/target:",
     "Precision@1 and surprisal per layer for every lens over a corpus sample (Patchscopes, logitscope)."),
    ("app_pages/3_Depth.py", "Depth", ":material/stacked_line_chart:",
     "Guess, then refine: parts of speech, multi-token facts, options, frequency buckets and decision flips."),
    ("app_pages/4_Top-k_order.py", "Top-k order", ":material/format_list_numbered:",
     "Looking Beyond the Top-1: saturation layers of the top-k tokens, their order (strict Kendall's τ), "
     "task probes, intervention, early exit, better LM, the random-init twin, ViT and Whisper."),
    ("app_pages/5_Neuron_topics.py", "Neuron topics", ":material/hub:",
     "Neurons as superposed topic models: vocabulary pools, NPMI word graphs, star sets and exact "
     "max-coherence topics against a random baseline."),
    ("app_pages/6_Attention_MLP.py", "Attention → MLP", ":material/call_split:",
     "Next-token neurons, their max-activating prompts, the attention heads that switch them on, and what "
     "ablating those heads does."),
]

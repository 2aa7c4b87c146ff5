"""Depth: how the model uses its depth — early guesses, later refinement (Gupta et al. 2025)."""

from ui.glossary import glossary
from ui.page import page, stop_page
from ui.views import depth as depth_view

CAPTION = (
    "For each example, the rank of the model's final prediction under the lens at every layer (layer l = the "
    "residual stream after block l, 0 = the embeddings). Parts of speech and facts are among correctly predicted "
    "tokens only; ℓ\\*(k) is the first layer where that rank is ≤ k. Options: when the answer options fill the top "
    "ranks, and when the choice among them settles. Frequency: which frequency bucket each layer's top-1 falls "
    "in, and how often it is overturned by the end."
)

with page("Depth", ":material/stacked_line_chart:", depth_view.URL_KEYS, heading="Depth: guess, then refine",
          caption=CAPTION) as selection:
    glossary(["l", "L", "ℓ*(k)", "n", "CI"])
    spec_key = selection.spec.key()
    lens_name, seed = depth_view.controls()
    if not depth_view.lens_ready(spec_key, lens_name):
        stop_page()
    depth_view.section_tabs(spec_key, lens_name, seed)

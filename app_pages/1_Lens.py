"""Lens: what each layer would predict, at every position of the prompt."""

from ui.downloads import name_prompt
from ui.format import strided_layers
from ui.page import page
from ui.views import lens as lens_view

CAPTION = (
    "Read the residual stream after every block as a next-token distribution: what would the model predict "
    "if it stopped here? Rows are layers (emb = embeddings, l = after block l), columns are prompt positions, "
    "each cell shows that layer's top-1 token. The logit lens uses the model's own final norm and unembedding; "
    "the tuned and affine lenses learn a map per layer first; the patchscopes patch the state into a target "
    "prompt and let the rest of the model read it."
)

with page("Lens", ":material/layers:", lens_view.URL_KEYS, caption=CAPTION, remote_ok=True) as selection:  # noqa: E501
    spec_key, prompt = selection.spec.key(), selection.prompt
    n_layers = selection.session.adapter.n_layers
    lens_view.reset_on_new_prompt(prompt)
    name_prompt(prompt)  # downloads carry the prompt's slug
    opts = lens_view.options(n_layers, remote=selection.session.remote)
    tokens = lens_view.prompt_tokens(spec_key, prompt)  # one forward pass per prompt (progress on long ones)
    first, last = lens_view.position_window(len(tokens))
    layers = tuple(strided_layers(n_layers, opts.stride))
    # what is on screen first: the shown layers x positions; the selected position's every layer next
    result, other = lens_view.fetch_both(spec_key, prompt, opts, tuple(range(first, last + 1)), layers)
    cell = lens_view.heatmaps(result, other, opts, n_layers, len(tokens))
    lens_view.selected_cell(spec_key, prompt, tokens, opts, cell, n_layers)
    lens_view.what_if_section(spec_key, prompt, opts, layers)
    lens_view.learned_lens_panel(spec_key, opts)

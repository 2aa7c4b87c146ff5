"""Lens: what each layer would predict, at every position of the prompt; and patching, contributions, attention and
generation on the same prompt."""

from ui.downloads import name_prompt
from ui.format import strided_layers
from ui.page import page
from ui.views import lens as lens_view
from ui.views import lens_attention, lens_contributions, lens_generation, lens_patching

CAPTION = (
    "Read the residual stream after every block as a next-token distribution: what would the model predict "
    "if it stopped here? Rows are layers (emb = embeddings, l = after block l), columns are prompt positions, "
    "each cell shows that layer's top-1 token. The logit lens uses the model's own final norm and unembedding; "
    "the tuned and affine lenses learn a map per layer first; the patchscopes patch the state into a target "
    "prompt and let the rest of the model read it."
)
URL_KEYS = (lens_view.URL_KEYS + lens_patching.URL_KEYS + lens_contributions.URL_KEYS + lens_attention.URL_KEYS
            + lens_generation.URL_KEYS)

with page("Lens", ":material/layers:", URL_KEYS, caption=CAPTION, remote_ok=True) as selection:
    spec_key, prompt = selection.spec.key(), selection.prompt
    n_layers = selection.session.adapter.n_layers
    lens_view.reset_on_new_prompt(prompt)
    name_prompt(prompt)  # downloads carry the prompt's slug
    view = lens_view.view_picker(remote=selection.session.remote)
    tokens = lens_view.prompt_tokens(spec_key, prompt)  # one forward pass per prompt (progress on long ones)
    if view == "lens":
        opts = lens_view.options(n_layers, remote=selection.session.remote)
        first, last = lens_view.position_window(len(tokens))
        layers = tuple(strided_layers(n_layers, opts.stride))
        # what is on screen first: the shown layers x positions; the selected position's every layer next
        result, other = lens_view.fetch_both(spec_key, prompt, opts, tuple(range(first, last + 1)), layers)
        cell = lens_view.heatmaps(result, other, opts, n_layers, len(tokens))
        lens_view.lens_code(spec_key, prompt, opts, layers, tuple(range(first, last + 1)))
        lens_view.selected_cell(spec_key, prompt, tokens, opts, cell, n_layers)
        lens_view.what_if_section(spec_key, prompt, opts, layers)
        lens_view.learned_lens_panel(spec_key, opts)
    elif view == "patch":
        lens_patching.patching_view(spec_key, prompt)
    elif view == "gen":
        lens_generation.generation_view(spec_key, prompt, n_layers)
    else:
        cell = lens_view.cell_for_view(tokens, n_layers, layer=view == "contrib")  # Attention picks its block
        if view == "contrib":
            lens_contributions.contributions_view(spec_key, prompt, cell)
        else:
            lens_attention.attention_view(spec_key, prompt, cell)

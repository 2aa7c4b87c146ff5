"""Download files: CSV cells are scalars or JSON (never Python reprs), names carry page, model and prompt."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd

from ui.downloads import csv_text, slug


def test_csv_cells_are_scalars_or_json() -> None:
    frame = pd.DataFrame({"layer": [0, 1], "top_tokens": [[" Paris", "'quoted'"], ["a", "b"]],
                          "probs": [np.array([0.5, 0.25]), np.array([0.1, 0.2])], "note": ["x", None]})
    back = pd.read_csv(io.StringIO(csv_text(frame)))
    assert json.loads(back.top_tokens[0]) == [" Paris", "'quoted'"]  # JSON, parsed back exactly
    assert json.loads(back.probs[1]) == [0.1, 0.2]
    assert back.layer.tolist() == [0, 1] and back.note[0] == "x"
    assert "[' Paris'" not in csv_text(frame)  # no Python list repr


def test_slugs_are_file_name_safe() -> None:
    assert slug("The capital of France is  Paris, and more words") == "the-capital-of-france-is"
    assert slug("HuggingFaceTB/SmolLM2-135M", 3) == "huggingfacetb-smollm2-135m"
    assert slug("  ") == "x" and slug("∆∆") == "x"


def test_file_names_carry_page_model_and_prompt() -> None:
    from ui.downloads import file_stem, name_prompt, set_context

    set_context("Top-k order", "HuggingFaceTB/SmolLM2-360M,dtype=bfloat16")
    assert file_stem("saturation") == "layerscope_top-k-order_smollm2-360m_saturation"
    set_context("Lens", "bundled")
    name_prompt("The capital of France is")
    assert file_stem("lens_heatmap") == "layerscope_lens_bundled_the-capital-of-france-is_lens_heatmap"
    name_prompt("Another prompt")  # a new prompt replaces the old slug
    assert file_stem("x") == "layerscope_lens_bundled_another-prompt_x"

"""Attention -> MLP results for RESULTS.md: the quick preset end to end on a tiny model, as verdict rows."""

from __future__ import annotations

from core.analyses.attention_mlp.params import PRESETS, preset_block_list, preset_blocks
from core.analyses.attention_mlp.pipeline import preset_config
from core.analyses.attention_mlp.results import claims


def test_paper_blocks_scale_three_of_twelve() -> None:
    assert preset_blocks(12, 3) == [10, 11, 12]  # GPT-2 small's 0-based layers 9-11
    assert preset_blocks(30, 3) == list(range(23, 31)) and preset_block_list(PRESETS["quick"], 30) == [30]
    config = preset_config("paper", 12)
    assert (config.per_layer, config.scan.top, config.scan.keep, config.scan.max_tokens) == (20, 20, 0.8, 100)
    assert set(PRESETS) == {"quick", "paper"}


def test_quick_claims_on_a_tiny_model(make_session) -> None:
    rows = claims(make_session("llama"), "quick")
    assert [r["kind"] for r in rows].count("check") == 2
    by_claim = {r["claim"]: r for r in rows}
    explained = next(r for c, r in by_claim.items() if "better than chance" in c)
    assert explained["holds"] is None and explained["evidence"].startswith("not run")
    linear = next(r for c, r in by_claim.items() if c.startswith("attributions of all heads"))
    assert linear["holds"] is True, linear["evidence"]
    assert all(r["verdict"] in ("holds", "does not hold", "cannot tell at this n", "cannot tell yet") for r in rows)

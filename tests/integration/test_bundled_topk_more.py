"""Topk more on the bundled model, end to end (integration tier)."""

from __future__ import annotations

import pytest

from core.analyses.topk import intervention as ti
from core.analyses.topk.intervention import (
    InterventionConfig,
    compute_intervention,
)


# -- the bundled model ---------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_intervention_on_the_bundled_model(bundled_session) -> None:
    config = InterventionConfig.for_depth(bundled_session.adapter.n_layers).replace(max_pairs_per_text=3,
                                                                                    max_tokens=96)
    texts = ti.intervention_texts(1, 0)
    frames = compute_intervention(bundled_session, texts, 0, config)
    pairs, offsets = frames["pairs"], frames["offsets"]
    assert len(pairs) >= 11 and offsets.skipped.sum() == 0  # L = 30: every offset of -5..5 fits
    # e >= 7: min_sat 6 (a 0-based block index, the paper's 10 of 48 scaled) is layer 7 (was e >= 6 before the
    # relabelling); the gap is a difference, the same in both numberings
    assert (pairs.e >= 7).all() and (pairs.s_late - pairs.e >= 6).all()
    before = offsets.loc[offsets.offset < 0, "share"].mean()
    after = offsets.loc[offsets.offset >= 0, "share"].mean()
    assert after > before  # the paper's picture: implanting a saturated state moves the saturation there

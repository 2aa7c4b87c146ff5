"""Activation patching on the bundled SmolLM2-135M: where "Eiffel Tower" -> " Paris" lives.

Clean "The Eiffel Tower is in the city of" vs corrupted "The Colosseum is in the city of": both 9 tokens (' E',
'iffel', ' Tower' against ' Col', 'osse', 'um' at positions 1-3), metric logit(' Paris') - logit(' Rome') at the
last position. Measured on this model (float32, CPU): clean +2.86, corrupted -8.70; residual patching effects (0 =
nothing restored, 1 = the clean value): layer 0 (embeddings) at positions 1-3: 0.24, 0.79, 0.43; layer 12 at the
subject's 'iffel' 0.82 while the last position is -0.04; from layer 24 on the subject positions hold ~0.00 and the
last position 0.75-0.81 (the information has moved to where the next token is predicted); layer 30 at the last
position 1.00. The assertions keep wide margins around these numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.analyses.patching import grid_snippet, patch_cells, patch_lens, patching_grid, resolve_metric
from core.model.session import ModelSession

pytestmark = pytest.mark.integration

CLEAN = "The Eiffel Tower is in the city of"
CORRUPT = "The Colosseum is in the city of"
LAYERS = [0, 12, 24, 30]
SUBJECT = [1, 2, 3]
LAST = 8


@pytest.fixture(scope="module")
def metric(bundled_session: ModelSession):
    return resolve_metric(bundled_session, "logit_diff", " Paris", " Rome")


@pytest.fixture(scope="module")
def grid(bundled_session: ModelSession, metric):
    return patching_grid(bundled_session, CLEAN, CORRUPT, metric, layers=LAYERS)


def _effects(grid, layer: int) -> pd.Series:
    rows = grid.frame[grid.frame.layer == layer]
    return pd.Series(rows.effect.to_numpy(), index=rows.position.to_numpy())


def test_the_pair_tokenises_position_for_position(bundled_session: ModelSession) -> None:
    clean = bundled_session.token_strings(bundled_session.tokenize(CLEAN))
    corrupt = bundled_session.token_strings(bundled_session.tokenize(CORRUPT))
    assert len(clean) == len(corrupt) == 9
    assert [p for p in range(9) if clean[p] != corrupt[p]] == SUBJECT


def test_clean_prefers_paris_and_corrupted_rome(grid) -> None:
    assert grid.clean_value > 1.0 and grid.corrupt_value < -4.0
    assert grid.notes == ()


def test_the_last_layer_restores_exactly_at_the_last_position(grid) -> None:
    last = _effects(grid, 30)
    assert last[LAST] == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(last.drop(LAST), 0.0, atol=1e-4)  # the logits read the last position only


def test_the_subject_carries_the_effect_early_and_the_last_position_late(grid) -> None:
    emb = _effects(grid, 0)
    assert emb[SUBJECT].max() > 0.5 and emb[SUBJECT].sum() > 1.0
    assert abs(emb[LAST]) < 0.05  # ' of' in both prompts
    middle = _effects(grid, 12)
    assert middle[SUBJECT].max() > 0.5 and abs(middle[LAST]) < 0.2
    late = _effects(grid, 24)
    assert late[LAST] > 0.5 and late[SUBJECT].abs().max() < 0.1


def test_batched_cells_match_one_pass_per_cell(bundled_session: ModelSession, metric, grid) -> None:
    cells = [(0, 2), (12, 2), (24, LAST)]
    reference = patch_cells(bundled_session, CLEAN, CORRUPT, metric, "resid", cells)
    frame = grid.frame.set_index(["layer", "position"])
    np.testing.assert_allclose([frame.value[c] for c in cells], reference, rtol=0, atol=1e-3)


def test_the_grid_skips_blocks_and_matches_the_full_blocks_grid(bundled_session: ModelSession, metric,
                                                                 monkeypatch) -> None:
    """The bundled Llama model starts each batched pass at its first changed block; every site agrees with the
    grid that runs every block (float32: rounding only)."""
    from core.analyses import patching

    cells = dict(layers=[1, 12, 29, 30], positions=[0, 2, LAST], batch_size=5)
    skipping = {site: patching_grid(bundled_session, CLEAN, CORRUPT, metric, site=site, **cells)
                for site in patching.PATCH_SITES}
    monkeypatch.setattr(patching, "starts_at_block", lambda _session: False)
    for site, fast in skipping.items():
        full = patching_grid(bundled_session, CLEAN, CORRUPT, metric, site=site, **cells)
        assert fast.skips_blocks and not full.skips_blocks
        np.testing.assert_allclose(fast.frame.value, full.frame.value, rtol=0, atol=1e-3)


def test_the_snippet_reproduces_a_grid(bundled_session: ModelSession, metric, monkeypatch) -> None:
    code = grid_snippet("bundled", CLEAN, CORRUPT, "logit_diff", " Paris", " Rome", site="mlp_out", layers=[1, 30],
                        positions=[2, LAST])
    monkeypatch.setattr(ModelSession, "load", classmethod(lambda cls, spec, progress=None: bundled_session))
    namespace: dict = {}
    exec(compile(code, "<snippet>", "exec"), namespace)  # noqa: S102 - our own generated code
    direct = patching_grid(bundled_session, CLEAN, CORRUPT, metric, site="mlp_out", layers=[1, 30],
                           positions=[2, LAST])
    pd.testing.assert_frame_equal(namespace["result"].frame, direct.frame)


def test_patch_lens_carries_the_subject_into_another_prompt(bundled_session: ModelSession) -> None:
    """The residual of the last subject token of the Eiffel prompt at layer 12, patched into the Colosseum prompt at
    its last subject token: nothing outside the cone moves, and the last position leans towards Paris."""
    result = patch_lens(bundled_session, CLEAN, CORRUPT, source_cell=(12, 3), target_cell=(12, 3),
                        targets=[" Paris"], layers=[0, 12, 24, 30])
    frame = result.frame
    assert not frame[~frame.in_cone].changed.any()
    last = frame[(frame.layer == 30) & (frame.position == LAST)].iloc[0]
    assert last.delta_target_prob > 0

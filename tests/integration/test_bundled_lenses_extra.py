"""Lenses extra on the bundled model, end to end (integration tier)."""

from __future__ import annotations

import numpy as np
import pytest

from core.lenses.training import TrainingConfig


@pytest.mark.integration
def test_trained_lens_beats_the_logit_lens_on_heldout_text(bundled_session) -> None:
    """Issue 3's acceptance on the bundled model, with a reduced budget (the full one is ~4 min).

    Held-out paragraphs come from the lens-training tenth of the corpus but are never trained on.
    """
    from core.lenses.training import train_lenses, training_split

    cfg = TrainingConfig(n_train_tokens=3072, kl_seconds=15.0, n_eval_texts=3, eval_seq_len=96)
    train, held = training_split(cfg)
    assert not set(train) & set(held)
    trained = train_lenses(bundled_session, train, held, cfg)
    kl = {name: np.asarray(values) for name, values in trained.report["heldout_kl"].items()}
    assert kl["logit"].shape == (31,) and kl["logit"][-1] == pytest.approx(0, abs=1e-4)
    assert (kl["tuned"][:-1] < kl["logit"][:-1]).all(), kl
    assert (kl["affine"][:-1] < kl["logit"][:-1]).all(), kl
    assert trained.report["kl_steps"] >= 1

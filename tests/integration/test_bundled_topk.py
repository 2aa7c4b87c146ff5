"""Topk on the bundled model, end to end (integration tier)."""

from __future__ import annotations

import pytest


# -- the bundled model (integration) ---------------------------------------------------------------------------------
@pytest.mark.integration
def test_every_text_section_runs_on_the_bundled_model(bundled_session) -> None:
    from core.analyses.topk.params import TopkParams
    from core.analyses.topk.sections import compute_section

    # the same settings as tests/app/test_app_topk.py, so the two share the per-text disk cache
    params = TopkParams(n=5, k=4, n_eval=2, max_tokens=40, n_perm=50, n_tasks=2, seed=3)
    sat = compute_section(bundled_session, "saturation", params)
    summary = sat["summary"].iloc[0]
    assert summary.layers == 30 and 0 < summary.fraction_kept < 1 and summary.texts == 5
    # residual layers 1..30 (block indices 0..29 before the relabelling); never 0, the embeddings
    assert sat["saturation"].saturation_layer.between(1, 30).all()
    assert summary.max_top1_layer == int(0.85 * 30) + 1  # the paper's s_0 <= int(0.85·L), 0-based, as a layer
    assert sat["rank_order"]["mean_order"].iloc[0] < sat["rank_order"]["mean_order"].iloc[1]  # rank 1 settles first
    assert 0 < summary.perm_p <= 1 and summary.mean_tau > summary.perm_mean_tau
    probing = compute_section(bundled_session, "probing", params)
    table = probing["summary"].query("task == -1 and metric == 'balanced_accuracy'").set_index("source")["mean"]
    assert table["probe"] > table["chance"] == 0.5
    assert probing["per_layer"].layer.min() >= 6 and probing["dataset"].layer.min() >= 6  # the paper's 5 = layer 6
    exits = compute_section(bundled_session, "early-exit", params)["points"].set_index("method")
    # exact: same computation (both read the same records' top-1 ids: exiting at s_0 predicts the final top-1)
    assert exits.loc["oracle", "accuracy"] == exits.loc["baseline", "accuracy"]
    assert exits.loc["oracle", "speedup"] >= 1.0 and exits.loc["baseline", "speedup"] == 1.0
    lm = compute_section(bundled_session, "better-lm", params)
    assert lm["groups"]["positions"].sum() <= lm["test"]["top1_wrong"].iloc[0]

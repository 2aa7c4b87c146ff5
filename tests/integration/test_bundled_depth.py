"""Depth on the bundled model, end to end (integration tier)."""

from __future__ import annotations

import numpy as np
import pytest


# -- the bundled model -------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_every_section_on_the_bundled_model(bundled_session) -> None:
    from core.analyses.depth.pos import pos_section
    from core.analyses.depth.sections import compute_section
    from core.analyses.depth.verdicts import verdicts
    from core.lenses.logit import LogitLens

    session, lens = bundled_session, LogitLens(bundled_session.adapter)
    n_layers = session.adapter.n_layers
    results = {name: compute_section(session, lens, name, n, seed=0)
               for name, n in (("facts", 3), ("options", 1), ("frequency", 3))}
    rows, counts = pos_section(session, lens, 1, seed=0, max_tries=3)
    results["pos"] = {"rows": rows, "counts": counts}

    for name, frame in [("pos", rows), ("facts", results["facts"]["rows"])]:
        last = frame[frame.layer == n_layers]
        # exact: same computation (the last layer's readout is the model's output logits tensor and the
        # prediction is its argmax)
        assert (last["rank"] == 1).all(), name  # rank of the model's own (correct) prediction
        assert frame.groupby(["example"] + (["tag"] if name == "pos" else ["token_num"])).size().eq(n_layers + 1).all()
    assert set(counts.columns) == {"tag", "kept", "tried"} and (counts.kept <= 1).all()
    assert {"answer_len", "token_num", "example", "layer", "rank", "prob"} <= set(results["facts"]["rows"].columns)
    curves = results["facts"]["curves"]
    assert list(curves.columns) == ["group", "k", "mean_layer", "std_layer", "n"]

    options = results["options"]
    assert len(options["rows"]) == (2 + 4) * (n_layers + 1)
    assert len(options["summary"]) == 2
    assert options["summary"].decision_rel.between(0, 1).all()
    freq = results["frequency"]
    last = freq["rows"][freq["rows"].layer == n_layers]
    # exact: same computation (the last layer's guess and the final prediction are the argmax of one tensor)
    assert (last.guess == last.final).all()
    assert freq["flips"].set_index("layer").loc[n_layers, "flip_rate"].max() == 0.0
    assert np.allclose(freq["shares"].groupby("column").share.sum(), 1.0)
    assert len(verdicts(results)) == 5

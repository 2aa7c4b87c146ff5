"""Attention mlp on the bundled model, end to end (integration tier)."""

from __future__ import annotations

import numpy as np
import pytest

from core.analyses.attention_mlp import neurons as amlp
from core.analyses.attention_mlp import prompts as amlp_prompts
from core.analyses.attention_mlp.heads import (
    decompose,
    neuron_input,
)
from core.analyses.attention_mlp.passes import content_ids, neuron_preacts
from core.analyses.attention_mlp.pipeline import HeadParams, compute_heads


@pytest.mark.integration
def test_bundled_decomposition_and_pipeline(bundled_session) -> None:
    session = bundled_session
    ids = content_ids(session, "The cat sat on the mat because it was tired and")
    actual = neuron_preacts(session, ids, 27)[-1]  # block index 27 = block 28
    for neuron in (5, 900):
        dec = decompose(session, ids, neuron_input(session, 27, neuron))
        assert dec.preact == pytest.approx(float(actual[neuron]), rel=1e-3, abs=1e-3)
    neurons = amlp.next_token_neurons(session, [28], per_layer=1)  # block 28, 1-based (was [27], 0-based)
    assert neurons.token.str.startswith(" ").all() and (neurons.congruence > 0).all()
    # the page's reference text quotes block 28 neuron 1263 ' right' (congruence 23.3; the next is 18.9)
    assert neurons[["block", "neuron", "token"]].values.tolist() == [[28, 1263, " right"]]
    assert neurons.congruence.iloc[0] == pytest.approx(23.3, abs=0.05)
    from core.data import corpus_texts, evaluation_texts

    texts = evaluation_texts(corpus_texts("wikipedia"))[:2]
    prompts = amlp_prompts.compute_prompts(session, neurons, texts, amlp_prompts.ScanParams(window=48, top=4))
    assert len(prompts) >= 4 and (prompts.kept_fraction > 0.8).all()
    results = compute_heads(session, prompts.head(4), HeadParams())
    assert len(results["attributions"]) == 4 * 27 * session.adapter.n_heads  # the heads of blocks 1..27
    assert set(results["attributions"].head_block) == set(range(1, 28)) and set(results["terms"].block) == {28}
    terms = results["terms"]
    assert np.allclose(terms["preact"], terms["resid_dot"] / terms["scale"], rtol=1e-5)

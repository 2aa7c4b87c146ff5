"""Topics on the bundled model, end to end (integration tier)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.analyses.topics.neuron import TopicParams


# -- bundled model ------------------------------------------------------------------------------------
@pytest.mark.integration
def test_bundled_neuron_topics_end_to_end(bundled_session, capsys: pytest.CaptureFixture) -> None:
    from core.analyses.topics.cached_runs import prepare, unit_result
    from core.analyses.topics.corpus import npmi_matrix as npmi
    from core.cli.main import main

    params = TopicParams(time_limit=20)
    ref = prepare(bundled_session, params)
    assert ref.counts.n_words > 400_000 and ref.wmap.scheme.startswith("byte-level")
    result = unit_result(bundled_session, ref, "hi-c", 13, 5, params)  # block 13, 1-based (was block index 12)
    summary = result.summary.set_index("polarity")
    assert summary.pool_size.between(50, params.tau).all()
    assert (result.pools.groupby("polarity").word.nunique().reindex(summary.index) == summary.pool_size).all()
    sets = result.sets
    assert len(sets) == summary.n_sets.sum() >= 1
    ix = ref.counts.index()
    for row in sets.itertuples():
        assert params.size_limits[0] <= row.size <= params.size_limits[1]
        words = row.topic.split()
        assert len(words) == params.k and set(words) <= set(row.words.split())
        m = npmi(ref.counts, np.array([ix[w] for w in words]), params.min_freq)
        assert row.coherence == pytest.approx(m[np.triu_indices(len(words), 1)].mean())
    for pol, group in sets.groupby("polarity"):
        all_words = " ".join(group.words).split()
        assert len(all_words) == len(set(all_words))  # disjoint sets
    assert main(["topics", "--layer", "13", "--neuron", "5", "--time-limit", "20", "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    # exact: the CLI reads the result cached above: --layer 13 is the analysis's block 13
    assert [r["topic"] for r in printed] == sets.topic.tolist()
    assert main(["topics", "--layer", "31", "--neuron", "5"]) == 2


@pytest.mark.integration
def test_compare_prints_the_pages_verdicts(bundled_session, capsys: pytest.CaptureFixture) -> None:
    """``topics --compare N --table verdicts``: the page's real-vs-random verdicts, each with its n and wording."""
    from core.analyses.topics.cached_runs import compare_random, prepare
    from core.analyses.topics.verdicts import compare_verdicts
    from core.cli.main import main

    params = TopicParams()
    assert main(["topics", "--layer", "13", "--compare", "3", "--table", "verdicts", "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    frames = compare_random(bundled_session, prepare(bundled_session, params), "hi-c", 13, 3, 0, params)
    expected = compare_verdicts(frames, params.size_limits, params.k)  # what the page shows for the same run
    assert [(r["claim"], r["verdict"], r["n"]) for r in printed] == [(r["claim"], r["verdict"], r["n"])
                                                                     for r in expected]
    assert [r["kind"] for r in printed] == ["finding"] * 3 + ["check"] * 2

"""Neuron topics verdicts on constructed numbers (holds / does not hold / cannot tell), the presets, the pruned
graph and the charts' axes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.analyses.topics import verdicts as tv
from core.analyses.topics.params import PRESETS, TopicParams, preset_params

WORDS = [f"w{i}" for i in range(60)]


def _rows(real_sets: list[int], random_sets: list[int]) -> pd.DataFrame:
    """Compare rows: each neuron's sets all in its pos pool, none in its neg pool."""
    rows = []
    for source, values in (("real", real_sets), ("random", random_sets)):
        for unit, n in enumerate(values):
            rows += [{"unit": unit, "source": source, "polarity": "pos", "pool_size": 300, "n_sets": n,
                      "mean_coherence": np.nan},
                     {"unit": unit, "source": source, "polarity": "neg", "pool_size": 300, "n_sets": 0,
                      "mean_coherence": np.nan}]
    return pd.DataFrame(rows)


def _topics(real: list[float], random: list[float]) -> pd.DataFrame:
    """One topic per neuron with the given coherence."""
    rows = []
    for source, values in (("real", real), ("random", random)):
        for unit, c in enumerate(values):
            rows.append({"unit": unit, "source": source, "polarity": "pos", "set": 1, "coherence": c,
                         "status": "optimal", "topic": " ".join(WORDS[:10]), "pairs_mean": c, "size": 12,
                         "words": " ".join(WORDS[:12])})
    return pd.DataFrame(rows)


def _neurons(real_sets, random_sets, real_npmi=None, random_npmi=None) -> pd.DataFrame:
    return tv.per_neuron(_rows(real_sets, random_sets), _topics(real_npmi or [], random_npmi or []))


def test_word_sets_verdict_holds_fails_and_cannot_tell() -> None:
    held = tv.word_sets_verdict(_neurons([3, 4, 2, 5, 3, 4] * 5, [0] * 30))
    assert held["holds"] is True and held["verdict"] == "holds" and held["n"] == 60
    assert "95 % CI" in held["evidence"] and "Mann-Whitney U = " in held["evidence"]
    failed = tv.word_sets_verdict(_neurons([0] * 30, [2, 3, 1, 2, 4, 2] * 5))
    assert failed["holds"] is False and failed["verdict"] == "does not hold"
    unsure = tv.word_sets_verdict(_neurons([0, 0, 1, 0], [0, 0, 0, 0]))
    assert unsure["holds"] is None and unsure["verdict"] == "cannot tell at this n"
    same = tv.word_sets_verdict(_neurons([0] * 5, [0] * 5))
    assert "no Mann-Whitney test: every value is 0" in same["evidence"] and "nan" not in same["evidence"]


def test_npmi_verdict_holds_fails_cannot_tell_and_says_an_empty_group_in_words() -> None:
    rng = np.random.default_rng(0)
    real, random = list(0.2 + 0.02 * rng.standard_normal(20)), list(0.05 + 0.02 * rng.standard_normal(20))
    held = tv.npmi_verdict(_neurons([1] * 20, [1] * 20, real, random))
    assert held["holds"] is True and held["n"] == 40
    failed = tv.npmi_verdict(_neurons([1] * 20, [1] * 20, random, real))
    assert failed["holds"] is False
    unsure = tv.npmi_verdict(_neurons([1] * 3, [1] * 3, [0.1, -0.1, 0.05], [0.0, 0.08, -0.05]))
    assert unsure["holds"] is None and unsure["verdict"] == "cannot tell at this n"
    empty = tv.npmi_verdict(_neurons([1] * 5, [0] * 5, [0.1] * 5, []))
    assert empty["holds"] is None and "the random baselines gave no topic" in empty["evidence"]
    assert "nan" not in empty["evidence"].lower().replace("nannan", "")


def test_any_set_verdict_on_wilson_intervals() -> None:
    held = tv.any_set_verdict(_neurons([1] * 30 + [0] * 10, [0] * 40))
    assert held["holds"] is True and "Wilson" in held["evidence"] and "30 of 40" in held["evidence"]
    failed = tv.any_set_verdict(_neurons([0] * 40, [1] * 30 + [0] * 10))
    assert failed["holds"] is False
    unsure = tv.any_set_verdict(_neurons([1, 0, 0, 0], [0, 0, 0, 0]))
    assert unsure["holds"] is None and unsure["verdict"] == "cannot tell at this n"


def test_score_check_holds_fails_and_waits() -> None:
    topics = _topics([0.1, 0.2], [0.05])
    held = tv.score_check(topics, 10)
    assert held["kind"] == "check" and held["holds"] is True and "3 of 3" in held["evidence"]
    off = topics.assign(pairs_mean=topics.coherence + 0.01)
    assert tv.score_check(off, 10)["holds"] is False
    assert tv.score_check(topics, 9)["holds"] is False  # 10 words, not 9
    waiting = tv.score_check(topics.iloc[0:0], 10)
    assert waiting["holds"] is None and waiting["kind"] == "check"


def test_star_sets_check_holds_fails_and_waits() -> None:
    sets = pd.DataFrame({"unit": [0, 0, 1], "source": "real", "polarity": "pos", "topic": "",
                         "words": [" ".join(WORDS[:12]), " ".join(WORDS[12:24]), " ".join(WORDS[:12])]})
    held = tv.star_sets_check(sets, (10, 24))
    assert held["holds"] is True and held["kind"] == "check"  # unit 1 may reuse unit 0's words: another pool
    shared = sets.assign(unit=0)
    assert tv.star_sets_check(shared, (10, 24))["holds"] is False  # one pool, a word in two sets
    assert tv.star_sets_check(sets, (13, 24))["holds"] is False  # sizes below κ_l
    outside = sets.assign(topic=["w50"] + [""] * 2)
    assert tv.star_sets_check(outside, (10, 24))["holds"] is False  # the topic is not inside its set
    assert tv.star_sets_check(sets.iloc[0:0], (10, 24))["holds"] is None


def test_scan_check_and_share() -> None:
    scan = pd.DataFrame({"unit": [0, 1, 2], "pos_pool": [300, 25, 0], "neg_pool": [200, 40, 10],
                         "pos_sets": [3, 2, 0], "neg_sets": [1, 0, 0]})
    scan["n_sets"] = scan.pos_sets + scan.neg_sets
    assert tv.scan_check(scan, (10, 24))["holds"] is True
    assert tv.scan_check(scan, (13, 24))["holds"] is False  # 2 sets of >= 13 words cannot fit a pool of 25
    assert tv.scan_check(scan.iloc[0:0], (10, 24))["holds"] is None
    assert tv.scan_share(scan).startswith("2 of 3 units (67%, 95 % CI")


def test_compare_verdicts_order_and_kinds() -> None:
    frames = {"rows": _rows([2, 3, 1], [0, 0, 0]), "topics": _topics([0.1, 0.2, 0.15], [])}
    rows = tv.compare_verdicts(frames, (10, 24), 10, "; context")
    assert [r["kind"] for r in rows] == ["finding"] * 3 + ["check"] * 2
    assert all(r["evidence"].endswith("; context") for r in rows[:3])
    assert all(set(r) >= {"claim", "holds", "verdict", "evidence", "n"} for r in rows)


def test_presets_are_valid_parameters() -> None:
    assert set(PRESETS) == {"quick", "paper"}
    paper = preset_params("paper")
    assert paper.tau == 900 and paper.thresholds == (0.1, 1.0) and paper.size_limits == (10, 24)
    assert PRESETS["paper"]["window"] == 10 and PRESETS["paper"]["compare_n"] > PRESETS["quick"]["compare_n"]
    assert isinstance(preset_params("quick"), TopicParams)
    with pytest.raises(ValueError, match="Unknown preset"):
        preset_params("slow")


def test_graph_is_pruned_to_the_cap_with_set_edges_first() -> None:
    from ui.charts.topics import prune_edges

    rng = np.random.default_rng(1)
    a, b = np.triu_indices(60, 1)
    set_of = np.r_[np.repeat([1, 2], 12), np.zeros(36, int)]
    edges = pd.DataFrame({"polarity": "pos", "a": np.array(WORDS)[a], "b": np.array(WORDS)[b],
                          "npmi": rng.uniform(0.1, 0.6, len(a)), "set_a": set_of[a], "set_b": set_of[b]})
    kept = prune_edges(edges, cap=150)
    assert len(kept) == 150 < len(edges)
    set_words = set(np.array(WORDS)[set_of > 0])
    within = kept[(kept.set_a == kept.set_b) & (kept.set_a > 0)]
    assert set(within.a) | set(within.b) == set_words  # every set word keeps an edge inside its set
    assert set(kept.a) | set(kept.b) == set(WORDS)  # every word keeps its strongest edge
    assert prune_edges(edges.head(20)).shape[0] == 20  # few edges: all kept


def test_charts_have_legends_and_whole_number_axes() -> None:
    from ui.charts.topics import comparison_chart, graph_chart, graph_frames, prune_edges

    a, b = np.triu_indices(14, 1)
    set_of = np.r_[np.ones(11, int), np.zeros(3, int)]
    edges = pd.DataFrame({"polarity": "pos", "a": np.array(WORDS)[a], "b": np.array(WORDS)[b],
                          "npmi": np.linspace(0.1, 0.5, len(a)), "set_a": set_of[a], "set_b": set_of[b]})
    nodes, lines = graph_frames(prune_edges(edges), {1: "set 1 (w0)"})
    spec = graph_chart(nodes, lines).to_dict()
    point = spec["layer"][1]["encoding"]
    assert point["color"]["legend"]["title"] == "star set (centre word)"
    assert point["color"]["scale"]["domain"] == ["set 1 (w0)", "no set"]
    neurons = _neurons([0, 0, 0], [0, 0, 0])  # all zero: the axis must not go fractional
    spec = comparison_chart(neurons).to_dict()
    y = spec["hconcat"][0]["encoding"]["y"]
    assert y["axis"]["format"] == "d" and y["scale"]["domain"] == [0, 3]
    assert spec["hconcat"][1]["encoding"]["x"]["axis"]["format"] == ".3~f"

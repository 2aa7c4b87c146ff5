"""Depth analysis (guess-then-refine): the definitions on constructed numbers, then every section on the
bundled model (integration)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from core.analyses.depth.facts import teacher_force
from core.analyses.depth.frequency import BUCKETS, bucket_shares, flip_rates, frequency_buckets
from core.analyses.depth.options import option_layers
from core.analyses.depth.pos import pos_candidates
from core.analyses.depth.readout import earliest_layer, earliest_layer_curves, k_grid, ranks_from_probs
from core.analyses.depth.verdicts import facts_verdict, flip_verdict, frequency_verdict, options_verdict, pos_verdict


# -- earliest layer ---------------------------------------------------------------------------------------
def test_k_grid_is_the_papers_log_grid_clipped_to_the_vocab() -> None:
    grid = k_grid(50_000)
    assert grid[0] == 1 and grid[-1] in (10_000, 10_001)
    assert np.all(np.diff(grid) > 0) and len(grid) < 200
    assert set(range(1, 11)) <= set(grid.tolist())  # dense at the bottom after int truncation
    assert k_grid(300).max() <= 300


def test_earliest_layer_is_the_first_hit_even_if_the_rank_rises_again() -> None:
    ranks = np.array([900, 4, 60, 30, 1])  # dips to 4 at layer 1, rises, reaches 1 at the end
    assert earliest_layer(ranks, 1) == 4
    assert earliest_layer(ranks, 5) == 1  # not required to stay <= 5
    assert earliest_layer(ranks, 1000) == 0
    assert math.isnan(earliest_layer(np.array([5, 3, 2]), 1))


def test_curves_average_first_hits_per_group() -> None:
    rows = pd.DataFrame({
        "tag": ["A"] * 6 + ["B"] * 3,
        "example": [0, 0, 0, 1, 1, 1, 0, 0, 0],
        "layer": [0, 1, 2] * 3,
        "rank": [50, 1, 1, 3, 9, 1, 70, 20, 1],
    })
    curves = earliest_layer_curves(rows, "tag", vocab=100).set_index(["group", "k"])
    assert curves.loc[("A", 1), "mean_layer"] == pytest.approx(1.5)  # first hits 1 and 2
    assert curves.loc[("A", 3), "mean_layer"] == pytest.approx(0.5)  # 1 and 0
    assert curves.loc[("A", 1), "std_layer"] == pytest.approx(0.5)
    assert curves.loc[("B", 20), "mean_layer"] == pytest.approx(1.0)
    assert curves.loc[("B", 1), "n"] == 1
    assert list(curves.reset_index().columns) == ["group", "k", "mean_layer", "std_layer", "n"]


def test_ranks_count_strictly_higher_probabilities() -> None:
    probs = torch.tensor([[0.4, 0.4, 0.2], [0.1, 0.3, 0.6]])  # [layer, vocab]
    ranks, p = ranks_from_probs(probs, torch.tensor([1, 2]))
    assert ranks.tolist() == [[1, 3], [2, 1]]  # a tie does not push the rank down
    assert p[1, 1].item() == pytest.approx(0.6)


# -- frequency buckets and flips ----------------------------------------------------------------------------
def test_frequency_buckets_by_rank_with_unseen_tokens_in_rest() -> None:
    counts = np.zeros(2000, dtype=np.int64)
    counts[:1500] = np.arange(1500, 0, -1)  # id 0 most frequent ... id 1499 least; ids >= 1500 unseen
    counts[5] = counts[4]  # a tie: broken by id
    buckets = frequency_buckets(counts)
    assert buckets[0] == "Top-10" and buckets[9] == "Top-10" and buckets[10] == "Top-100"
    assert buckets[100] == "Top-1000" and buckets[999] == "Top-1000" and buckets[1000] == "Rest"
    assert buckets[1999] == "Rest"
    assert (buckets == "Top-10").sum() == 10 and (buckets == "Top-100").sum() == 90


def test_frequency_buckets_never_put_unseen_tokens_on_top() -> None:
    assert list(frequency_buckets(np.array([0, 3, 0]))) == ["Rest", "Top-10", "Rest"]


def _freq_rows() -> pd.DataFrame:
    # 3 examples x 2 layers; final prediction is token 7 (Top-10) for all
    return pd.DataFrame({
        "example": [0, 0, 1, 1, 2, 2], "layer": [0, 1] * 3,
        "guess": [3, 7, 3, 7, 9, 7], "bucket": ["Top-10", "Top-10", "Top-10", "Top-10", "Rest", "Top-10"],
        "final": 7, "final_bucket": "Top-10",
    })


def test_flip_rate_is_the_share_of_layer_guesses_that_differ_from_the_final() -> None:
    flips = flip_rates(_freq_rows()).set_index(["layer", "bucket"])
    assert flips.loc[(0, "Top-10"), "flip_rate"] == 1.0 and flips.loc[(0, "Top-10"), "n"] == 2
    assert flips.loc[(0, "Rest"), "flip_rate"] == 1.0
    assert flips.loc[(1, "Top-10"), "flip_rate"] == 0.0 and flips.loc[(1, "Top-10"), "n"] == 3


def test_bucket_shares_cover_every_bucket_and_the_final_column() -> None:
    shares = bucket_shares(_freq_rows())
    assert set(shares.column) == {"0", "1", "final"}
    assert len(shares) == 3 * len(BUCKETS)
    by = shares.set_index(["column", "bucket"]).share
    assert by[("0", "Top-10")] == pytest.approx(2 / 3) and by[("0", "Rest")] == pytest.approx(1 / 3)
    assert by[("final", "Top-10")] == 1.0 and by[("0", "Top-100")] == 0.0
    assert np.allclose(shares.groupby("column").share.sum(), 1.0)


# -- options -----------------------------------------------------------------------------------------------
def test_option_identification_and_decision_layers() -> None:
    ranks = np.array([[900, 40], [2, 5], [1, 2], [2, 1], [1, 2], [2, 1]])  # [layer, option]
    probs = np.array([[.0, .0], [.3, .1], [.5, .4], [.2, .6], [.5, .3], [.1, .7]])
    identify, decision, choice = option_layers(ranks, probs)
    assert identify == 2  # first layer with both options in the top 2
    assert choice == 1
    assert decision == 5  # option 1 wins at 3, loses at 4, wins from 5 on
    _, decision, _ = option_layers(ranks[:4], probs[:4])
    assert decision == 3


def test_option_identification_is_nan_when_never_reached() -> None:
    identify, decision, choice = option_layers(np.array([[10, 3], [5, 4]]), np.array([[.1, .2], [.3, .2]]))
    assert math.isnan(identify) and choice == 0 and decision == 1


# -- teacher forcing ----------------------------------------------------------------------------------------
class _FakeModel:
    """step(ids) -> the scripted greedy token for that prefix length; records every prefix it saw."""

    def __init__(self, script: list[int]) -> None:
        self.script, self.seen = script, []

    def __call__(self, ids: list[int]) -> SimpleNamespace:
        self.seen.append(list(ids))
        return SimpleNamespace(final_id=self.script[len(self.seen) - 1])


def test_teacher_forcing_records_only_correct_tokens_and_appends_gold_after_a_miss() -> None:
    fake = _FakeModel([11, 99, 13])  # right, wrong, right
    recorded = teacher_force([1, 2], [11, 12, 13], set(), fake)
    assert [num for num, _ in recorded] == [0, 2]
    assert fake.seen == [[1, 2], [1, 2, 11], [1, 2, 11, 12]]  # the gold 12 is forced in after the miss


def test_teacher_forcing_accepts_the_spaceless_first_token_and_appends_the_models_token() -> None:
    fake = _FakeModel([50, 12])
    recorded = teacher_force([1], [11, 12], {50}, fake)
    assert [num for num, _ in recorded] == [0, 1]
    assert fake.seen == [[1], [1, 50]]


def test_teacher_forcing_stops_a_wrong_single_token_answer_and_continues_longer_ones() -> None:
    assert teacher_force([1], [11], set(), _FakeModel([99])) == []
    fake = _FakeModel([99, 12])
    assert [num for num, _ in teacher_force([1], [11, 12], set(), fake)] == [1]
    assert fake.seen[1] == [1, 11]


# -- POS prompts ----------------------------------------------------------------------------------------------
def test_pos_prompt_is_the_space_joined_tokens_before_the_first_tag() -> None:
    from spacy.tokens import Doc
    from spacy.vocab import Vocab

    words = ["Anarchism", "is", "a", "political", "philosophy", ",", "and", "the", "movement"]
    pos = ["PROPN", "AUX", "DET", "ADJ", "NOUN", "PUNCT", "CCONJ", "DET", "NOUN"]
    doc = Doc(Vocab(), words=words, pos=pos)
    found = pos_candidates(doc, ("DET", "NOUN", "PUNCT", "VERB"))
    assert "DET" not in found  # "Anarchism is" is shorter than 17 characters
    assert found["NOUN"] == ("Anarchism is a political", "philosophy")
    assert found["PUNCT"] == ("Anarchism is a political philosophy", ",")
    assert "VERB" not in found
    span = doc[2:]  # a sentence that does not start the doc
    assert pos_candidates(span, ("PUNCT",))["PUNCT"] == ("a political philosophy", ",")


# -- verdicts ---------------------------------------------------------------------------------------------------
def _rank_rows(group_col: str, first_hits: dict, n_layers: int = 4) -> pd.DataFrame:
    rows = []
    for example, (group, hit) in enumerate(first_hits):
        for layer in range(n_layers + 1):
            rows.append({group_col: group, "example": example, "layer": layer, "rank": 1 if layer >= hit else 50})
    return pd.DataFrame(rows)


def test_pos_verdict_compares_function_and_content_words() -> None:
    early = _rank_rows("tag", [("DET", 1), ("ADP", 2), ("NOUN", 3), ("VERB", 4)] * 10)
    verdict = pos_verdict(early)
    assert verdict["holds"] is True and verdict["verdict"] == "holds" and verdict["n"] == 40
    assert "95 % CI" in verdict["evidence"] and "1.50 over 20" in verdict["evidence"]  # function words: (1 + 2) / 2
    late = _rank_rows("tag", [("DET", 4), ("NOUN", 1)] * 10)
    assert pos_verdict(late)["verdict"] == "does not hold"
    few = _rank_rows("tag", [("DET", 1), ("NOUN", 3), ("DET", 4), ("NOUN", 2)])  # 2 each, overlapping
    assert pos_verdict(few)["verdict"] == "cannot tell at this n"
    assert pos_verdict(_rank_rows("tag", [("DET", 1)]))["holds"] is None
    assert pos_verdict(None)["holds"] is None


def test_facts_verdict_needs_the_first_token_to_come_last() -> None:
    rows = _rank_rows("token_num", [(1, 4), (2, 1), (1, 3), (2, 2)] * 10).assign(answer_len=2)
    verdict = facts_verdict(rows)
    assert verdict["holds"] is True and "token 1 3.5" in verdict["evidence"]
    assert facts_verdict(_rank_rows("token_num", [(1, 1), (2, 3)] * 10).assign(answer_len=2))["holds"] is False
    few = _rank_rows("token_num", [(1, 4), (2, 1), (1, 1), (2, 3)]).assign(answer_len=2)
    assert facts_verdict(few)["verdict"] == "cannot tell at this n"
    assert facts_verdict(_rank_rows("token_num", [(1, 1)]).assign(answer_len=1))["holds"] is None


def _flip_rows(changed: int, n: int) -> pd.DataFrame:
    """n prefixes over layers 0..2; ``changed`` of them have a layer-1 pick the final layer changes."""
    rows = []
    for example in range(n):
        guess1 = 1 if example < changed else 7
        rows += [{"example": example, "layer": layer, "guess": g, "final": 7} for layer, g in enumerate([1, guess1, 7])]
    return pd.DataFrame(rows)


def test_options_flip_and_frequency_verdicts() -> None:
    summary = pd.DataFrame({"identify_rel": [0.2, 0.3, np.nan] * 10, "decision_rel": [0.7, 0.9, 0.8] * 10})
    assert options_verdict(summary)["holds"] is True
    assert options_verdict(summary.assign(decision_rel=0.3))["holds"] is False
    assert options_verdict(summary.head(3).assign(identify_rel=[0.2, 0.7, np.nan]))["holds"] is None
    # the flip rate is judged on its Wilson interval against the paper's 60-80 % band
    inside = flip_verdict(_flip_rows(700, 1000))
    assert inside["holds"] is True and "700 of 1000" in inside["evidence"]
    everything = flip_verdict(_flip_rows(200, 200))  # 100 %: above the band, and the verdict says so
    assert everything["verdict"] == "does not hold" and "above the paper's band" in everything["evidence"]
    assert flip_verdict(_flip_rows(10, 10))["verdict"] == "cannot tell at this n"  # 100 % of 10: CI reaches 72 %
    half = flip_verdict(_flip_rows(1, 2))
    assert half["holds"] is None and "1 of 2" in half["evidence"]
    shares = pd.DataFrame({"column": ["1", "1", "final", "final"], "bucket": ["Top-10", "Rest"] * 2,
                           "share": [0.8, 0.2, 0.3, 0.7], "count": [160, 40, 60, 140]})
    assert frequency_verdict(shares)["holds"] is True
    assert frequency_verdict(shares.assign(count=[80, 120, 60, 140]))["holds"] is False
    assert frequency_verdict(shares.assign(count=[4, 1, 2, 3]))["holds"] is None

"""Attention -> MLP verdicts on constructed numbers: each claim once holding, once not, once undecided at its n."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from core.analyses.attention_mlp.verdicts import (
    PARTS,
    ablation_verdict,
    context_heads_verdict,
    explanation_verdict,
    linearity_check,
    trimming_check,
    verdicts,
)

HOLDS, NOT, UNSURE = "holds", "does not hold", "cannot tell at this n"


def _heads(with_context: int, without: int) -> pd.DataFrame:
    """Two heads per neuron; a neuron 'with' has its second head context-dependent under both rules."""
    rows = []
    for i in range(with_context + without):
        for head in range(2):
            flag = head == 1 and i < with_context
            rows.append({"block": 3, "neuron": i, "head_block": 1, "head": head, "context_top3": flag,
                         "context_sigma2": flag})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("k, n, word", [(38, 40, HOLDS), (2, 40, NOT), (3, 5, UNSURE)])
def test_context_heads_share(k: int, n: int, word: str) -> None:
    row = context_heads_verdict(_heads(k, n - k), "top3")
    assert row["verdict"] == word and row["n"] == n
    assert f"{k} of {n} neurons" in row["evidence"] and "95 % CI" in row["evidence"]
    assert "top-3 heads by attribution" in row["claim"]


def _ablation(active: np.ndarray, inactive: np.ndarray) -> pd.DataFrame:
    drops = np.concatenate([active, inactive])
    flags = np.array([True] * len(active) + [False] * len(inactive))
    return pd.DataFrame({"drop": drops, "active_top3": flags, "active_sigma2": flags})


@pytest.mark.parametrize("shift, n, word", [(0.01, 200, HOLDS), (-0.01, 200, NOT), (0.0005, 6, UNSURE)])
def test_ablation_difference(shift: float, n: int, word: str) -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0.001, 0.002, size=(2, n))
    row = ablation_verdict(_ablation(base[0] + shift, base[1]), "sigma2")
    assert row["verdict"] == word and row["n"] == 2 * n
    assert f"{n} active and {n} inactive" in row["evidence"] and "KS D =" in row["evidence"]
    assert "95 % CI" in row["evidence"] and "mean + 2σ" in row["claim"]


def _terms(gap: float, n: int = 5) -> pd.DataFrame:
    frame = pd.DataFrame({part: np.linspace(0.5, 1.5, n) for part in PARTS})
    frame["resid_dot"] = frame[list(PARTS)].sum(axis=1) + gap
    return frame


@pytest.mark.parametrize("gap, word", [(0.0, HOLDS), (1.0, NOT)])
def test_linearity_is_a_check(gap: float, word: str) -> None:
    row = linearity_check(_terms(gap))
    assert row["kind"] == "check" and row["verdict"] == word and row["n"] == 5


def test_linearity_without_data_cannot_tell() -> None:
    row = linearity_check(None)
    assert row["kind"] == "check" and row["holds"] is None and row["verdict"] == "cannot tell yet"


@pytest.mark.parametrize("scores, word", [([0.7, 0.75, 0.8, 0.65, 0.7, 0.72] * 5, HOLDS),
                                          ([0.3, 0.35, 0.4, 0.45, 0.3, 0.38] * 5, NOT),
                                          ([0.9, 0.2, 0.6], UNSURE)])
def test_explanation_score_against_chance(scores: list[float], word: str) -> None:
    row = explanation_verdict(scores)
    assert row["verdict"] == word and row["n"] == len(scores)


def test_explanation_not_run() -> None:
    row = explanation_verdict(None)
    assert row["holds"] is None and row["evidence"].startswith("not run")


def test_trimming_check() -> None:
    good = pd.DataFrame({"kept_fraction": [0.81, 0.9, 1.0]})
    assert trimming_check(good, 0.8)["verdict"] == HOLDS
    assert trimming_check(pd.DataFrame({"kept_fraction": [0.5, 0.9]}), 0.8)["verdict"] == NOT


def test_all_rows_state_n_and_no_nan() -> None:
    summary = {"heads": _heads(30, 10), "ablation": _ablation(np.full(20, 0.02), np.full(20, 0.001)),
               "terms": _terms(0.0), "prompts": pd.DataFrame({"kept_fraction": [0.9] * 4})}
    rows = verdicts(summary)
    assert len(rows) == 7
    for row in rows:
        assert not re.search(r"\bnan\b", row["evidence"].lower())
        assert "n = " in row["evidence"] or row["evidence"].startswith("not run")
    empty = verdicts({})
    assert all(r["holds"] is None for r in empty)

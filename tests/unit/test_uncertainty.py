"""Intervals and verdict wording (core.analyses.uncertainty), on constructed numbers."""

from __future__ import annotations

import math

import pytest

from core.analyses.uncertainty import Verdict, bootstrap_mean, wilson


def test_wilson_matches_known_values() -> None:
    # Wilson 95 % for 8/10: 0.490 to 0.943 (Newcombe 1998, table I style check; computed by hand)
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    assert wilson(0, 0) == (0.0, 1.0)


def test_bootstrap_interval_covers_the_mean_and_is_reproducible() -> None:
    values = [0.0, 1.0] * 50
    mean, low, high = bootstrap_mean(values)
    assert mean == 0.5 and low < 0.5 < high and high - low < 0.25
    assert bootstrap_mean(values) == (mean, low, high)
    assert all(math.isnan(x) for x in bootstrap_mean([0.3])[1:])


@pytest.mark.parametrize(("low", "high", "wording"), [(0.1, 0.3, "holds"), (-0.3, -0.1, "does not hold"),
                                                      (-0.1, 0.2, "cannot tell at this n"),
                                                      (-0.2, 0.0, "does not hold")])
def test_verdict_wording_follows_the_interval(low: float, high: float, wording: str) -> None:
    verdict = Verdict("x beats y", (low + high) / 2, low, high, n=30)
    assert verdict.wording == wording
    assert f"{low:.3f} to {high:.3f}" in verdict.interval_text() and "n = 30" in verdict.interval_text()


def test_a_claim_below_a_threshold() -> None:
    assert Verdict("error below 5 %", 0.02, 0.01, 0.03, n=100, threshold=0.05, above=False).holds is True
    assert Verdict("error below 5 %", 0.06, 0.04, 0.08, n=100, threshold=0.05, above=False).holds is None
    assert Verdict("no interval", 0.5, float("nan"), float("nan"), n=1).wording == "cannot tell at this n"

"""Intervals and verdicts that carry their uncertainty (torch-free).

A verdict is computed from the same numbers it prints: an estimate, its 95 % interval and n. It says "holds" only
when the whole interval lies on the claim's side of the threshold, "does not hold" when the whole interval lies on the
other side (or on the threshold), and "cannot tell at this n" when the interval straddles it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

Z95 = 1.959963984540054
BOOTSTRAP = 2000
"""Bootstrap resamples of a mean's percentile interval."""


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n (95 % by default); (0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (0.0 if k <= 0 else max(0.0, centre - half)), (1.0 if k >= n else min(1.0, centre + half))


def bootstrap_mean(values: Sequence[float], seed: int = 0, n_boot: int = BOOTSTRAP) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` and its 95 % percentile-bootstrap interval (resampling the values;
    seeded, so the same numbers give the same interval). NaN interval for fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    if x.size < 2:
        return float(x.mean()), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(x.mean()), float(low), float(high)


@dataclass(frozen=True)
class Verdict:
    """A claim "estimate > threshold" (or < with ``above`` False) judged on a 95 % interval."""

    claim: str
    estimate: float
    low: float
    high: float
    n: int
    threshold: float = 0.0
    above: bool = True
    kind: str = "finding"  # "finding", or "check": true by construction, shown as a sanity check
    unit: str = ""
    upper: float | None = None  # a band claim: threshold <= estimate <= upper

    @property
    def holds(self) -> bool | None:
        """True / False, or None = cannot tell at this n (the interval straddles a threshold, or there is none)."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return None
        if self.upper is not None:  # within the band [threshold, upper]
            if self.threshold <= self.low and self.high <= self.upper:
                return True
            if self.high < self.threshold or self.low > self.upper:
                return False
            return None
        lo, hi = (self.low, self.high) if self.above else (-self.high, -self.low)
        t = self.threshold if self.above else -self.threshold
        if lo > t:
            return True
        if hi <= t:
            return False
        return None

    @property
    def wording(self) -> str:
        return {True: "holds", False: "does not hold", None: "cannot tell at this n"}[self.holds]

    def interval_text(self, digits: int = 3) -> str:
        """"0.120 (95 % CI 0.050 to 0.190, n = 40)"."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return f"{self.estimate:.{digits}f}{self.unit} (no interval at n = {self.n})"
        return (f"{self.estimate:.{digits}f}{self.unit} (95 % CI {self.low:.{digits}f} to {self.high:.{digits}f}, "
                f"n = {self.n})")


def bootstrap_difference(a: Sequence[float], b: Sequence[float], seed: int = 0,
                         n_boot: int = BOOTSTRAP) -> tuple[float, float, float]:
    """(mean(b) - mean(a), low, high): the difference of two independent groups' means with its 95 % percentile
    bootstrap interval (each group resampled on its own). NaN interval when a group has fewer than 2 values."""
    x, y = (np.asarray(v, dtype=float) for v in (a, b))
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size == 0 or y.size == 0:
        return float("nan"), float("nan"), float("nan")
    estimate = float(y.mean() - x.mean())
    if x.size < 2 or y.size < 2:
        return estimate, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    diffs = (y[rng.integers(0, y.size, size=(n_boot, y.size))].mean(axis=1)
             - x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1))
    low, high = np.quantile(diffs, [0.025, 0.975])
    return estimate, float(low), float(high)

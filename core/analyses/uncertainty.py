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


# -- verdict rows: the one shape every page, the CLI and RESULTS.md read ------------------------------------
VERDICT_WORDS = {True: "holds", False: "does not hold"}


def verdict_row(v: Verdict, evidence: str = "", digits: int = 3) -> dict:
    """A judged claim as a plain dict: claim, kind ("finding" / "check"), holds (True / False / None), verdict (its
    wording), evidence (the printed interval, then ``evidence``), estimate, low, high, n. The wording and ``holds``
    come from the same numbers the evidence prints."""
    text = v.interval_text(digits) + (f"; {evidence}" if evidence else "")
    return {"claim": v.claim, "kind": v.kind, "holds": v.holds, "verdict": v.wording, "evidence": text,
            "estimate": float(v.estimate), "low": float(v.low), "high": float(v.high), "n": int(v.n)}


def plain_row(claim: str, holds: bool | None, evidence: str, n: int = 0, *, estimate: float = float("nan"),
              low: float = float("nan"), high: float = float("nan"), kind: str = "finding") -> dict:
    """A verdict row whose ``holds`` the caller derived from several printed intervals (or None: no data yet).
    ``holds`` None words as "cannot tell at this n" when there was data (n > 0), else "cannot tell yet"."""
    word = VERDICT_WORDS.get(holds, "cannot tell at this n" if n else "cannot tell yet")
    return {"claim": claim, "kind": kind, "holds": holds, "verdict": word, "evidence": evidence,
            "estimate": float(estimate), "low": float(low), "high": float(high), "n": int(n)}


def proportion_verdict(claim: str, k: int, n: int, threshold: float, above: bool = True,
                       upper: float | None = None, kind: str = "finding") -> Verdict:
    """A claim about a proportion k / n judged on its Wilson interval."""
    low, high = wilson(k, n)
    return Verdict(claim, k / n if n else float("nan"), low, high, n, threshold=threshold, above=above,
                   upper=upper, kind=kind)


def mean_verdict(claim: str, values: Sequence[float], threshold: float = 0.0, above: bool = True,
                 kind: str = "finding", seed: int = 0) -> Verdict:
    """A claim about a mean judged on its percentile-bootstrap interval (n = the finite values)."""
    x = np.asarray(values, dtype=float)
    n = int(np.isfinite(x).sum())
    mean, low, high = bootstrap_mean(x, seed=seed)
    return Verdict(claim, mean, low, high, n, threshold=threshold, above=above, kind=kind)


def difference_verdict(claim: str, a: Sequence[float], b: Sequence[float], threshold: float = 0.0,
                       above: bool = True, seed: int = 0) -> Verdict:
    """A claim "mean(b) - mean(a) > threshold" judged on the bootstrap interval of the difference (n = both groups)."""
    estimate, low, high = bootstrap_difference(a, b, seed=seed)
    n = int(np.isfinite(np.asarray(a, dtype=float)).sum() + np.isfinite(np.asarray(b, dtype=float)).sum())
    return Verdict(claim, estimate, low, high, n, threshold=threshold, above=above)

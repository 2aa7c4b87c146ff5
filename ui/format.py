"""Small text helpers for showing tokens and layers."""

from __future__ import annotations

import math

from core.layers import after_block, layer_label  # noqa: F401  (the pages' labels come from the one convention)


def show_token(text: str) -> str:
    """Make whitespace visible and unambiguous: ' Paris' -> '␣Paris' (U+2423, which no token confuses with a '.' the
    way a middle dot could), newline -> '\\n', tab -> '\\t'."""
    if text == "":
        return "(empty)"
    return text.replace(" ", "␣").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def strided_layers(n_layers: int, stride: int) -> list[int]:
    """Residual layers 0..n_layers every ``stride``, always keeping the last."""
    stride = max(1, int(stride))
    layers = list(range(0, n_layers + 1, stride))
    if layers[-1] != n_layers:
        layers.append(n_layers)
    return layers


def auto_stride(n_layers: int, max_rows: int = 32) -> int:
    """The smallest stride that keeps a heatmap of layers 0..n_layers near ``max_rows`` rows (plus the last layer)."""
    return max(1, -(-(n_layers + 1) // max_rows))


def p_text(p: float | None) -> str:
    """A p-value for captions: 'n/a' when missing, two significant digits, scientific below 0.001."""
    return "n/a" if p is None or not math.isfinite(p) else f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


SYMLOG_TICKS = (0, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def symlog_ticks(values) -> list[float]:
    """Tick values for a symlog axis over ``values``: 0, 0.1, 0.2, 0.5, 1, 2, 5, ... up to the first tick above the
    largest value (Vega's own symlog ticks fall only at a few round numbers and flatten a 0-10 range). Ticks below
    half the smallest positive value are left out (0 stays), so they do not crowd the bottom and get hidden."""
    finite = [float(v) for v in values if v == v]
    top = max(finite + [0.0])
    positive = [v for v in finite if v > 0]
    floor = min(positive) / 2 if positive else 0.0
    ticks = [t for t in SYMLOG_TICKS if t <= top and (t == 0 or t >= floor)]
    above = [t for t in SYMLOG_TICKS if t > top]
    return ticks + above[:1]

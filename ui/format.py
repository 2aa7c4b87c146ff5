"""Small text helpers for showing tokens and layers."""

from __future__ import annotations

import math

from core.layers import after_block, layer_label  # noqa: F401  (the pages' labels come from the one convention)


def show_token(text: str) -> str:
    """Make whitespace visible: ' Paris' -> '·Paris', newline -> '\\n' (glyphs every font has)."""
    if text == "":
        return "(empty)"
    return text.replace(" ", "·").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


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

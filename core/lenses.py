"""Lenses: how an intermediate residual state is read out as a next-token distribution.

A lens maps the residual stream of chosen layers to vectors the model's own unembedding reads
(``[layer, pos, d_model] -> [layer, pos, d_model]``); :mod:`core.stats` then unembeds and reduces them
chunk by chunk, so no lens ever holds layers x positions x vocabulary.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch

from core.adapters import Adapter


class Lens(Protocol):
    """Reads layer states as inputs to the unembedding."""

    name: str

    def normed(self, resid: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        """[layer, pos, d_model] residual (pre-norm) of ``layers`` -> [layer, pos, d_model] for W_U."""
        ...


class LogitLens:
    """nostalgebraist's logit lens: the final norm recomputed on each layer's residual, then W_U.

    The final norm is applied to every layer, the last included, because Layerscope captures the
    residual *before* the final norm at every layer; at the last layer this is exactly the model's output.
    """

    name = "logit"

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    def normed(self, resid: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        return self.adapter.final_norm(resid)  # [layer, pos, d_model]

"""The lens protocol: how an intermediate residual state is read out as next-token logits."""

from __future__ import annotations

from typing import Protocol, Sequence

import torch

from core.model.arch import Adapter


class Lens(Protocol):
    """Reads layer states as next-token logits.

    ``batches_layers`` (optional, default False): one call reads every layer of a position, so
    :mod:`core.lenses.stats` calls it once per run of consecutive positions with all layers
    (:func:`core.lenses.reduce.lens_chunks`) instead of once per layer group.
    """

    name: str
    adapter: Adapter

    def logits(self, resid: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        """[layer, pos, d_model] residual (pre-norm) of ``layers`` -> [layer, pos, vocab] logits."""
        ...

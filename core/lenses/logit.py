"""The logit lens: the final norm recomputed on each layer's residual, then the unembedding."""

from __future__ import annotations

from typing import Sequence

import torch

from core.model.arch import Adapter


class LogitLens:
    """The final norm recomputed on each layer's residual, then the unembedding.

    Applied to every layer, the last included: Layerscope captures the residual *before* the final
    norm at every layer, so at the last layer this is exactly the model's output.
    """

    name = "logit"

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    def logits(self, resid: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        return self.adapter.unembed(self.adapter.final_norm(resid))  # [layer, pos, vocab]

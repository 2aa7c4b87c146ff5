"""Patchscopes: a layer's state patched into a target prompt, read at its last token."""

from __future__ import annotations

from typing import Sequence

import torch

from core.model.arch import Adapter
from core.model.executors import Pass
from core.model.hooks import residual_patch

IDENTITY_PROMPT = "cat -> cat\n1135 -> 1135\nhello -> hello\n?"
QUESTION_PROMPT = "?"


class Patchscope:
    """Patch a source residual into a target prompt at the same layer, last target position.

    For source layer l (0 = embeddings) the vector replaces the target's residual after block l
    (the input of block 0 for l = 0) at the last target position; the remaining blocks run and the
    model's own output at that position is the reading. All layers of one source position go through
    ONE batched forward of the target prompt (one batch row per layer).
    """

    batches_layers = True  # one call reads every layer of a position (core.lenses.stats calls it that way)

    def __init__(self, session, target_prompt: str, name: str) -> None:
        self.session = session
        self.name = name
        self.target_prompt = target_prompt
        ids = session.tokenizer(target_prompt, return_tensors="pt").input_ids[0]
        if ids.numel() == 0:
            raise ValueError("The patchscope's target prompt is empty.")
        self.target_ids = ids  # [target_pos]

    @property
    def adapter(self) -> Adapter:
        return self.session.adapter

    def logits(self, resid: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        out = [self.patch_positions(resid[:, p], layers) for p in range(resid.shape[1])]
        return torch.stack(out, dim=1)  # [layer, pos, vocab]

    def patch_positions(self, vectors: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        """[layer, d_model] source vectors -> [layer, vocab] logits at the last target position."""
        session = self.session
        batch = len(layers)
        ids = self.target_ids.to(session.device)[None].expand(batch, -1)  # [layer, target_pos]
        last = ids.shape[1] - 1
        rows_by_layer: dict[int, list[int]] = {}
        for row, layer in enumerate(layers):
            rows_by_layer.setdefault(int(layer), []).append(row)
        vectors = vectors.to(session.device, session.model.dtype)
        # residual layer l (0 = embeddings) of the rows that read layer l, at the last target position
        patches = [residual_patch(layer, vectors[rows], position=last, rows=rows)
                   for layer, rows in rows_by_layer.items()]
        return session.run(Pass(ids, patches=patches, logits=True)).logits  # [layer, vocab]


def identity_patchscope(session, target_prompt: str = IDENTITY_PROMPT) -> Patchscope:
    """Token-identity patchscope (Ghandeharioun et al. 2024)."""
    return Patchscope(session, target_prompt, "identity")


def question_patchscope(session, target_prompt: str = QUESTION_PROMPT) -> Patchscope:
    """The "?" patchscope ("logitscope", patrickhyw): the same with the one-token target prompt "?"."""
    return Patchscope(session, target_prompt, "question")

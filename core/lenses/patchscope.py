"""Patchscopes: a layer's state patched into a target prompt, read at its last token."""

from __future__ import annotations

from typing import Sequence

import torch

from core.model.arch import Adapter

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
        session, adapter = self.session, self.session.adapter
        batch = len(layers)
        ids = self.target_ids.to(session.device)[None].expand(batch, -1)  # [layer, target_pos]
        last = ids.shape[1] - 1
        rows_by_layer: dict[int, list[int]] = {}
        for row, layer in enumerate(layers):
            rows_by_layer.setdefault(int(layer), []).append(row)
        vectors = vectors.to(session.device, session.model.dtype)

        def patch(hidden: torch.Tensor, layer: int) -> torch.Tensor:
            rows = torch.tensor(rows_by_layer[layer], device=hidden.device)
            hidden = hidden.clone()
            hidden[rows, last] = vectors[rows]
            return hidden

        handles = []
        with session.lock, torch.no_grad():
            try:
                for layer in rows_by_layer:
                    if layer == 0:
                        handles.append(adapter.blocks[0].register_forward_pre_hook(
                            _pre_patcher(lambda h: patch(h, 0)), with_kwargs=True))
                    else:
                        handles.append(adapter.blocks[layer - 1].register_forward_hook(
                            _post_patcher(lambda h, layer=layer: patch(h, layer))))
                out = session.model(ids, logits_to_keep=1)
            finally:
                for handle in handles:
                    handle.remove()
        return out.logits[:, -1]  # [layer, vocab]


def _pre_patcher(edit):
    def hook(_module, args, kwargs):
        if args:
            return (edit(args[0]), *args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = edit(kwargs["hidden_states"])
        return args, kwargs
    return hook


def _post_patcher(edit):
    def hook(_module, _inputs, output):
        if isinstance(output, tuple):
            return (edit(output[0]), *output[1:])
        return edit(output)
    return hook


def identity_patchscope(session, target_prompt: str = IDENTITY_PROMPT) -> Patchscope:
    """Token-identity patchscope (Ghandeharioun et al. 2024)."""
    return Patchscope(session, target_prompt, "identity")


def question_patchscope(session, target_prompt: str = QUESTION_PROMPT) -> Patchscope:
    """The "?" patchscope ("logitscope", patrickhyw): the same with the one-token target prompt "?"."""
    return Patchscope(session, target_prompt, "question")

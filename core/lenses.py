"""Lenses: how an intermediate residual state is read out as a next-token distribution.

Every lens maps the residual stream (pre-norm, layer 0 = embeddings) of chosen layers at chosen
positions to logits, ``[layer, pos, d_model] -> [layer, pos, vocab]``; :mod:`core.stats` calls it in a fixed
pattern of layer groups x position tiles (the same shapes however the results are used) and reduces each
call's logits at once.

* ``logit``  — nostalgebraist's logit lens: the final norm recomputed on each layer, then W_U.
* ``tuned``  — Belrose et al.'s tuned lens (the ``tuned-lens`` package's ``TunedLens``): a learned
  affine translator per layer, added residually, then the logit lens (see :mod:`core.tuned`).
* ``affine`` — the Patchscopes paper's "tuned lens" baseline: a least-squares map from each layer's
  residual to the final post-norm state, read by W_U directly (see :mod:`core.tuned`).
* ``identity`` / ``question`` — token-identity and "?" patchscopes (:class:`Patchscope`).
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch

from core.adapters import Adapter

IDENTITY_PROMPT = "cat -> cat\n1135 -> 1135\nhello -> hello\n?"
QUESTION_PROMPT = "?"


class Lens(Protocol):
    """Reads layer states as next-token logits.

    ``batches_layers`` (optional, default False): one call reads every layer of a position, so
    :mod:`core.stats` calls it once per position with all layers instead of once per layer.
    """

    name: str
    adapter: Adapter

    def logits(self, resid: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        """[layer, pos, d_model] residual (pre-norm) of ``layers`` -> [layer, pos, vocab] logits."""
        ...


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


class Patchscope:
    """Patch a source residual into a target prompt at the same layer, last target position.

    For source layer l (0 = embeddings) the vector replaces the target's residual after block l
    (the input of block 0 for l = 0) at the last target position; the remaining blocks run and the
    model's own output at that position is the reading. All layers of one source position go through
    ONE batched forward of the target prompt (one batch row per layer).
    """

    batches_layers = True  # one call reads every layer of a position (core.stats calls it that way)

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

"""Forward passes the Attention -> MLP analysis needs, each capturing only what it uses.

Token ids handled here are *content* ids (no special tokens); :func:`model_input` prepends the tokenizer's
BOS exactly when the tokenizer itself would add one, so positions always index content tokens and no
off-by-one arises between scanning (with BOS) and trimming (without). Hooks are registered under the
session lock and always removed.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from core.model.session import ModelSession


class _Stop(Exception):
    """Raised by a hook once everything needed is captured, to skip the rest of the forward pass."""


def bos_prefix(session: ModelSession) -> list[int]:
    """[BOS] when the tokenizer adds one to plain text (Llama-2 style), else [] (GPT-2, SmolLM2)."""
    tok = session.tokenizer
    if tok.bos_token_id is None:
        return []
    ids = tok("a").input_ids
    return [int(tok.bos_token_id)] if ids and ids[0] == tok.bos_token_id else []


def content_ids(session: ModelSession, text: str) -> list[int]:
    """[pos] the text's token ids without special tokens."""
    return list(session.tokenizer(text, add_special_tokens=False).input_ids)


def model_input(session: ModelSession, ids: list[int]) -> tuple[torch.Tensor, int]:
    """-> ([pos] BOS prefix + ids, length of the prefix); ValueError when too long for the model."""
    prefix = bos_prefix(session)
    full = torch.tensor(prefix + list(ids), dtype=torch.long)
    if full.numel() > session.max_tokens:
        raise ValueError(f"{full.numel()} tokens; this model reads at most {session.max_tokens}.")
    return full, len(prefix)


@contextmanager
def _hooked(session: ModelSession, hooks: list) -> Iterator[None]:
    """Register (module, kind, fn) hooks under the lock; always remove them."""
    with session.lock, torch.no_grad():
        handles = []
        try:
            for module, kind, fn in hooks:
                register = module.register_forward_pre_hook if kind == "pre" else module.register_forward_hook
                handles.append(register(fn))
            yield
        finally:
            for handle in handles:
                handle.remove()


def _run(session: ModelSession, batch: torch.Tensor, hooks: list, logits: bool = False):
    with _hooked(session, hooks):
        try:
            out = session.model(batch.to(session.device), **session._skip_logits)
        except _Stop:
            return None
    return out.logits[:, -1].float().cpu() if logits else None


def neuron_acts(session: ModelSession, ids: list[int], layers: list[int]) -> dict[int, torch.Tensor]:
    """layer -> [pos, d_mlp] neuron activations (input of the down projection) at content positions.
    The pass stops after the last requested layer."""
    full, offset = model_input(session, ids)
    store: dict[int, torch.Tensor] = {}
    last = max(layers)

    def hook(layer: int):
        def fn(_module, args):
            store[layer] = args[0].reshape(-1, full.numel(), args[0].shape[-1])[0, offset:].float().cpu()
            if layer == last:
                raise _Stop
        return fn

    _run(session, full[None], [(session.adapter.neurons(l), "pre", hook(l)) for l in sorted(set(layers))])
    return store


def neuron_preacts(session: ModelSession, ids: list[int], layer: int) -> torch.Tensor:
    """[pos, d_mlp] the MLP input projection's output (W_gate x for gated MLPs, W_in x + b for GPT-2) at
    content positions, read from the real forward pass (what the linear decomposition must add up to)."""
    full, offset = model_input(session, ids)
    store: dict[str, torch.Tensor] = {}

    def fn(_module, _args, out):
        store["pre"] = out.reshape(-1, full.numel(), out.shape[-1])[0, offset:].float().cpu()
        raise _Stop

    _run(session, full[None], [(session.adapter.mlp_in_modules(layer)[0], "fwd", fn)])
    return store["pre"]


def ablated_token_probs(session: ModelSession, ids: list[int], token_id: int,
                        heads: list[tuple[int, int]]) -> tuple[float, list[float]]:
    """-> (p(token) at the last position, [p(token) with head h's z zeroed] for each (layer, head)).

    One batched pass: row 0 is clean, row i+1 zeroes head i's slice of the attention output projection's
    input (its attention-weighted values). With grouped-query attention this ablates exactly that query
    head, where zeroing the shared value head would ablate every query head of its group."""
    full, _ = model_input(session, ids)
    batch = full[None].repeat(1 + len(heads), 1)  # [1 + heads, pos]
    d_head = session.adapter.d_head
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for row, (layer, head) in enumerate(heads, 1):
        by_layer.setdefault(layer, []).append((row, head))

    def hook(rows: list[tuple[int, int]]):
        def fn(_module, args):
            z = args[0].clone()  # [batch, pos, head*d_head]
            for row, head in rows:
                z[row, :, head * d_head:(head + 1) * d_head] = 0
            return (z,) + tuple(args[1:])
        return fn

    hooks = [(session.adapter.attn_out(layer), "pre", hook(rows)) for layer, rows in by_layer.items()]
    logits = _run(session, batch, hooks, logits=True)  # [1 + heads, vocab]
    probs = torch.softmax(logits, dim=-1)[:, token_id]
    return float(probs[0]), [float(p) for p in probs[1:]]

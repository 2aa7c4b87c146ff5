"""Forward passes the Attention -> MLP analysis needs, each capturing only what it uses.

Token ids handled here are *content* ids (no special tokens); :func:`model_input` prepends the tokenizer's
BOS exactly when the tokenizer itself would add one, so positions always index content tokens and no
off-by-one arises between scanning (with BOS) and trimming (without). Every pass runs its hook requests through
:meth:`core.model.session.ModelSession.hooks` (under the session lock, always removed).
"""

from __future__ import annotations

from typing import Sequence

import torch

from core.model.executors import Pass
from core.model.hooks import Capture, Captured, Patch
from core.model.session import ModelSession


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


def _forward(session: ModelSession, batch: torch.Tensor, captures: Sequence[Capture] = (),
             patches: Sequence[Patch] = (), stop_early: bool = False) -> tuple[Captured, torch.Tensor | None]:
    """One pass of [batch, pos] ids with these requests -> (the captures, [batch, vocab] last-position logits).

    The logits are None when ``stop_early`` cut the pass short after the last capture."""
    out = session.run(Pass(batch, captures=tuple(captures), patches=tuple(patches), stop_early=stop_early,
                           logits=not stop_early))
    return out.captured, None if out.logits is None else out.logits.cpu()


def neuron_acts(session: ModelSession, ids: list[int], layers: list[int]) -> dict[int, torch.Tensor]:
    """layer -> [pos, d_mlp] neuron activations (input of the down projection) at content positions.
    The pass stops after the last requested layer."""
    full, offset = model_input(session, ids)
    blocks = tuple(sorted(set(layers)))
    got, _ = _forward(session, full[None], [Capture("mlp_act", blocks, row=0)], stop_early=True)
    return {layer: got.get("mlp_act", layer)[offset:] for layer in blocks}


def neuron_preacts(session: ModelSession, ids: list[int], layer: int) -> torch.Tensor:
    """[pos, d_mlp] the MLP input projection's output (W_gate x for gated MLPs, W_in x + b for GPT-2) at
    content positions, read from the real forward pass (what the linear decomposition must add up to)."""
    full, offset = model_input(session, ids)
    got, _ = _forward(session, full[None], [Capture("mlp_pre", (layer,), row=0)], stop_early=True)
    return got.get("mlp_pre", layer)[offset:]


def ablated_token_probs(session: ModelSession, ids: list[int], token_id: int,
                        heads: list[tuple[int, int]]) -> tuple[float, list[float]]:
    """-> (p(token) at the last position, [p(token) with head h's z zeroed] for each (layer, head)).

    One batched pass: row 0 is clean, row i+1 zeroes head i's slice of the attention output projection's
    input (its attention-weighted values). With grouped-query attention this ablates exactly that query
    head, where zeroing the shared value head would ablate every query head of its group."""
    full, _ = model_input(session, ids)
    batch = full[None].repeat(1 + len(heads), 1)  # [1 + heads, pos]
    # zero head h's slice of the attention output projection's input, in every position of row i+1
    patches = [Patch("attn_z", layer, 0.0, rows=(row,), head=head) for row, (layer, head) in enumerate(heads, 1)]
    _, logits = _forward(session, batch, patches=patches)  # [1 + heads, vocab]
    probs = torch.softmax(logits, dim=-1)[:, token_id]
    return float(probs[0]), [float(p) for p in probs[1:]]

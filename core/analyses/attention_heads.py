"""Attention at one cell: each head's attention row for the selected position in one block, what each source
contributes through the head (value-weighted, Kobayashi et al. 2020), and each head's write and direct logit
attribution.

Blocks are 1-based (block l writes residual layer l, :mod:`core.layers`). For block l and position p:

    attention[h, j]       alpha[h, p, j], the head's attention weights (each row sums to 1)
    value_weighted[h, j]  alpha[h, p, j] * ||v_j^h W_O^h||  (the norm of what source j adds through head h)
    head write            o_h = sum_j alpha[h, p, j] v_j^h W_O^h = z[p, h] W_O^h  (what the head adds at p)
    DLA                   o_h read through the final norm frozen at the *last layer's* residual at p, then the
                          unembedding (:mod:`core.analyses.contributions`): the head's direct share of the model's
                          real logit of the target there.

One forward pass with the eager attention kernel (the kernel that returns attention weights; the model's own kernel
is restored after it). The model hands back every block's weights; only block l's row p is kept, with block l's
attention input (site "attn_in") for the value vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core.analyses.contributions import (FROZEN_NOTE, _ids, check_layer, check_position, check_post_norm,
                                         frozen_readout, lens_logits, token_id_of)
from core.model.arch import Adapter
from core.model.executors import Pass
from core.model.hooks import Capture
from core.model.session import ModelSession

ROW_COLUMNS = ["block", "head", "position", "source_position", "source_token", "attention", "value_weighted",
               "value_weighted_share"]
HEAD_COLUMNS = ["block", "head", "label", "write_norm", "dla", "top_source", "top_attention"]


@dataclass(frozen=True)
class HeadAttention:
    """Block ``block``'s heads at ``position``.

    frame  one row per (head, source position <= position): :data:`ROW_COLUMNS` (value_weighted_share: the
           value-weighted row normalised to sum 1 per head)
    heads  one row per head: :data:`HEAD_COLUMNS` (write_norm = ||o_h||, dla to the target, the most attended
           source and its weight)
    """

    block: int
    position: int
    tokens: tuple[str, ...]
    target_id: int
    target: str
    frame: pd.DataFrame
    heads: pd.DataFrame
    note: str = FROZEN_NOTE.replace("the actual residual's value", "the last layer's residual at this position")


def head_source_vectors(adapter: Adapter, block_index: int, attn_in: torch.Tensor, alpha_row: torch.Tensor
                        ) -> torch.Tensor:
    """[head, source, d_model] alpha[h, p, j] v_j^h W_O^h for one target position: ``attn_in`` [pos, d_model] is block
    ``block_index``'s (0-based) attention input, ``alpha_row`` [head, source] its attention row at that position.
    Summed over sources: each head's write at the position (no output bias)."""
    values = adapter.head_values(block_index, attn_in)  # [pos, head, d_head]
    w_o = adapter.head_out_weight(block_index).detach().float().cpu()  # [head, d_head, d_model]
    n_src = alpha_row.shape[-1]
    return torch.einsum("hj,jhd,hdm->hjm", alpha_row.float(), values[:n_src], w_o)


def attention_at(session: ModelSession, prompt: str | torch.Tensor, layer: int, position: int,
                 target: str | int | None = None) -> HeadAttention:
    """Each head of block ``layer`` (1-based: the block writing residual layer ``layer``) at ``position`` (negative
    from the end): attention row, value-weighted row, write norm and DLA to ``target`` (text or id; default: the
    model's final top-1 at the position). ValueError for bad input, before the pass."""
    adapter = session.adapter
    check_post_norm(adapter)
    session.require_local("The attention view")
    n = adapter.n_layers
    block = check_layer(layer, n, lowest=1)
    ids = _ids(session, prompt)
    position = check_position(position, ids.numel())
    target_id = token_id_of(session, target)
    b = block - 1
    ids = ids[: position + 1]  # later positions do not change this row (causal attention)
    captures = (Capture("attn_in", (b,), row=0), Capture("resid_post", (n - 1,), position=position, row=0))
    out = session.run(Pass(ids[None], captures=captures, attentions=True))
    alpha = out.attentions[b][0, :, position, : position + 1]  # [head, source]
    final = out.captured.get("resid_post", n - 1).float()
    if target_id is None:
        target_id = int(lens_logits(adapter, final).argmax())
    vectors = head_source_vectors(adapter, b, out.captured.get("attn_in", b), alpha)  # [head, src, d_model]
    weighted = vectors.norm(dim=-1)  # alpha * ||v W_O|| (alpha >= 0)
    share = weighted / weighted.sum(-1, keepdim=True).clamp_min(1e-30)
    writes = vectors.sum(1)  # [head, d_model]
    dla = (writes @ frozen_readout(adapter, final).direction(target_id)).numpy().astype(float)
    vocab = session.vocab_strings()
    tokens = tuple(vocab[int(i)] for i in ids)
    n_heads, n_src = alpha.shape
    heads = np.repeat(np.arange(n_heads), n_src)
    sources = np.tile(np.arange(n_src), n_heads)
    frame = pd.DataFrame({"block": block, "head": heads, "position": position, "source_position": sources,
                          "source_token": [tokens[j] for j in sources],
                          "attention": alpha.reshape(-1).numpy().astype(float),
                          "value_weighted": weighted.reshape(-1).numpy().astype(float),
                          "value_weighted_share": share.reshape(-1).numpy().astype(float)})
    top = alpha.argmax(-1).numpy()
    head_frame = pd.DataFrame({"block": block, "head": np.arange(n_heads),
                               "label": [f"B{block}H{h}" for h in range(n_heads)],
                               "write_norm": writes.norm(dim=-1).numpy().astype(float), "dla": dla,
                               "top_source": top, "top_attention": alpha.max(-1).values.numpy().astype(float)})
    return HeadAttention(block=block, position=position, tokens=tokens, target_id=target_id,
                         target=vocab[target_id], frame=frame, heads=head_frame)

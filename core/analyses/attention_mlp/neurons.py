"""Attention -> MLP (Neo, Cohen & Barez 2024), part 1a: next-token neurons by congruence with the unembedding.

Blocks follow the app's convention (core/layers.py): every frame's ``block`` column and every ``blocks`` argument
is 1-based (block l writes residual layer l): a neuron that a 0-based text (the paper, TransformerLens) calls
"layer 26 neuron 1263" is block 27 neuron 1263 here. Functions that index weights take a 0-based ``block_index``
and say so.
"""

from __future__ import annotations

import random

import pandas as pd
import torch

from core.analyses.attention_mlp.params import DEFAULT_PER_LAYER
from core.analyses.attention_mlp.prompts import DEFAULT_REJECT
from core.layers import block_of_layer, layers_of_blocks
from core.model.arch import Adapter, _linear_weight_in_out, module_weight
from core.model.session import ModelSession

VERSION = "3"  # 3: frames carry 1-based ``block`` / ``head_block`` columns (were 0-based ``layer`` / ``head_layer``)
_CHUNK = 256  # neurons per block of the congruence product
NEURON_COLUMNS = ["block", "neuron", "token_id", "token", "congruence", "rank", "kind"]


def default_blocks(n_layers: int) -> list[int]:
    """The last few blocks, 1-based: 3 for models up to 24 blocks, else 4 (GPT-2 small: 10-12, the paper's
    0-based 9-11; a 30-block model: 27-30)."""
    k = min(n_layers, 3 if n_layers <= 24 else 4)
    return layers_of_blocks(range(n_layers - k, n_layers))


def check_blocks(session: ModelSession, blocks: list[int]) -> list[int]:
    """Sorted unique 1-based blocks; ValueError when one is not a block of the model (1..L)."""
    n = session.adapter.n_layers
    if not blocks:
        raise ValueError("Choose at least one block.")
    bad = [int(block) for block in blocks if not 1 <= int(block) <= n]
    if bad:
        raise ValueError(f"Blocks {bad} are outside this model's blocks 1..{n} (1-based: block l writes layer l; "
                         "0 is the embeddings).")
    return sorted({int(block) for block in blocks})


def uses_layernorm(adapter: Adapter) -> bool:
    """True when the model's norms centre (LayerNorm: GPT-2, NeoX, GPT-J, OPT); False for RMSNorm (Llama family).
    Read from the architecture record (:class:`core.model.arch.Architecture`): all norms of a model are one kind."""
    return adapter.layernorm


def processed_unembedding(session: ModelSession) -> torch.Tensor:
    """[d_model, vocab]: W_U with the final norm's gain folded in, centred over the vocabulary.

    The final norm's bias (LayerNorm) folds into the unembedding *bias*, which adds the same vector to every
    neuron's row of C and so cannot change congruence; it is left out.
    """
    adapter = session.adapter
    w_u = adapter.unembed_weight().detach().float().T  # [d_final, vocab] (real values also when offloaded)
    if adapter.final_proj is not None:  # OPT's project_out: d_model -> d_final

        w_u = _linear_weight_in_out(adapter.final_proj).detach().float() @ w_u  # [d_model, vocab]
    if getattr(adapter.final_norm_module, "weight", None) is not None:
        gain = module_weight(adapter.final_norm_module).detach().float().to(w_u.device)  # [d_final]
        w_u = gain[:, None] * w_u
    return w_u - w_u.mean(dim=1, keepdim=True)


def processed_out_directions(session: ModelSession, block_index: int) -> torch.Tensor:
    """[d_mlp, d_model]: output directions of the MLP neurons of 0-based block ``block_index``, centred over
    d_model only when the model's norms centre."""
    w_out = session.adapter.neuron_out_weight(block_index).detach().float()
    if uses_layernorm(session.adapter):
        w_out = w_out - w_out.mean(dim=1, keepdim=True)
    return w_out


def congruence_top(session: ModelSession, block_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based block index -> ([d_mlp] max_t C[n, t], [d_mlp] argmax_t), C = W_out · W_U computed in chunks of
    neurons."""
    w_u = processed_unembedding(session)  # [d_model, vocab]
    w_out = processed_out_directions(session, block_index)  # [d_mlp, d_model]
    values, tokens = [], []
    for start in range(0, w_out.shape[0], _CHUNK):
        block = w_out[start:start + _CHUNK] @ w_u  # [chunk, vocab]
        top = block.max(dim=1)
        values.append(top.values)
        tokens.append(top.indices)
    return torch.cat(values), torch.cat(tokens)


def space_marker(session: ModelSession) -> str:
    """The tokenizer's word-start marker: 'Ġ' (byte-level BPE) or '▁' (SentencePiece); ' ' otherwise."""
    vocab = session.tokenizer.get_vocab()
    counts = {m: sum(tok.startswith(m) for tok in vocab) for m in ("Ġ", "▁", " ")}
    return max(counts, key=counts.get)


def passes_filter(raw: str, text: str, marker: str, reject: frozenset[str]) -> bool:
    """The paper's filter: starts with the space marker, >= 2 characters after it, not on the reject list
    (compared without surrounding spaces, so ' foo' and 'foo' both reject the token ' foo')."""
    stripped = {r.strip() for r in reject}
    return raw.startswith(marker) and len(raw) - len(marker) >= 2 and text.strip() not in stripped


def next_token_neurons(session: ModelSession, blocks: list[int], per_layer: int = DEFAULT_PER_LAYER,
                       reject: frozenset[str] = DEFAULT_REJECT) -> pd.DataFrame:
    """Tidy [neuron] table: block (1-based), neuron, token_id, token, congruence, rank (by congruence in its
    block), kind.

    Per block, neurons sorted by congruence descending, kept while their top token passes the filter, until
    ``per_layer`` are found.
    """
    if per_layer < 1:
        raise ValueError("Neurons per block must be at least 1.")
    blocks = check_blocks(session, blocks)
    marker, vocab = space_marker(session), session.vocab_strings()
    raw_tokens = session.tokenizer.convert_ids_to_tokens(list(range(len(vocab))))
    rows = []
    for block in blocks:
        values, tokens = congruence_top(session, block_of_layer(block))
        order = torch.argsort(values, descending=True).tolist()
        kept = 0
        for rank, neuron in enumerate(order, 1):
            tok = int(tokens[neuron])
            raw = raw_tokens[tok] if tok < len(raw_tokens) and raw_tokens[tok] else ""
            if not passes_filter(raw, vocab[tok], marker, reject):
                continue
            rows.append({"block": block, "neuron": neuron, "token_id": tok, "token": vocab[tok],
                         "congruence": float(values[neuron]), "rank": rank, "kind": "next-token"})
            kept += 1
            if kept == per_layer:
                break
    return pd.DataFrame(rows, columns=NEURON_COLUMNS)


def random_neurons(session: ModelSession, blocks: list[int], per_layer: int = DEFAULT_PER_LAYER,
                   seed: int = 0) -> pd.DataFrame:
    """The paper's control: neurons drawn uniformly per block (1-based), whatever their top token; same columns."""
    blocks = check_blocks(session, blocks)
    rng, vocab = random.Random(seed), session.vocab_strings()
    rows = []
    for block in blocks:
        values, tokens = congruence_top(session, block_of_layer(block))
        rank = torch.empty_like(values, dtype=torch.long)
        rank[torch.argsort(values, descending=True)] = torch.arange(1, values.numel() + 1)
        for neuron in sorted(rng.sample(range(values.numel()), min(per_layer, values.numel()))):
            tok = int(tokens[neuron])
            rows.append({"block": block, "neuron": neuron, "token_id": tok, "token": vocab[tok],
                         "congruence": float(values[neuron]), "rank": int(rank[neuron]), "kind": "random"})
    return pd.DataFrame(rows, columns=NEURON_COLUMNS)

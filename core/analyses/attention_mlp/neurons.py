"""Attention -> MLP (Neo, Cohen & Barez 2024), part 1a: next-token neurons by congruence with the unembedding."""

from __future__ import annotations

import random

import pandas as pd
import torch
from torch import nn

from core.analyses.attention_mlp.prompts import DEFAULT_REJECT
from core.model.session import ModelSession

VERSION = "2"
DEFAULT_PER_LAYER = 20
_CHUNK = 256  # neurons per block of the congruence product


def default_layers(n_layers: int) -> list[int]:
    """The last few blocks (0-based): 3 for models up to 24 layers, else 4 (GPT-2 small: 9-11; 30: 26-29)."""
    k = min(n_layers, 3 if n_layers <= 24 else 4)
    return list(range(n_layers - k, n_layers))


def check_layers(session: ModelSession, layers: list[int]) -> list[int]:
    """Sorted unique 0-based block indices; ValueError when one is outside the model."""
    n = session.adapter.n_layers
    if not layers:
        raise ValueError("Choose at least one layer.")
    bad = [layer for layer in layers if not 0 <= int(layer) < n]
    if bad:
        raise ValueError(f"Layers {bad} are outside this model's blocks 0..{n - 1}.")
    return sorted({int(layer) for layer in layers})


def uses_layernorm(norm: nn.Module) -> bool:
    """True for a centring LayerNorm (GPT-2, NeoX, GPT-J, OPT); False for RMSNorm (Llama family)."""
    name = type(norm).__name__.lower()
    return isinstance(norm, nn.LayerNorm) or ("layernorm" in name and "rms" not in name)


def processed_unembedding(session: ModelSession) -> torch.Tensor:
    """[d_model, vocab]: W_U with the final norm's gain folded in, centred over the vocabulary.

    The final norm's bias (LayerNorm) folds into the unembedding *bias*, which adds the same vector to every
    neuron's row of C and so cannot change congruence; it is left out.
    """
    adapter = session.adapter
    w_u = adapter.unembed_module.weight.detach().float().T  # [d_final, vocab]
    if adapter.final_proj is not None:  # OPT's project_out: d_model -> d_final
        from core.model.arch import _linear_weight_in_out

        w_u = _linear_weight_in_out(adapter.final_proj).detach().float() @ w_u  # [d_model, vocab]
    gain = getattr(adapter.final_norm_module, "weight", None)
    if gain is not None:
        w_u = gain.detach().float()[:, None] * w_u
    return w_u - w_u.mean(dim=1, keepdim=True)


def processed_out_directions(session: ModelSession, layer: int) -> torch.Tensor:
    """[d_mlp, d_model]: neuron output directions, centred over d_model only when the model's norms centre."""
    w_out = session.adapter.neuron_out_weight(layer).detach().float()
    if uses_layernorm(session.adapter.final_norm_module):
        w_out = w_out - w_out.mean(dim=1, keepdim=True)
    return w_out


def congruence_top(session: ModelSession, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> ([d_mlp] max_t C[n, t], [d_mlp] argmax_t), C = W_out · W_U computed in blocks of neurons."""
    w_u = processed_unembedding(session)  # [d_model, vocab]
    w_out = processed_out_directions(session, layer)  # [d_mlp, d_model]
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


def next_token_neurons(session: ModelSession, layers: list[int], per_layer: int = DEFAULT_PER_LAYER,
                       reject: frozenset[str] = DEFAULT_REJECT) -> pd.DataFrame:
    """Tidy [neuron] table: layer, neuron, token_id, token, congruence, rank (by congruence in its layer).

    Per layer, neurons sorted by congruence descending, kept while their top token passes the filter, until
    ``per_layer`` are found.
    """
    if per_layer < 1:
        raise ValueError("Neurons per layer must be at least 1.")
    layers = check_layers(session, layers)
    marker, vocab = space_marker(session), session.vocab_strings()
    raw_tokens = session.tokenizer.convert_ids_to_tokens(list(range(len(vocab))))
    rows = []
    for layer in layers:
        values, tokens = congruence_top(session, layer)
        order = torch.argsort(values, descending=True).tolist()
        kept = 0
        for rank, neuron in enumerate(order, 1):
            tok = int(tokens[neuron])
            raw = raw_tokens[tok] if tok < len(raw_tokens) and raw_tokens[tok] else ""
            if not passes_filter(raw, vocab[tok], marker, reject):
                continue
            rows.append({"layer": layer, "neuron": neuron, "token_id": tok, "token": vocab[tok],
                         "congruence": float(values[neuron]), "rank": rank, "kind": "next-token"})
            kept += 1
            if kept == per_layer:
                break
    return pd.DataFrame(rows, columns=["layer", "neuron", "token_id", "token", "congruence", "rank", "kind"])


def random_neurons(session: ModelSession, layers: list[int], per_layer: int = DEFAULT_PER_LAYER,
                   seed: int = 0) -> pd.DataFrame:
    """The paper's control: neurons drawn uniformly per layer, whatever their top token; same columns."""
    layers = check_layers(session, layers)
    rng, vocab = random.Random(seed), session.vocab_strings()
    rows = []
    for layer in layers:
        values, tokens = congruence_top(session, layer)
        rank = torch.empty_like(values, dtype=torch.long)
        rank[torch.argsort(values, descending=True)] = torch.arange(1, values.numel() + 1)
        for neuron in sorted(rng.sample(range(values.numel()), min(per_layer, values.numel()))):
            tok = int(tokens[neuron])
            rows.append({"layer": layer, "neuron": neuron, "token_id": tok, "token": vocab[tok],
                         "congruence": float(values[neuron]), "rank": int(rank[neuron]), "kind": "random"})
    return pd.DataFrame(rows, columns=["layer", "neuron", "token_id", "token", "congruence", "rank", "kind"])

"""Chunked reductions of lens distributions over the vocabulary.

Never holds layers x positions x vocabulary: positions and layers are taken in chunks whose logits
fit a memory budget, and only top-k, ranks, probabilities, entropy and KL are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from core.lenses import Lens, LogitLens
from core.trace import ModelSession, Trace

DEFAULT_BUDGET_MB = 256


@dataclass(frozen=True)
class LensStats:
    """Statistics of one lens over layers x positions (numpy arrays; layer 0 = embeddings).

    layers        [layer]                 which residual layers these rows are
    top_ids       [layer, pos, k]         the lens's top-k token ids, best first
    top_probs     [layer, pos, k]
    entropy       [layer, pos]            nats
    kl_to_final   [layer, pos]            KL(final || layer), nats: what the layer misses of the output
    target_ids    [pos, target]           target token ids (default: the final top-1 at that position)
    target_rank   [layer, pos, target]    1 + #tokens with strictly higher probability (1 = best)
    target_prob   [layer, pos, target]
    next_token_ce [layer, pos]            -log p(actual next token), nats; NaN at the last position
    """

    lens: str
    layers: np.ndarray
    top_ids: np.ndarray
    top_probs: np.ndarray
    entropy: np.ndarray
    kl_to_final: np.ndarray
    target_ids: np.ndarray
    target_rank: np.ndarray
    target_prob: np.ndarray
    next_token_ce: np.ndarray

    def layer_row(self, layer: int) -> int:
        """Row index of residual layer ``layer`` in these arrays."""
        hits = np.flatnonzero(self.layers == layer)
        if hits.size == 0:
            raise ValueError(f"Layer {layer} was not computed (computed: {self.layers.tolist()}).")
        return int(hits[0])


def _chunks(items: Sequence[int], size: int) -> list[list[int]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


@torch.no_grad()
def _log_probs(session: ModelSession, lens: Lens, resid: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """[layer, pos, d_model] (CPU) -> [layer, pos, vocab] log-probabilities on the model's device."""
    resid = resid.to(session.device, session.model.dtype)
    logits = lens.logits(resid, layers).float()  # [layer, pos, vocab]
    return torch.log_softmax(logits, dim=-1)


def _ranks(logp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[layer, pos, vocab], [pos, target] -> [layer, pos, target] rank (1 = best, ties not counted)."""
    out = []
    for t in range(target.shape[1]):
        idx = target[:, t].to(logp.device)[None, :, None].expand(logp.shape[0], -1, 1)  # [layer, pos, 1]
        t_logp = logp.gather(-1, idx)  # [layer, pos, 1]
        out.append((logp > t_logp).sum(-1) + 1)  # [layer, pos]
    return torch.stack(out, dim=-1)


def lens_stats(
    session: ModelSession,
    trace: Trace,
    lens: Lens | None = None,
    top_k: int = 10,
    targets: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    budget_mb: int = DEFAULT_BUDGET_MB,
) -> LensStats:
    """Reduce ``lens`` over ``layers`` (default all, 0 = embeddings) x every position of ``trace``."""
    lens = lens or LogitLens(session.adapter)
    final_lens = LogitLens(session.adapter)
    n_res, n_pos, _ = trace.resid.shape
    layers = sorted(set(range(n_res) if layers is None else (int(x) for x in layers)))
    if not layers or layers[0] < 0 or layers[-1] >= n_res:
        raise ValueError(f"Layers must lie in 0..{n_res - 1}.")
    vocab = session.adapter.d_vocab
    top_k = max(1, min(int(top_k), vocab))
    budget_rows = max(1, int(budget_mb * 2**20) // (vocab * 4 * 4))  # [vocab] rows: ~4 live tensors
    pos_chunk = min(n_pos, 64, budget_rows)
    layer_chunk = max(1, budget_rows // pos_chunk)
    n_t = 1 if targets is None else len(targets)
    if n_t == 0:
        raise ValueError("Give at least one target token, or None for the final top-1.")
    if targets is not None and not all(0 <= int(t) < vocab for t in targets):
        raise ValueError(f"Target token ids must lie in 0..{vocab - 1}.")
    out = _empty(len(layers), n_pos, top_k, n_t)
    next_ids = torch.cat([trace.input_ids[1:], torch.tensor([-1])])  # [pos]
    for p0 in range(0, n_pos, pos_chunk):
        ps = slice(p0, min(n_pos, p0 + pos_chunk))
        final_logp = _log_probs(session, final_lens, trace.resid[-1:, ps], [n_res - 1])[0]  # [pos, vocab]
        target = (final_logp.argmax(-1, keepdim=True) if targets is None
                  else torch.tensor(list(targets), device=final_logp.device).expand(final_logp.shape[0], -1))
        out["target_ids"][ps] = target.cpu().numpy()
        row = 0
        for chunk in _chunks(layers, layer_chunk):
            logp = _log_probs(session, lens, trace.resid[chunk, ps], chunk)  # [layer, pos, vocab]
            rows = slice(row, row + len(chunk))
            _reduce_into(out, rows, ps, logp, final_logp, target, next_ids[ps])
            row += len(chunk)
            del logp
    return LensStats(lens=lens.name, layers=np.asarray(layers), **out)


def _empty(n_layer: int, n_pos: int, k: int, n_t: int) -> dict[str, np.ndarray]:
    return {
        "top_ids": np.zeros((n_layer, n_pos, k), np.int64),
        "top_probs": np.zeros((n_layer, n_pos, k), np.float32),
        "entropy": np.zeros((n_layer, n_pos), np.float32),
        "kl_to_final": np.zeros((n_layer, n_pos), np.float32),
        "target_ids": np.zeros((n_pos, n_t), np.int64),
        "target_rank": np.zeros((n_layer, n_pos, n_t), np.int64),
        "target_prob": np.zeros((n_layer, n_pos, n_t), np.float32),
        "next_token_ce": np.full((n_layer, n_pos), np.nan, np.float32),
    }


def _reduce_into(out: dict, rows: slice, ps: slice, logp: torch.Tensor, final_logp: torch.Tensor,
                 target: torch.Tensor, next_ids: torch.Tensor) -> None:
    """Fill ``out[rows, ps]`` from one chunk: logp [layer, pos, vocab], final_logp [pos, vocab]."""
    probs = logp.exp()  # [layer, pos, vocab]
    top = logp.topk(out["top_ids"].shape[-1], dim=-1)
    out["top_ids"][rows, ps] = top.indices.cpu().numpy()
    out["top_probs"][rows, ps] = top.values.exp().cpu().numpy()
    out["entropy"][rows, ps] = (-(probs * logp).sum(-1)).cpu().numpy()
    final_p = final_logp.exp()  # [pos, vocab]
    out["kl_to_final"][rows, ps] = (final_p * (final_logp - logp)).sum(-1).clamp_min(0).cpu().numpy()
    del probs
    out["target_rank"][rows, ps] = _ranks(logp, target).cpu().numpy()
    idx = target.to(logp.device)[None].expand(logp.shape[0], -1, -1)  # [layer, pos, target]
    out["target_prob"][rows, ps] = logp.gather(-1, idx).exp().cpu().numpy()
    valid = next_ids >= 0
    if valid.any():
        nxt = next_ids.clamp_min(0).to(logp.device)[None, :, None].expand(logp.shape[0], -1, 1)
        ce = -logp.gather(-1, nxt)[..., 0].cpu().numpy()  # [layer, pos]
        out["next_token_ce"][rows, ps] = np.where(valid.numpy()[None], ce, np.nan)

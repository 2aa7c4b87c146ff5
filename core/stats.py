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
def _logits(session: ModelSession, lens: Lens, resid: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """[layer, pos, d_model] (CPU) -> [layer, pos, vocab] float32 logits on the model's device (fresh:
    the reduction below overwrites them)."""
    resid = resid.to(session.device, session.model.dtype)
    return lens.logits(resid, layers).float()  # [layer, pos, vocab]


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
        final_z = _logits(session, final_lens, trace.resid[-1:, ps], [n_res - 1])[0]  # [pos, vocab]
        final_z -= final_z.amax(-1, keepdim=True)  # the output's logits - max
        final_p = final_z.exp()
        final_log_s = final_p.sum(-1).log()  # [pos]
        final_p /= final_log_s.exp()[:, None]  # [pos, vocab] the output distribution
        target = (final_z.argmax(-1, keepdim=True) if targets is None
                  else torch.tensor(list(targets), device=final_z.device).expand(final_z.shape[0], -1))
        out["target_ids"][ps] = target.cpu().numpy()
        row = 0
        for chunk in _chunks(layers, layer_chunk):
            logits = _logits(session, lens, trace.resid[chunk, ps], chunk)  # [layer, pos, vocab]
            rows = slice(row, row + len(chunk))
            _reduce_into(out, rows, ps, logits, (final_z, final_p, final_log_s), target, next_ids[ps])
            row += len(chunk)
            del logits
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


@torch.no_grad()
def _reduce_into(out: dict, rows: slice, ps: slice, logits: torch.Tensor,
                 final: tuple[torch.Tensor, torch.Tensor, torch.Tensor], target: torch.Tensor,
                 next_ids: torch.Tensor) -> None:
    """Fill ``out[rows, ps]`` from one chunk of logits [layer, pos, vocab], which it overwrites.

    Never materialises log-probabilities: with z = logits - max and S = sum exp(z), log p = z - log S,
    entropy = log S - sum(exp(z) z) / S and KL(final || layer) = sum p_f (z_f - z) + log S - log S_f,
    where ``final`` = (z_f [pos, vocab], p_f [pos, vocab], log S_f [pos]) of the model's output.
    Every full-vocabulary pass writes into ``logits`` or one scratch buffer (a fresh [.., vocab]
    tensor per op costs page faults), and ranks are counted as float sums (bool sums are ~5x slower).
    """
    n_layer = logits.shape[0]
    top = logits.topk(out["top_ids"].shape[-1], dim=-1)  # values are logits, best first
    idx = target.to(logits.device)[None].expand(n_layer, -1, -1)  # [layer, pos, target]
    t_logit = logits.gather(-1, idx)  # [layer, pos, target]
    nxt = next_ids.clamp_min(0).to(logits.device)[None, :, None].expand(n_layer, -1, 1)
    nxt_logit = logits.gather(-1, nxt)[..., 0]  # [layer, pos]
    buf = torch.empty_like(logits)
    # rank = 1 + #tokens with a strictly higher logit (exact: 0/1 sums below 2**24 are exact in float32)
    ranks = [torch.gt(logits, t_logit[..., t:t + 1], out=buf).sum(-1) + 1 for t in range(idx.shape[-1])]
    mx = top.values[..., :1]  # [layer, pos, 1]
    z = logits.sub_(mx)  # in place: logits - max
    s = torch.exp(z, out=buf).sum(-1)  # [layer, pos]
    ez = torch.mul(buf, z, out=buf).sum(-1)  # [layer, pos] sum exp(z) z
    final_z, final_p, final_log_s = final
    kl = torch.sub(final_z, z, out=buf).mul_(final_p).sum(-1)  # [layer, pos] sum p_f (z_f - z)
    del buf
    log_s = s.log()[..., None]  # [layer, pos, 1]; log p = logit - max - log S (subtract max first)
    out["top_ids"][rows, ps] = top.indices.cpu().numpy()
    out["top_probs"][rows, ps] = (top.values - mx - log_s).exp().cpu().numpy()
    out["entropy"][rows, ps] = (log_s[..., 0] - ez / s).cpu().numpy()
    out["kl_to_final"][rows, ps] = (kl + log_s[..., 0] - final_log_s).clamp_min(0).cpu().numpy()
    out["target_rank"][rows, ps] = torch.stack(ranks, dim=-1).long().cpu().numpy()
    out["target_prob"][rows, ps] = (t_logit - mx - log_s).exp().cpu().numpy()
    valid = next_ids >= 0
    if valid.any():
        ce = (log_s[..., 0] - (nxt_logit - mx[..., 0])).cpu().numpy()  # [layer, pos]
        out["next_token_ce"][rows, ps] = np.where(valid.numpy()[None], ce, np.nan)

"""Chunked reductions of lens distributions over the vocabulary.

Never holds layers x positions x vocabulary: positions are taken in fixed tiles and layers in chunks
whose logits fit a memory budget, and only top-k, ranks, probabilities, entropy and KL are kept.
Which rows are computed together never depends on the budget (see :data:`POS_TILE`), and the last
layer's row of every lens is the model's output computed once (:func:`output_logits`).
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


POS_TILE = 128
"""Positions per lens call. Fixed, never derived from the memory budget: each (layer, position) row's
logits come from one call of the same shape however the rows are grouped for the reduction, so a rank or
top-k id never depends on the budget. (A matrix product of another shape may round the last bits
differently -- on some CPUs rows of a [1, d] and a [40, d] product differ -- and a near-tie then flips.)"""


def position_tiles(n_pos: int) -> list[slice]:
    """[0, T), [T, 2T), ... (T = :data:`POS_TILE`) over ``n_pos`` positions: a function of ``n_pos`` alone."""
    return [slice(p, min(n_pos, p + POS_TILE)) for p in range(0, n_pos, POS_TILE)]


def _device_of(adapter) -> tuple[torch.device, torch.dtype]:
    weight = adapter.unembed_module.weight
    return weight.device, weight.dtype


@torch.no_grad()
def output_logits(adapter, resid_last: torch.Tensor) -> torch.Tensor:
    """[pos, d_model] last-layer (pre-norm) residual -> [pos, vocab] float32: the model's next-token logits.

    THE final row of every lens: lens statistics, readouts and default targets all take it from here, so the
    final layer's rank of its own top-1 is 1 by construction (whatever kernel computed it).
    """
    device, dtype = _device_of(adapter)
    return adapter.unembed(adapter.final_norm(resid_last.to(device, dtype))).float()


@torch.no_grad()
def _lens_layer(adapter, lens: Lens, resid: torch.Tensor, layer: int) -> torch.Tensor:
    """One lens call: [pos, d_model] residual of one layer -> [pos, vocab] float32 logits."""
    device, dtype = _device_of(adapter)
    return lens.logits(resid[None].to(device, dtype), [layer])[0].float()


@torch.no_grad()
def _lens_position(adapter, lens: Lens, resid: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """One lens call for a lens that batches layers (patchscopes): [layer, d_model] states of one
    position -> [layer, vocab] float32 logits."""
    device, dtype = _device_of(adapter)
    return lens.logits(resid[:, None].to(device, dtype), layers)[:, 0].float()


def batches_layers(lens: Lens) -> bool:
    """True for lenses whose one call reads every layer of a position (one batched forward per position)."""
    return bool(getattr(lens, "batches_layers", False))


@torch.no_grad()
def readout_logits(adapter, lens: Lens, resid: torch.Tensor, final: torch.Tensor | None = None) -> torch.Tensor:
    """[layer+1, pos, d_model] residual of every layer at a few positions -> [layer+1, pos, vocab] float32.

    Layers 0..L-1 through one call of ``lens``; the last row is ``final`` = :func:`output_logits` of the
    last layer (pass it when already computed): every lens reads the model's own output there, the learned
    lenses by definition, a patchscope because patching the last layer's state leaves only the final norm
    and the unembedding to run. Depth and Extraction read here.
    """
    n_res = resid.shape[0]
    final = output_logits(adapter, resid[-1]) if final is None else final  # [pos, vocab]
    if n_res == 1:
        return final[None]
    device, dtype = _device_of(adapter)
    earlier = lens.logits(resid[:-1].to(device, dtype), list(range(n_res - 1))).float()  # [layer, pos, vocab]
    return torch.cat([earlier, final[None]])


@torch.no_grad()
def logit_lens_top_k(adapter, states: torch.Tensor, k: int,
                     with_probs: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """[layer, pos, d_model] pre-norm states -> (int64 [layer, pos, k] logit-lens top-k ids, best first;
    float32 [layer, pos, k] their probabilities when ``with_probs``, else None).

    One :func:`output_logits` call per layer and position tile, as in :func:`lens_stats`: a row's ids
    never depend on which other rows were read, and the last layer's row is the model's output.
    """
    n_layer, n_pos, _ = states.shape
    ids = np.zeros((n_layer, n_pos, k), np.int64)
    probs = np.zeros((n_layer, n_pos, k), np.float32) if with_probs else None
    for layer in range(n_layer):
        for ps in position_tiles(n_pos):
            logits = output_logits(adapter, states[layer, ps])  # [pos, vocab]
            top = logits.topk(k, dim=-1)
            ids[layer, ps] = top.indices.cpu().numpy()
            if probs is not None:
                probs[layer, ps] = (top.values - torch.logsumexp(logits, -1, keepdim=True)).exp().cpu().numpy()
    return ids, probs


def lens_stats(
    session: ModelSession,
    trace: Trace,
    lens: Lens | None = None,
    top_k: int = 10,
    targets: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    budget_mb: float = DEFAULT_BUDGET_MB,
) -> LensStats:
    """Reduce ``lens`` over ``layers`` (default all, 0 = embeddings) x every position of ``trace``.

    Positions go in fixed tiles of :data:`POS_TILE`; in each, the model's output is computed once
    (:func:`output_logits`): it is the last layer's row of every lens and its argmax the default target.
    Each other layer is one lens call over the tile (a patchscope: one call per position over all layers);
    ``budget_mb`` only decides how many of those rows are reduced together (at least one tile's worth).
    """
    adapter = session.adapter
    lens = lens or LogitLens(adapter)
    n_res, n_pos, _ = trace.resid.shape
    layers = sorted(set(range(n_res) if layers is None else (int(x) for x in layers)))
    if not layers or layers[0] < 0 or layers[-1] >= n_res:
        raise ValueError(f"Layers must lie in 0..{n_res - 1}.")
    vocab = adapter.d_vocab
    top_k = max(1, min(int(top_k), vocab))
    n_t = 1 if targets is None else len(targets)
    if n_t == 0:
        raise ValueError("Give at least one target token, or None for the final top-1.")
    if targets is not None and not all(0 <= int(t) < vocab for t in targets):
        raise ValueError(f"Target token ids must lie in 0..{vocab - 1}.")
    budget_rows = max(1, int(budget_mb * 2**20) // (vocab * 4 * 4))  # [vocab] rows: ~4 live tensors
    out = _empty(len(layers), n_pos, top_k, n_t)
    next_ids = torch.cat([trace.input_ids[1:], torch.tensor([-1])])  # [pos]
    for ps in position_tiles(n_pos):
        final = output_logits(adapter, trace.resid[-1, ps])  # [pos, vocab], the model's output
        target = (final.argmax(-1, keepdim=True) if targets is None
                  else torch.tensor(list(targets), device=final.device).expand(final.shape[0], -1))
        out["target_ids"][ps] = target.cpu().numpy()
        final_z = final - final.amax(-1, keepdim=True)  # the output's logits - max
        final_p = final_z.exp()
        final_log_s = final_p.sum(-1).log()  # [pos]
        final_p /= final_log_s.exp()[:, None]  # [pos, vocab] the output distribution
        reference = (final_z, final_p, final_log_s)
        for rows, sub, logits in _tile_chunks(adapter, lens, trace.resid, layers, ps, final, budget_rows):
            at = slice(sub.start - ps.start, sub.stop - ps.start)  # the chunk's positions within the tile
            _reduce_into(out, rows, sub, logits, tuple(x[at] for x in reference), target[at], next_ids[sub])
            del logits
    return LensStats(lens=lens.name, layers=np.asarray(layers), **out)


def _tile_chunks(adapter, lens: Lens, resid: torch.Tensor, layers: list[int], ps: slice, final: torch.Tensor,
                 budget_rows: int):
    """Yield (rows of ``layers``, positions, [layer, pos, vocab] logits) chunks of one position tile.

    The final layer's rows are ``final`` itself; every other row comes from the fixed call pattern above.
    """
    last = resid.shape[0] - 1
    n = ps.stop - ps.start
    if batches_layers(lens):
        earlier = [layer for layer in layers if layer != last]
        for p in range(ps.start, ps.stop):
            logits = torch.empty(len(layers), 1, final.shape[-1], device=final.device)
            if earlier:
                logits[[layers.index(x) for x in earlier], 0] = _lens_position(adapter, lens, resid[earlier, p],
                                                                                earlier)
            if last in layers:
                logits[layers.index(last), 0] = final[p - ps.start]
            yield slice(0, len(layers)), slice(p, p + 1), logits
        return
    per_chunk = max(1, budget_rows // n)
    for start in range(0, len(layers), per_chunk):
        chunk = layers[start:start + per_chunk]
        logits = torch.empty(len(chunk), n, final.shape[-1], device=final.device)
        for i, layer in enumerate(chunk):
            logits[i] = final if layer == last else _lens_layer(adapter, lens, resid[layer, ps], layer)
        yield slice(start, start + len(chunk)), ps, logits


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

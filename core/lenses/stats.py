"""Chunked reductions of lens distributions over the vocabulary.

Never holds layers x positions x vocabulary: positions are taken in fixed tiles and layers in fixed groups
whose logits fit :data:`CALL_MB`, and only top-k, ranks, probabilities, entropy and KL are kept. Which rows
are computed together is fixed by the model and the trace's length (:func:`layer_groups`), and the last
layer's row of every lens is the model's output computed once (:func:`output_logits`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from core.lenses.base import Lens
from core.lenses.logit import LogitLens
from core.model.session import ModelSession, Trace


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
"""Positions per lens call."""
CALL_MB = 64
"""Logits of one lens call stay within this: [rows, vocab] float32, rows = a group of layers x a position tile."""


def position_tiles(n_pos: int) -> list[slice]:
    """[0, T), [T, 2T), ... (T = :data:`POS_TILE`) over ``n_pos`` positions: a function of ``n_pos`` alone."""
    return [slice(p, min(n_pos, p + POS_TILE)) for p in range(0, n_pos, POS_TILE)]


def layer_groups(n_layers: int, tile: int, vocab: int) -> list[list[int]]:
    """Layers 0..n_layers-1 in consecutive groups of G = CALL_MB // (4 vocab tile) (at least 1), from 0 up.

    The fixed call pattern: one lens call reads one group of layers at one position tile. It depends only on
    the model (vocabulary), the number of layers and the tile, never on a memory budget or on which layers
    were asked for, so a (layer, position) row's logits always come from a call of the same shape holding the
    same rows. (A matrix product of another shape may round the last bits differently -- on some CPUs rows of
    a [1, d] and a [40, d] product differ -- and a near-tie then flips a rank or a top-k id.)
    """
    size = max(1, CALL_MB * 2**20 // (4 * vocab * max(1, tile)))
    return [list(range(s, min(n_layers, s + size))) for s in range(0, n_layers, size)]


def _device_of(adapter) -> tuple[torch.device, torch.dtype]:
    """Where and in what dtype lens products run: where the unembedding lives (its weight may sit on "meta"
    between calls when accelerate offloaded it, so the adapter asks its hook), in the weights' dtype."""
    weight = adapter.unembed_module.weight
    device = getattr(adapter, "unembed_device", weight.device)  # the ViT / Whisper adapters are never sharded
    return device, weight.dtype


@torch.no_grad()
def output_logits(adapter, resid_last: torch.Tensor) -> torch.Tensor:
    """[..., d_model] pre-norm residual -> [..., vocab] float32 logits: the model's own final norm and unembedding.

    Called on the last layer's residual of a position tile it is the model's next-token output, and THE last
    row of every lens: lens statistics and readouts take the default target and the last row from this one
    tensor, so the final layer's rank of its own top-1 is 1 by construction (whatever kernel computed it).
    """
    device, dtype = _device_of(adapter)
    return adapter.unembed(adapter.final_norm(resid_last.to(device, dtype))).float()


@torch.no_grad()
def _lens_call(adapter, lens: Lens, resid: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """One lens call: [layer, pos, d_model] residual of ``layers`` -> [layer, pos, vocab] float32 logits."""
    device, dtype = _device_of(adapter)
    return lens.logits(resid.to(device, dtype), layers).float()


def batches_layers(lens: Lens) -> bool:
    """True for lenses whose one call reads every layer of a position (one batched forward per position)."""
    return bool(getattr(lens, "batches_layers", False))


@torch.no_grad()
def readout_logits(adapter, lens: Lens, resid: torch.Tensor, final: torch.Tensor | None = None) -> torch.Tensor:
    """[layer+1, pos, d_model] residual of every layer at a few positions -> [layer+1, pos, vocab] float32.

    Layers 0..L-1 in the fixed :func:`layer_groups` calls (a patchscope: one call); the last row is ``final`` =
    :func:`output_logits` of the last layer (pass it when already computed): every lens reads the model's own
    output there, the learned lenses by definition, a patchscope because patching the last layer's state
    leaves only the final norm and the unembedding to run. Depth and Extraction read here.
    """
    n_layers, n_pos = resid.shape[0] - 1, resid.shape[1]
    final = output_logits(adapter, resid[-1]) if final is None else final  # [pos, vocab]
    groups = [list(range(n_layers))] if batches_layers(lens) else layer_groups(n_layers, n_pos, final.shape[-1])
    parts = [_lens_call(adapter, lens, resid[g], g) for g in groups if g]  # [layer, pos, vocab] each
    return torch.cat(parts + [final[None]])


@torch.no_grad()
def logit_lens_top_k(adapter, states: torch.Tensor, k: int,
                     with_probs: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """[layer, pos, d_model] pre-norm states -> (int64 [layer, pos, k] logit-lens top-k ids, best first;
    float32 [layer, pos, k] their probabilities when ``with_probs``, else None).

    One :func:`output_logits` call per :func:`layer_groups` group and position tile: a row's ids never depend
    on which other rows were read, and the last layer's row is read like the others.
    """
    n_layer, n_pos, _ = states.shape
    ids = np.zeros((n_layer, n_pos, k), np.int64)
    probs = np.zeros((n_layer, n_pos, k), np.float32) if with_probs else None
    for ps in position_tiles(n_pos):
        for group in layer_groups(n_layer, ps.stop - ps.start, adapter.d_vocab):
            logits = output_logits(adapter, states[group, ps])  # [layer, pos, vocab]
            top = logits.topk(k, dim=-1)
            ids[group, ps] = top.indices.cpu().numpy()
            if probs is not None:
                probs[group, ps] = (top.values - torch.logsumexp(logits, -1, keepdim=True)).exp().cpu().numpy()
    return ids, probs


def lens_stats(
    session: ModelSession,
    trace: Trace,
    lens: Lens | None = None,
    top_k: int = 10,
    targets: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
) -> LensStats:
    """Reduce ``lens`` over ``layers`` (default all, 0 = embeddings) x every position of ``trace``.

    Positions go in fixed tiles of :data:`POS_TILE`; in each, the model's output is computed once
    (:func:`output_logits`): it is the last layer's row of every lens and its argmax the default target. The
    other layers are read in the fixed :func:`layer_groups` calls (whole groups, also when only some of their
    layers were asked for; a patchscope: one call per position over the layers asked for) and each call's
    rows are reduced at once, so at most one call's logits (:data:`CALL_MB`, x ~4 scratch) live at a time.
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
        for rows, sub, logits in _tile_chunks(adapter, lens, trace.resid, layers, ps, final):
            at = slice(sub.start - ps.start, sub.stop - ps.start)  # the chunk's positions within the tile
            _reduce_into(out, rows, sub, logits, tuple(x[at] for x in reference), target[at], next_ids[sub])
            del logits
    return LensStats(lens=lens.name, layers=np.asarray(layers), **out)


def _tile_chunks(adapter, lens: Lens, resid: torch.Tensor, layers: list[int], ps: slice, final: torch.Tensor):
    """Yield (rows of ``layers``, positions, [layer, pos, vocab] logits) for one position tile, one lens call
    at a time; the final layer's row is a copy of ``final`` (the reduction overwrites what it is given)."""
    last = resid.shape[0] - 1
    row_of = {layer: i for i, layer in enumerate(layers)}
    earlier = [layer for layer in layers if layer != last]
    if batches_layers(lens):
        for p in range(ps.start, ps.stop):
            if earlier:
                logits = _lens_call(adapter, lens, resid[earlier, p:p + 1], earlier)  # [layer, 1, vocab]
                yield slice(row_of[earlier[0]], row_of[earlier[-1]] + 1), slice(p, p + 1), logits
    else:
        for group in layer_groups(last, ps.stop - ps.start, final.shape[-1]):
            wanted = [layer for layer in group if layer in row_of]
            if not wanted:
                continue
            logits = _lens_call(adapter, lens, resid[group, ps], group)  # [group, pos, vocab]
            if len(wanted) < len(group):
                logits = logits[[layer - group[0] for layer in wanted]]
            yield slice(row_of[wanted[0]], row_of[wanted[-1]] + 1), ps, logits
    if last in row_of:
        yield slice(row_of[last], row_of[last] + 1), ps, final.clone()[None]


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

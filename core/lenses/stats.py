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
from core.lenses.reduce import layer_groups, position_tiles, reduce_positions
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
    positions     [pos]                   which prompt positions these columns are (all, or the ones asked for)
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
    positions: np.ndarray | None = None  # None: 0..pos-1

    def __post_init__(self) -> None:
        if self.positions is None:
            object.__setattr__(self, "positions", np.arange(self.top_ids.shape[1]))

    def layer_row(self, layer: int) -> int:
        """Row index of residual layer ``layer`` in these arrays."""
        hits = np.flatnonzero(self.layers == layer)
        if hits.size == 0:
            raise ValueError(f"Layer {layer} was not computed (computed: {self.layers.tolist()}).")
        return int(hits[0])

    def position_column(self, position: int) -> int:
        """Column index of prompt position ``position`` in these arrays."""
        hits = np.flatnonzero(self.positions == position)
        if hits.size == 0:
            raise ValueError(f"Position {position} was not computed.")
        return int(hits[0])


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
    positions: Sequence[int] | None = None,
) -> LensStats:
    """Reduce ``lens`` over ``layers`` (default all, 0 = embeddings) x ``positions`` of ``trace`` (default all).

    Asking for fewer positions (what a page shows) reads only those: the tiles and calls below are then laid over
    the positions asked for, so a cell's logits may come from a call of another shape than in the full table
    (equal within float32 rounding; a near-tie can order differently).

    The one reduction of :func:`core.lenses.reduce.reduce_positions` (what an NDIF run computes next to the model,
    :func:`remote_lens_stats`): positions in fixed tiles of :data:`POS_TILE`; in each, the model's output is computed
    once (:func:`output_logits`): it is the last layer's row of every lens and its argmax the default target. The
    other layers are read in the fixed :func:`layer_groups` calls (whole groups, also when only some of their
    layers were asked for; a patchscope: one call per run of consecutive positions over the layers asked for) and
    each call's rows are reduced at once, so at most one call's logits (:data:`CALL_MB`, plus a small scratch block)
    live at a time.
    """
    adapter = session.adapter
    lens = lens or LogitLens(adapter)
    n_res, n_pos, _ = trace.resid.shape
    layers, top_k = _check_request(n_res, adapter.d_vocab, top_k, targets, layers)
    next_ids = _next_ids(trace.input_ids)
    resid = trace.resid
    if positions is not None:
        chosen = sorted({int(p) for p in positions})
        if not chosen or chosen[0] < 0 or chosen[-1] >= n_pos:
            raise ValueError(f"Positions must lie in 0..{n_pos - 1}.")
        if len(chosen) < n_pos:
            index = torch.tensor(chosen)
            resid, next_ids = resid[:, index], next_ids[index]  # [layer+1, chosen, d_model], [chosen]
        positions = chosen

    def read_final(ps: slice) -> torch.Tensor:
        return output_logits(adapter, resid[-1, ps])  # [pos, vocab], the model's output

    def read_layers(group: list[int], ps: slice) -> torch.Tensor:
        return _lens_call(adapter, lens, resid[group, ps], group)  # [group, pos, vocab]

    got = reduce_positions(resid.shape[1], layers, n_res - 1, adapter.d_vocab, top_k, targets, next_ids,
                           read_final, read_layers, per_position=batches_layers(lens))
    return _as_stats(lens.name, layers, got, positions)


def remote_lens_stats(session: ModelSession, ids: torch.Tensor, top_k: int = 10, targets: Sequence[int] | None = None,
                      layers: Sequence[int] | None = None) -> LensStats:
    """The logit lens of [pos] ``ids`` reduced where the model runs (an nnsight session: NDIF), without a local
    trace: :func:`lens_stats`'s numbers for the logit lens, from the same reduction, with only the statistics
    crossing the network."""
    executor = session.executor
    if not hasattr(executor, "logit_lens"):
        raise ValueError("remote_lens_stats needs a session run through nnsight.")
    n_res = session.adapter.n_layers + 1
    layers, top_k = _check_request(n_res, session.adapter.d_vocab, top_k, targets, layers)
    got = executor.logit_lens(session, ids, layers, top_k, None if targets is None else list(targets))
    return _as_stats("logit", layers, got)


def _check_request(n_res: int, vocab: int, top_k: int, targets: Sequence[int] | None,
                   layers: Sequence[int] | None) -> tuple[list[int], int]:
    """-> (sorted layers, top-k clipped to the vocabulary); ValueError for layers, targets out of range."""
    layers = sorted(set(range(n_res) if layers is None else (int(x) for x in layers)))
    if not layers or layers[0] < 0 or layers[-1] >= n_res:
        raise ValueError(f"Layers must lie in 0..{n_res - 1}.")
    if targets is not None and len(targets) == 0:
        raise ValueError("Give at least one target token, or None for the final top-1.")
    if targets is not None and not all(0 <= int(t) < vocab for t in targets):
        raise ValueError(f"Target token ids must lie in 0..{vocab - 1}.")
    return layers, max(1, min(int(top_k), vocab))


def _next_ids(input_ids: torch.Tensor) -> torch.Tensor:
    """[pos] the token after each position (-1 after the last)."""
    return torch.cat([input_ids.cpu()[1:], torch.tensor([-1])])


def _as_stats(name: str, layers: list[int], got: dict[str, torch.Tensor],
              positions: Sequence[int] | None = None) -> LensStats:
    ints = {"top_ids", "target_ids", "target_rank"}
    arrays = {k: v.numpy().astype(np.int64) if k in ints else v.numpy().astype(np.float32) for k, v in got.items()}
    return LensStats(lens=name, layers=np.asarray(layers), positions=None if positions is None
                     else np.asarray(positions, dtype=np.int64), **arrays)



"""The lens reductions over the vocabulary, in torch alone: what runs wherever the logits are.

Everything here takes and returns tensors and imports nothing but torch, so the same functions run in this process
(:func:`core.lenses.stats.lens_stats`, over a trace's residuals) and inside an nnsight trace on the machine that
holds the model (:meth:`core.model.executors.NnsightExecutor.logit_lens`, on NDIF), where nnsight ships them by
value: there only the reduced arrays -- top-k, ranks, probabilities, entropy, KL -- come back, never
[layer, pos, vocab] logits.

The call pattern is fixed by the model and the prompt's length alone (:func:`position_tiles`,
:func:`layer_groups`), so a (layer, position) row's logits always come from a call of the same shape.
"""

from __future__ import annotations

import torch

POS_TILE = 128
"""Positions per lens call."""
CALL_MB = 64
"""Logits of one lens call stay within this: [rows, vocab] float32, rows = a group of layers x a position tile."""


def position_tiles(n_pos: int, tile: int | None = None) -> list[slice]:
    """[0, T), [T, 2T), ... (T = ``tile``, default :data:`POS_TILE`) over ``n_pos`` positions: a function of
    ``n_pos`` alone."""
    tile = POS_TILE if tile is None else tile
    return [slice(p, min(n_pos, p + tile)) for p in range(0, n_pos, tile)]


def layer_groups(n_layers: int, tile: int, vocab: int, call_mb: float | None = None) -> list[list[int]]:
    """Layers 0..n_layers-1 in consecutive groups of G = CALL_MB // (4 vocab tile) (at least 1), from 0 up.

    The fixed call pattern: one lens call reads one group of layers at one position tile. It depends only on
    the model (vocabulary), the number of layers and the tile, never on a memory budget or on which layers
    were asked for, so a (layer, position) row's logits always come from a call of the same shape holding the
    same rows. (A matrix product of another shape may round the last bits differently -- on some CPUs rows of
    a [1, d] and a [40, d] product differ -- and a near-tie then flips a rank or a top-k id.)
    """
    call_mb = CALL_MB if call_mb is None else call_mb
    size = max(1, int(call_mb * 2**20 // (4 * vocab * max(1, tile))))
    return [list(range(s, min(n_layers, s + size))) for s in range(0, n_layers, size)]


@torch.no_grad()
def final_reference(final: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[pos, vocab] float32 output logits -> (z_f = logits - max, p_f the output distribution, log S_f [pos]):
    what :func:`reduce_logits` compares every layer with."""
    final_z = final - final.amax(-1, keepdim=True)
    final_p = final_z.exp()
    final_log_s = final_p.sum(-1).log()  # [pos]
    final_p /= final_log_s.exp()[:, None]  # [pos, vocab]
    return final_z, final_p, final_log_s


@torch.no_grad()
def reduce_logits(logits: torch.Tensor, final: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                  target: torch.Tensor, next_ids: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """One chunk of float32 logits [layer, pos, vocab] (overwritten) -> its statistics, on the logits' device.

    ``final`` = :func:`final_reference` of the model's output at these positions, ``target`` [pos, target] token
    ids, ``next_ids`` [pos] the actual next token (-1 where there is none). Returns top_ids / top_probs
    [layer, pos, k], entropy / kl_to_final / next_token_ce [layer, pos] (NaN where no next token), target_rank /
    target_prob [layer, pos, target].

    Never materialises log-probabilities: with z = logits - max and S = sum exp(z), log p = z - log S,
    entropy = log S - sum(exp(z) z) / S and KL(final || layer) = sum p_f (z_f - z) + log S - log S_f.
    Every full-vocabulary pass writes into ``logits`` or one scratch buffer (a fresh [.., vocab] tensor per op
    costs page faults), and ranks are counted as float sums (bool sums are ~5x slower).
    """
    n_layer = logits.shape[0]
    top = logits.topk(k, dim=-1)  # values are logits, best first
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
    valid = (next_ids >= 0).to(logits.device)[None]  # [1, pos]
    ce = log_s[..., 0] - (nxt_logit - mx[..., 0])
    return {
        "top_ids": top.indices,
        "top_probs": (top.values - mx - log_s).exp(),
        "entropy": log_s[..., 0] - ez / s,
        "kl_to_final": (kl + log_s[..., 0] - final_log_s).clamp_min(0),
        "target_rank": torch.stack(ranks, dim=-1).long(),
        "target_prob": (t_logit - mx - log_s).exp(),
        "next_token_ce": torch.where(valid, ce, torch.full_like(ce, float("nan"))),
    }


STAT_NAMES = ("top_ids", "top_probs", "entropy", "kl_to_final", "target_rank", "target_prob", "next_token_ce")


def empty_statistics(n_layer: int, n_pos: int, k: int, n_t: int) -> dict[str, torch.Tensor]:
    """The result arrays of :func:`reduce_positions` (CPU; ids and ranks int32: vocabularies stay below 2**31)."""
    return {
        "top_ids": torch.zeros(n_layer, n_pos, k, dtype=torch.int32),
        "top_probs": torch.zeros(n_layer, n_pos, k),
        "entropy": torch.zeros(n_layer, n_pos),
        "kl_to_final": torch.zeros(n_layer, n_pos),
        "target_ids": torch.zeros(n_pos, n_t, dtype=torch.int32),
        "target_rank": torch.zeros(n_layer, n_pos, n_t, dtype=torch.int32),
        "target_prob": torch.zeros(n_layer, n_pos, n_t),
        "next_token_ce": torch.full((n_layer, n_pos), float("nan")),
    }


def lens_chunks(layers: list, last: int, ps: slice, vocab: int, per_position: bool, call_mb: float):
    """(rows of ``layers``, positions, lens layers to read) of one position tile, in the fixed call pattern: whole
    :func:`layer_groups` groups (a group is read whole also when only some of its layers were asked for), or
    (``per_position``: a lens whose one call reads all the layers of a few positions, the patchscopes) one call
    per run of P consecutive positions from the tile's start over every earlier layer asked for, P = call_mb //
    (4 vocab ``last``) (at least 1): [layer, P, vocab] float32 logits of all ``last`` earlier layers fit
    ``call_mb``, and the runs depend on the model and the tile alone. The last layer is not among them: its row
    is the model's output."""
    row_of = {layer: i for i, layer in enumerate(layers)}
    earlier = [layer for layer in layers if layer != last]
    if per_position:
        if earlier:
            size = max(1, int(call_mb * 2**20 // (4 * vocab * max(1, last))))
            for p in range(ps.start, ps.stop, size):
                yield (slice(row_of[earlier[0]], row_of[earlier[-1]] + 1), slice(p, min(ps.stop, p + size)),
                       earlier, earlier)
        return
    for group in layer_groups(last, ps.stop - ps.start, vocab, call_mb):
        wanted = [layer for layer in group if layer in row_of]
        if wanted:
            yield slice(row_of[wanted[0]], row_of[wanted[-1]] + 1), ps, group, wanted


def reduce_positions(n_pos: int, layers: list, last: int, vocab: int, k: int, targets, next_ids: torch.Tensor,
                     read_final, read_layers, per_position: bool = False, pos_tile: int | None = None,
                     call_mb: float | None = None) -> dict[str, torch.Tensor]:
    """Lens statistics of ``layers`` (sorted residual layers, ``last`` = the final one) x ``n_pos`` positions.

    ``read_final(ps)`` -> [pos, vocab] float32: the model's output at the positions ``ps`` (computed once per
    position tile: it is the last row of every lens and its argmax the default target); ``read_layers(group, ps)``
    -> [group, pos, vocab] float32 lens logits of those layers. ``targets``: token ids, or None for each position's
    final top-1. Positions go in fixed tiles (:func:`position_tiles`), layers in the fixed calls of
    :func:`lens_chunks`, each call reduced at once (:func:`reduce_logits`), so at most one call's logits live at a
    time. Returns :func:`empty_statistics` filled.
    """
    n_t = 1 if targets is None else len(targets)
    out = empty_statistics(len(layers), n_pos, k, n_t)
    row_of = {layer: i for i, layer in enumerate(layers)}
    for ps in position_tiles(n_pos, pos_tile):
        final = read_final(ps)  # [pos, vocab]
        target = (final.argmax(-1, keepdim=True) if targets is None
                  else torch.tensor(list(targets), device=final.device).expand(final.shape[0], -1))
        out["target_ids"][ps] = target.to(torch.int32).cpu()
        reference = final_reference(final)
        chunks = list(lens_chunks(layers, last, ps, vocab, per_position, CALL_MB if call_mb is None else call_mb))
        if last in row_of:
            chunks.append((slice(row_of[last], row_of[last] + 1), ps, None, None))
        for rows, sub, group, wanted in chunks:
            if group is None:
                logits = final.clone()[None]  # [1, pos, vocab]: the reduction overwrites what it is given
            else:
                logits = read_layers(group, sub)  # [group, pos, vocab]
                if len(wanted) < len(group):
                    logits = logits[[layer - group[0] for layer in wanted]]
            at = slice(sub.start - ps.start, sub.stop - ps.start)  # the chunk's positions within the tile
            got = reduce_logits(logits, tuple(x[at] for x in reference), target[at], next_ids[sub], k)
            del logits
            for name, value in got.items():
                out[name][rows, sub] = value.to(out[name].dtype).cpu()
    return out


def logit_lens_statistics(states: list, chain: list, layers: list, k: int, targets, next_ids: torch.Tensor,
                          pos_tile: int | None = None, call_mb: float | None = None) -> dict[str, torch.Tensor]:
    """The logit lens's :func:`reduce_positions` over ``states`` ([pos, d_model] pre-norm residuals of layers
    0..L, on the model's devices), where ``chain`` applies the final norm (and projection) and the unembedding:
    what an nnsight trace computes next to the model, so only these statistics cross the network."""
    last = len(states) - 1
    device = _device_of(chain[0], states[last].device)  # blocks of a model spread over GPUs sit on several

    def readout(x: torch.Tensor) -> torch.Tensor:
        for module in chain:
            x = module(x.to(_device_of(module, x.device)))
        return x.float()

    def read_final(ps: slice) -> torch.Tensor:
        return readout(states[last][ps])  # [pos, vocab]

    def read_layers(group: list, ps: slice) -> torch.Tensor:
        return readout(torch.stack([states[layer][ps].to(device) for layer in group]))  # [group, pos, vocab]

    vocab = int(read_final(slice(0, 1)).shape[-1])
    return reduce_positions(int(states[0].shape[0]), sorted(int(x) for x in layers), last, vocab, int(k), targets,
                            next_ids, read_final, read_layers, False, pos_tile, call_mb)


def _device_of(module, default: torch.device) -> torch.device:
    """Where ``module`` computes: its weight's device (``default`` when it has none here)."""
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.device.type != "meta":
        return weight.device
    return default

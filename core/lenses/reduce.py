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
CALL_MB = 31
"""Logits of one lens call stay within this: [rows, vocab] float32, rows = a group of layers x a position tile.
Below glibc's 32 MiB cap on its mmap threshold: from the second call on, a call's logits reuse freed heap memory,
where larger ones are mapped afresh and page-faulted on every call (measured on CPU: the unembedding product of
[256, vocab] 48 MB logits runs ~20% slower than two of [128, vocab])."""


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


BLOCK_ROWS = 8
"""Rows of one layer a CPU reduces at a time (other devices: all of them): a [rows, vocab] float32 block (1.5 MB at
49k tokens) and its scratch stay in a core's cache across the passes over it. Measured on 2 cores, 49k vocabulary,
against blocks of a whole 128-position layer: ~25% faster idle, and alongside another torch process using 2
threads; as fast alongside one using 1 thread; ~2x slower only alongside a busy loop pinned to one core (each
pass is one parallel op whose threads meet at a barrier: a thread waiting for its core stalls it)."""
TOP_BLOCK = 128
"""Columns per block of :func:`top_k`'s first pass."""
EXP_FLOOR = -64.0
"""exp(z) is taken of max(z, EXP_FLOOR): exp of z below ~-87 is subnormal (or 0), and a pass over subnormals costs a
CPU ~90x (measured: the embeddings' logits span ~300). exp(-64) = 2e-28, so S = sum exp(z) >= 1 moves by under
vocab x 2e-28, far below float32's resolution, and p_f = exp(z_f) / S_f stays normal for vocabularies below 10**10."""


def top_k(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[row, vocab] -> (values, ids) [row, k] of each row's k largest entries, best first: torch.topk's values.

    One pass takes the maximum of every block of :data:`TOP_BLOCK` columns; torch.topk then runs over the k blocks
    with the largest maxima and the partial block at the end only. Exact: an entry outside those blocks is at
    most its block's maximum, so at most each chosen block's maximum, and k entries of the candidates are at
    least as large. Among exactly tied entries the ids may differ from a topk over the whole row. (topk over a
    49k row costs ~5x the block pass and the candidates' topk together.) Few blocks (n_blk <= 4k): plain topk.
    """
    rows, vocab = x.shape
    n_blk = vocab // TOP_BLOCK
    if n_blk <= 4 * k:
        top = x.topk(k, dim=-1)
        return top.values, top.indices
    head = n_blk * TOP_BLOCK
    best = x[:, :head].view(rows, n_blk, TOP_BLOCK).amax(-1).topk(k, dim=-1).indices  # [row, k] block numbers
    cols = (best[..., None] * TOP_BLOCK + torch.arange(TOP_BLOCK, device=x.device)).flatten(1)  # [row, k TOP_BLOCK]
    if head < vocab:
        cols = torch.cat([cols, torch.arange(head, vocab, device=x.device).expand(rows, -1)], 1)
    top = x.gather(1, cols).topk(k, dim=-1)
    return top.values, cols.gather(1, top.indices)


def _row_blocks(n_pos: int, device: torch.device) -> list[slice]:
    """The position blocks a layer's rows are reduced in (:data:`BLOCK_ROWS` on a CPU, else all): the same for
    :func:`final_reference` and :func:`reduce_logits`, so the final row's sums are bitwise the reference's."""
    block = BLOCK_ROWS if device.type == "cpu" else max(1, n_pos)
    return [slice(p, min(n_pos, p + block)) for p in range(0, n_pos, block)]


@torch.no_grad()
def final_reference(final: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[pos, vocab] float32 output logits (kept) -> (p_f [pos, vocab] the output distribution, log S_f [pos],
    sum p_f z_f [pos]) with z_f = logits - max and S_f = sum exp(z_f): what :func:`reduce_logits` compares every
    layer with. Sums over the same blocks and in the same operations as there."""
    n_pos = final.shape[0]
    final_z = final - final.amax(-1, keepdim=True)  # [pos, vocab], then scratch
    final_p = torch.empty_like(final_z)
    s, final_pz = torch.empty(n_pos, device=final.device), torch.empty(n_pos, device=final.device)
    for ps in _row_blocks(n_pos, final.device):
        z, p = final_z[ps], final_p[ps]
        torch.sum(torch.clamp_min(z, EXP_FLOOR, out=p).exp_(), -1, out=s[ps])
        p /= s[ps, None]
        torch.sum(torch.mul(p, z, out=z), -1, out=final_pz[ps])
    return final_p, s.log(), final_pz


@torch.no_grad()
def reduce_logits(logits: torch.Tensor, final: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                  target: torch.Tensor, next_ids: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """One chunk of float32 logits [layer, pos, vocab] (overwritten) -> its statistics, on the logits' device.

    ``final`` = :func:`final_reference` of the model's output at these positions, ``target`` [pos, target] token
    ids, ``next_ids`` [pos] the actual next token (-1 where there is none). Returns top_ids / top_probs
    [layer, pos, k], entropy / kl_to_final / next_token_ce [layer, pos] (NaN where no next token), target_rank /
    target_prob [layer, pos, target].

    Never materialises log-probabilities: with z = logits - max and S = sum exp(z), log p = z - log S,
    entropy = log S - sum(exp(z) z) / S and KL(final || layer) = sum p_f z_f - sum p_f z + log S - log S_f
    (exp of max(z, :data:`EXP_FLOOR`)). Top-k by :func:`top_k`. Rank = 1 + #tokens with a strictly higher
    logit: where the target's logit is at least the k-th largest, every higher logit is among the top k, so they
    are counted there; only the other rows take a pass over the vocabulary (0/1 float sums, exact below 2**24;
    bool sums are ~5x slower). The passes run over :func:`_row_blocks` of one layer, in place or into one scratch
    block allocated once per call (a fresh [.., vocab] tensor per op costs page faults).
    """
    n_layer, n_pos, vocab = logits.shape
    n_row, device = n_layer * n_pos, logits.device
    x = logits.reshape(n_row, vocab)  # row = layer x n_pos + pos
    top_values, top_ids = top_k(x, k)  # [row, k], values are logits
    mx = top_values[:, :1]  # [row, 1]
    t_logit = x.gather(1, target.to(device).repeat(n_layer, 1))  # [row, target]
    nxt_logit = x.gather(1, next_ids.clamp_min(0).to(device).repeat(n_layer)[:, None])[:, 0]  # [row]
    deep = t_logit < top_values[:, -1:]  # [row, target]: the target is below the k-th largest logit
    rank = (top_values[:, None, :] > t_logit[:, :, None]).sum(-1) + 1  # [row, target], exact where not deep
    deep_rows, t_cols = deep.tolist(), t_logit.T.contiguous()  # [target, row]
    count = torch.zeros(t_cols.shape, device=device)  # [target, row] higher logits, counted where deep
    final_p, final_log_s, final_pz = final
    s, ez, pz = (torch.empty(n_row, device=device) for _ in range(3))
    blocks = _row_blocks(n_pos, device)
    scratch = torch.empty(blocks[0].stop, vocab, device=device)
    for layer in range(n_layer):
        for ps in blocks:
            rows = slice(layer * n_pos + ps.start, layer * n_pos + ps.stop)
            xb, eb = x[rows], scratch[:ps.stop - ps.start]
            for t in range(t_cols.shape[0]):
                if any(deep_rows[r][t] for r in range(rows.start, rows.stop)):
                    torch.sum(torch.gt(xb, t_cols[t, rows, None], out=eb), -1, out=count[t, rows])
            z = xb.sub_(mx[rows])  # in place: logits - max (ranks above compared the logits themselves)
            torch.sum(torch.clamp_min(z, EXP_FLOOR, out=eb).exp_(), -1, out=s[rows])
            torch.sum(eb.mul_(z), -1, out=ez[rows])
            torch.sum(torch.mul(final_p[ps], z, out=eb), -1, out=pz[rows])
    del scratch
    log_s = s.log()
    rank = torch.where(deep, count.T.long() + 1, rank)
    kl = final_pz.repeat(n_layer) - pz + log_s - final_log_s.repeat(n_layer)
    ce = log_s - (nxt_logit - mx[:, 0])
    valid = (next_ids >= 0).to(device).repeat(n_layer)
    shape = (n_layer, n_pos)
    return {
        "top_ids": top_ids.view(*shape, -1),
        "top_probs": (top_values - mx - log_s[:, None]).exp().view(*shape, -1),
        "entropy": (log_s - ez / s).view(shape),
        "kl_to_final": kl.clamp_min(0).view(shape),
        "target_rank": rank.view(*shape, -1),
        "target_prob": (t_logit - mx - log_s[:, None]).exp().view(*shape, -1),
        "next_token_ce": torch.where(valid, ce, torch.full_like(ce, float("nan"))).view(shape),
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

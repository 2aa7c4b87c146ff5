"""The fast paths of :func:`core.lenses.reduce.reduce_logits` against a plain float64 log_softmax reference.

The reduction reads top-k from block maxima (:func:`core.lenses.reduce.top_k`), reads a target's rank off the top
k where its logit is at least the k-th largest (a pass over the vocabulary elsewhere), sums in cache-sized row
blocks and floors exp's argument (:data:`core.lenses.reduce.EXP_FLOOR`). Every case here is built so that each
branch really runs (asserted), and compared with a reference that shares none of that code.

Tolerances: ids, ranks and top-k values are exact (selections and comparisons of the given float32 logits, no
arithmetic, so no kernel can change them); probabilities rtol 1e-4 (float32 exp of a value within ~1e-6 of
the float64 one), entropy, cross-entropy and KL atol 1e-4 (float32 sums over 50k terms of magnitude <= ~60,
measured errors ~1e-6).
"""

from __future__ import annotations

import pytest
import torch

import core.lenses.reduce
from core.lenses.reduce import final_reference, reduce_logits, top_k

VOCAB = 50_000  # 390 blocks of 128 and a partial block of 80 columns
N_LAYER, N_POS = 3, 13  # 13 positions: a partial row block of core.lenses.reduce.BLOCK_ROWS (8)
K = 5


def _logits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(layers [layer, pos, vocab], final [pos, vocab]) float32 logits with exact ties and a huge spread."""
    g = torch.Generator().manual_seed(seed)
    layers = torch.randn(N_LAYER, N_POS, VOCAB, generator=g) * 3
    final = torch.randn(N_POS, VOCAB, generator=g) * 4
    layers[0, 0, 17] = layers[0, 0, 40_000] = layers[0, 0].max() + 1  # two tied top-1 entries
    kth = layers[1, 2].topk(K).values[-1]
    layers[1, 2, [3, 49_990]] = kth  # ties at the k-th value (one in the partial block at the end)
    layers[2, 5, :25_000] -= 400  # logits far below the max: exp underflows to subnormals without the floor
    final[4, 1000:] -= 300
    return layers, final


def _targets(layers: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
    """[pos, 3]: the final top-1, a token within the top k of layer 1, a token deep in every layer's ranking."""
    inner = layers[1].topk(K).indices[:, 2]  # the 3rd best of layer 1: rank 3 there, read off the top k
    deep = layers.sum(0).argmin(-1)
    target = torch.stack([final.argmax(-1), inner, deep], -1)
    target[0, 1] = 40_000  # tied at the top of layer 0, row 0: rank 1 (no strictly higher logit)
    target[2, 1] = 49_990  # tied at the k-th value of layer 1, row 2
    return target


def _reference(layers: torch.Tensor, final: torch.Tensor, target: torch.Tensor, next_ids: torch.Tensor,
               k: int) -> dict[str, torch.Tensor]:
    """The statistics from float64 log_softmax of the float32 logits; ranks from the float32 logits themselves."""
    logp = torch.log_softmax(layers.double(), -1)  # [layer, pos, vocab]
    final_logp = torch.log_softmax(final.double(), -1)  # [pos, vocab]
    idx = target[None].expand(layers.shape[0], -1, -1)
    t_logit = layers.gather(-1, idx)  # float32, as given
    nxt = next_ids.clamp_min(0)[None, :, None].expand(layers.shape[0], -1, 1)
    ce = -logp.gather(-1, nxt)[..., 0]
    return {
        "top_values": layers.topk(k, -1).values,
        "top_probs": logp.topk(k, -1).values.exp(),
        "entropy": -(logp.exp() * logp).sum(-1),
        "kl_to_final": (final_logp.exp() * (final_logp - logp)).sum(-1),
        "target_rank": (layers[..., None, :] > t_logit[..., None]).sum(-1) + 1,
        "target_prob": logp.gather(-1, idx).exp(),
        "next_token_ce": torch.where(next_ids[None] >= 0, ce, torch.full_like(ce, float("nan"))),
    }


def _run(layers: torch.Tensor, final: torch.Tensor, target: torch.Tensor, next_ids: torch.Tensor,
         k: int) -> dict[str, torch.Tensor]:
    return reduce_logits(layers.clone(), final_reference(final), target, next_ids, k)


def _assert_matches(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], layers: torch.Tensor) -> None:
    """Every statistic against the reference: ids, ranks, top-k values exact; the rest within the stated tolerance."""
    picked = layers.gather(-1, got["top_ids"])  # the chosen ids carry exactly the k largest logits, best first
    assert torch.equal(picked, ref["top_values"])
    assert (got["top_ids"].sort(-1).values.diff(dim=-1) > 0).all()  # k distinct ids, also among exact ties
    assert torch.equal(got["target_rank"], ref["target_rank"])
    for name in ("top_probs", "target_prob"):
        torch.testing.assert_close(got[name].double(), ref[name], rtol=1e-4, atol=1e-12, msg=name)
    for name in ("entropy", "kl_to_final", "next_token_ce"):
        torch.testing.assert_close(got[name].double(), ref[name], rtol=0, atol=1e-4, equal_nan=True, msg=name)
    assert got["next_token_ce"][:, -1].isnan().all() and not got["next_token_ce"][:, :-1].isnan().any()


@pytest.mark.parametrize("block_rows", [8, 3, 1000])
def test_reduce_matches_log_softmax_reference(monkeypatch: pytest.MonkeyPatch, block_rows: int) -> None:
    """Fast and slow rank branches, ties, subnormal-range logits, a partial row block and the NaN at the end."""
    monkeypatch.setattr(core.lenses.reduce, "BLOCK_ROWS", block_rows)
    layers, final = _logits()
    target = _targets(layers, final)
    next_ids = torch.cat([torch.arange(1, N_POS) * 977, torch.tensor([-1])])
    got = _run(layers, final, target, next_ids, K)
    ref = _reference(layers, final, target, next_ids, K)
    # both rank branches really ran: targets at or above the k-th largest logit (read off the top k), and below it
    kth = ref["top_values"][..., -1:]  # [layer, pos, 1]
    deep = layers.gather(-1, target[None].expand(N_LAYER, -1, -1)) < kth
    assert deep.any() and (~deep).any() and (ref["target_rank"][~deep] > 1).any()
    assert ref["target_rank"][0, 0, 1] == 1 and ref["target_rank"][1, 2, 1] == K  # the tied targets
    assert (ref["target_rank"][deep] > 1000).any()  # deep in the ranking
    _assert_matches(got, ref, layers)


def test_ranks_from_the_top_k_equal_ranks_from_a_full_count() -> None:
    """k = 1 counts almost every rank over the vocabulary, k = 64 reads most off the top k: the same ranks."""
    layers, final = _logits(seed=1)
    target = torch.cat([_targets(layers, final), layers[2].topk(40).indices[:, 10:40:7]], -1)  # [pos, 8]
    next_ids = torch.full((N_POS,), 5)
    few, many = (_run(layers, final, target, next_ids, k) for k in (1, 64))
    assert torch.equal(few["target_rank"], many["target_rank"])
    assert torch.equal(few["target_rank"], _reference(layers, final, target, next_ids, 1)["target_rank"])
    for name in ("entropy", "kl_to_final", "target_prob"):
        torch.testing.assert_close(few[name], many[name], rtol=0, atol=0, msg=name)  # only the top k differs


def test_final_row_is_exactly_its_own_reference() -> None:
    """The model's output reduced against itself: KL exactly 0 and the final top-1's rank exactly 1."""
    _, final = _logits(seed=2)
    got = _run(final[None], final, final.argmax(-1, keepdim=True), torch.full((N_POS,), -1), K)
    assert (got["kl_to_final"] == 0).all()
    assert (got["target_rank"] == 1).all()
    assert got["next_token_ce"].isnan().all()


@pytest.mark.parametrize(("k", "block_path"), [(1, True), (K, True), (97, True), (98, False), (VOCAB, False)])
def test_top_k_values_are_exact_on_both_paths(k: int, block_path: bool) -> None:
    """Block maxima (n_blk > 4k) or a plain topk: the same values, best first, on ids that carry them."""
    layers, _ = _logits(seed=3)
    x = layers.reshape(-1, VOCAB)
    assert (VOCAB // core.lenses.reduce.TOP_BLOCK > 4 * k) == block_path
    values, ids = top_k(x, k)
    assert torch.equal(values, x.topk(k, -1).values)
    assert torch.equal(x.gather(1, ids), values)
    assert (ids.sort(-1).values.diff(dim=-1) > 0).all()


def test_top_k_finds_the_best_in_the_partial_block_and_among_equal_block_maxima() -> None:
    """The largest entries in the columns after the last whole block, and k blocks sharing one maximum."""
    x = torch.zeros(2, VOCAB)
    x[0, -3:] = torch.tensor([5.0, 7.0, 6.0])  # all in the partial block
    x[1, ::128] = 1.0  # every block's maximum is 1: any k of them hold the top k
    values, ids = top_k(x, 3)
    assert ids[0].tolist() == [VOCAB - 2, VOCAB - 1, VOCAB - 3] and values[0].tolist() == [7.0, 6.0, 5.0]
    assert values[1].tolist() == [1.0, 1.0, 1.0] and (ids[1] % 128 == 0).all()


def test_the_exp_floor_leaves_the_statistics_unchanged() -> None:
    """Logits ~400 below the max (subnormal exp) give the float64 reference's values: the floor moves nothing."""
    layers, final = _logits(seed=4)
    layers[:, :, ::2] -= 400
    target, next_ids = _targets(layers, final), torch.cat([torch.arange(N_POS - 1), torch.tensor([-1])])
    got = _run(layers, final, target, next_ids, K)
    assert (layers - layers.amax(-1, keepdim=True) < core.lenses.reduce.EXP_FLOOR).float().mean() > 0.4
    _assert_matches(got, _reference(layers, final, target, next_ids, K), layers)

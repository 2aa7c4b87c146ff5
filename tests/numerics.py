"""Comparing results of two computations that may round differently.

Two kinds of comparison, and a test must say which one it makes:

* **The same computation** (same inputs, same shapes, same code path: a concurrent vs a sequential trace of
  one prompt, a cached result vs the result it cached, one (layer, position) row read by a fixed call
  pattern however the caller grouped the rows): exact equality, ``torch.equal`` / ``np.array_equal``.
* **Different computations** (another chunk or batch shape, batched vs unbatched, a hook route vs the
  model's own forward, float32 vs a float64 reference, CPU vs CUDA, AMD AVX2 vs Intel AVX-512/AMX
  kernels): values compare with a stated tolerance, and an id or rank chosen by comparing logits is only
  checked up to near-ties: candidates whose logits lie within :func:`logit_tol` of each other are ties.

Near-tie tolerance: float32 logits computed by products of two shapes differ by ~2e-6 of the logits'
scale (measured on the AMD kind: rows of a [1, 576] x [576, 49152] product of N(0, 1) values vs the same
rows inside a [640, 576] product differ by up to 5e-5 at |z| ~ 24). :func:`logit_tol` allows 10x that,
relative to each row's largest |logit| (``LOGIT_RTOL``), with an absolute floor (``LOGIT_ATOL``): far
below the gaps that decide anything a page shows, and tight enough that the bounds pin almost every rank.
"""

from __future__ import annotations

import numpy as np
import torch

LOGIT_RTOL = 2e-5
LOGIT_ATOL = 1e-6


def _t(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def logit_tol(logits, rtol: float = LOGIT_RTOL, atol: float = LOGIT_ATOL) -> torch.Tensor:
    """[..., vocab] logits -> [..., 1] the gap below which two of a row's logits count as tied."""
    return (rtol * _t(logits).double().abs().amax(-1, keepdim=True)).clamp_min(atol)


def rank_bounds(logits, target_ids, rtol: float = LOGIT_RTOL) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., vocab] reference logits, [..., target] ids -> the ranks the target may have up to near-ties.

    lo = 1 + #(tokens clearly above the target), hi = #(tokens not clearly below it, the target included).
    """
    logits, target_ids = _t(logits).double(), _t(target_ids).long()
    t = logits.gather(-1, target_ids)[..., None]  # [..., target, 1]
    tol = logit_tol(logits, rtol)[..., None]  # [..., 1, 1]
    lo = 1 + (logits[..., None, :] > t + tol).sum(-1)
    hi = (logits[..., None, :] > t - tol).sum(-1)
    return lo, hi


def assert_ranks_within_ties(ranks, logits, target_ids, rtol: float = LOGIT_RTOL) -> None:
    """Every rank (1 = best) lies between the bounds that near-ties in ``logits`` allow."""
    lo, hi = rank_bounds(logits, target_ids, rtol)
    ranks = _t(ranks).long()
    bad = ~((lo <= ranks) & (ranks <= hi))
    assert not bad.any(), f"{int(bad.sum())} ranks outside their near-tie bounds, e.g. rank {ranks[bad][:5].tolist()} " \
                          f"for bounds {lo[bad][:5].tolist()}..{hi[bad][:5].tolist()}"


def assert_top1_within_ties(ids, logits, rtol: float = LOGIT_RTOL) -> None:
    """[...] chosen ids are each an argmax of the [..., vocab] reference ``logits`` up to near-ties."""
    logits, ids = _t(logits).double(), _t(ids).long()
    gap = logits.amax(-1, keepdim=True) - logits.gather(-1, ids[..., None])  # [..., 1]
    tol = logit_tol(logits, rtol)
    assert (gap <= tol).all(), f"a chosen id is {float((gap - tol).max()):.3g} beyond its near-tie tolerance"


def assert_top_k_within_ties(top_ids, logits, rtol: float = LOGIT_RTOL) -> None:
    """[..., k] ids, best first, are the k largest of the reference ``logits`` up to near-ties.

    Each chosen id's logit is within the near-tie tolerance of the reference's value at its slot, so ids
    may swap only with tokens whose logits are that close.
    """
    logits, top_ids = _t(logits).double(), _t(top_ids).long()
    k = top_ids.shape[-1]
    chosen = logits.gather(-1, top_ids)  # [..., k]
    best = logits.topk(k, dim=-1).values  # [..., k]
    gap = (chosen - best).abs() - logit_tol(logits, rtol)
    assert (gap <= 0).all(), f"a top-k slot is {float(gap.max()):.3g} beyond its near-tie tolerance"
    assert (top_ids.sort(-1).values.diff(dim=-1) != 0).all(), "a top-k list repeats an id"


def top1_saturation_bounds(logits, final_ids, rtol: float = LOGIT_RTOL) -> tuple[torch.Tensor, torch.Tensor]:
    """[layer, pos, vocab] reference logits, [pos] chosen final top-1 ids -> (lo, hi) [pos]: the top-1
    saturation layers (first layer of the trailing run of layers whose top-1 is the final id; the last layer
    always counts as held) that near-ties (:func:`logit_tol`) in ``logits`` allow.

    lo = start of the trailing run where the final id may be the top-1 (not clearly below the row's max),
    hi = start of the trailing run where it is clearly the top-1 (every other token clearly below it).
    """
    logits, final = _t(logits).double(), _t(final_ids).long()
    n_layer = logits.shape[0]
    idx = final[None, :, None].expand(n_layer, -1, 1)
    tol = logit_tol(logits, rtol)[..., 0]  # [layer, pos]
    chosen = logits.gather(-1, idx)[..., 0]  # [layer, pos]
    others = logits.scatter(-1, idx, float("-inf")).amax(-1)  # [layer, pos] the best of the other tokens
    maybe = chosen >= logits.amax(-1) - tol
    surely = chosen > others + tol
    maybe[-1] = True  # the final id is the last layer's top-1 by definition
    surely[-1] = True

    def trailing_start(mask: torch.Tensor) -> torch.Tensor:
        return n_layer - mask.flip(0).long().cumprod(0).sum(0)

    return trailing_start(maybe), trailing_start(surely)


def assert_top1_saturation_within_ties(sat, final_ids, logits, rtol: float = LOGIT_RTOL) -> None:
    """[pos] top-1 saturation layers and [pos] final top-1 ids, read by a computation other than the one that
    made the [layer, pos, vocab] reference ``logits``: the final ids are argmaxes of the reference's last layer
    up to near-ties, and each saturation layer lies between the bounds that near-ties allow."""
    assert_top1_within_ties(final_ids, _t(logits)[-1], rtol)
    lo, hi = top1_saturation_bounds(logits, final_ids, rtol)
    sat = _t(sat).long()
    bad = ~((lo <= sat) & (sat <= hi))
    assert not bad.any(), f"{int(bad.sum())} saturation layers outside their near-tie bounds, e.g. " \
                          f"{sat[bad][:5].tolist()} for bounds {lo[bad][:5].tolist()}..{hi[bad][:5].tolist()}"


def assert_same_greedy(ids_a, ids_b, logits_after, rtol: float = LOGIT_RTOL) -> None:
    """Two greedy decodings of one prompt (different computations: with and without a cache, another library's
    ``generate``) agree token for token up to their first difference, and a difference may only come where the
    reference logits of the shared prefix (``logits_after(prefix_ids) -> [vocab]``) make both tokens an argmax up to
    near-ties; after it the sequences may part ways (each continues its own choice)."""
    a, b = [int(x) for x in _t(ids_a)], [int(x) for x in _t(ids_b)]
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            assert_top1_within_ties(torch.tensor([x, y]), logits_after(torch.tensor(a[:k])).expand(2, -1), rtol)
            return
    assert len(a) == len(b), f"one greedy decoding stops where the other goes on ({len(a)} vs {len(b)} tokens)"

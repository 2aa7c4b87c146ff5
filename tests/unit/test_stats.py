"""``core.lenses.stats.lens_stats`` against a plain unchunked reference, and its memory bound."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pytest
import torch
from numerics import assert_ranks_within_ties, assert_top1_within_ties, assert_top_k_within_ties, rank_bounds

import core.lenses.reduce
import core.lenses.stats
from core.lenses.stats import LensStats, lens_stats
from core.model.session import ModelSession, Trace

SessionFactory = Callable[..., ModelSession]
LONG_PROMPT = (
    "The capital of France is Paris. The capital of Italy is Rome, and the capital of Spain is Madrid. "
    "The quick brown fox jumps over the lazy dog. Zebras quietly juggle xylophones near Quebec, "
    "and the capital of France is"
)


@dataclass(frozen=True)
class Reference:
    """Full [layer, pos, vocab] logits and log-probabilities of the logit lens, computed in one go.

    One product over every row at once: a *different* computation from the tiled statistics, so ids and
    ranks compare up to near-ties (``numerics.LOGIT_ATOL``) and values with stated tolerances.
    """

    logits: torch.Tensor  # [layer, pos, vocab] float64 of the float32 logits
    logp: torch.Tensor  # [layer, pos, vocab]
    final_logits: torch.Tensor  # [pos, vocab]
    final_logp: torch.Tensor  # [pos, vocab]


def reference(session: ModelSession, trace: Trace, layers: Sequence[int]) -> Reference:
    a = session.adapter
    with torch.no_grad():
        logits = a.unembed(a.final_norm(trace.resid)).double()  # [layer+1, pos, vocab]
    logp = torch.log_softmax(logits, -1)
    return Reference(logits=logits[list(layers)], logp=logp[list(layers)], final_logits=logits[-1],
                     final_logp=logp[-1])


def assert_matches_reference(stats: LensStats, ref: Reference, trace: Trace, targets: np.ndarray | None,
                             top_k: int, tight: float = 0.9) -> None:
    """Every statistic equals the unchunked reference: values within tolerance, ids and ranks up to near-ties.

    ``targets`` None: the default targets, which must be the final layer's top-1 (up to near-ties).
    ``tight``: the share of ranks that the near-tie bounds must pin exactly (so the rank check has teeth).
    """
    probs = ref.logp.exp()  # [layer, pos, vocab]
    n_layer, n_pos, vocab = probs.shape
    assert stats.top_ids.shape == (n_layer, n_pos, top_k)
    # top-k: the chosen ids carry the reported probabilities, and those are the k largest
    assert_top_k_within_ties(stats.top_ids, ref.logits)
    picked = probs.gather(-1, torch.from_numpy(stats.top_ids))
    np.testing.assert_allclose(stats.top_probs, picked.numpy(), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(stats.top_probs, probs.topk(top_k, -1).values.numpy(), rtol=1e-3, atol=1e-6)
    assert (np.diff(stats.top_probs, axis=-1) <= 1e-7).all()
    entropy = -(probs * ref.logp).sum(-1)
    np.testing.assert_allclose(stats.entropy, entropy.numpy(), rtol=1e-4, atol=1e-4)
    final_p = ref.final_logp.exp()
    kl = (final_p * (ref.final_logp - ref.logp)).sum(-1)
    np.testing.assert_allclose(stats.kl_to_final, kl.numpy(), rtol=1e-3, atol=1e-4)
    # targets
    if targets is None:
        assert stats.target_ids.shape == (n_pos, 1)
        assert_top1_within_ties(stats.target_ids[:, 0], ref.final_logits)
        targets = stats.target_ids
    else:
        assert (stats.target_ids == targets).all()  # exact: ids given by the caller
    t_idx = torch.from_numpy(targets)[None].expand(n_layer, -1, -1)  # [layer, pos, target]
    t_logp = ref.logp.gather(-1, t_idx)
    np.testing.assert_allclose(stats.target_prob, t_logp.exp().numpy(), rtol=1e-3, atol=1e-6)
    assert_ranks_within_ties(stats.target_rank, ref.logits, t_idx)
    lo, hi = rank_bounds(ref.logits, t_idx)
    assert (lo == hi).float().mean() > tight  # the bounds pin most ranks exactly
    # next-token cross-entropy
    nxt = trace.input_ids[1:]
    ce = -ref.logp[:, :-1].gather(-1, nxt[None, :, None].expand(n_layer, -1, 1))[..., 0]
    np.testing.assert_allclose(stats.next_token_ce[:, :-1], ce.numpy(), rtol=1e-4, atol=1e-4)
    assert np.isnan(stats.next_token_ce[:, -1]).all()


@pytest.fixture(scope="module")
def llama_session(make_session: SessionFactory) -> ModelSession:
    return make_session("llama")


@pytest.fixture(scope="module")
def long_trace(llama_session: ModelSession) -> Trace:
    trace = llama_session.trace(LONG_PROMPT)
    return trace


@pytest.mark.parametrize(("call_mb", "tile"), [(0, 16), (0.05, 128), (1, 16), (64, 128)])
def test_default_targets_match_reference(llama_session: ModelSession, long_trace: Trace, monkeypatch: pytest.MonkeyPatch,
                                         call_mb: float, tile: int) -> None:
    """Any call size (one layer per call at 0) and position tile (16: several tiles) gives the reference."""
    monkeypatch.setattr(core.lenses.reduce, "CALL_MB", call_mb)
    monkeypatch.setattr(core.lenses.reduce, "POS_TILE", tile)
    assert len(core.lenses.reduce.position_tiles(long_trace.n_pos)) > (1 if tile == 16 else 0)
    stats = lens_stats(llama_session, long_trace, top_k=7)
    layers = list(range(long_trace.n_layers + 1))
    ref = reference(llama_session, long_trace, layers)
    assert stats.layers.tolist() == layers and stats.lens == "logit"
    assert_matches_reference(stats, ref, long_trace, None, top_k=7)
    last = stats.layer_row(long_trace.n_layers)
    assert (stats.target_rank[last] == 1).all()  # exact: target and last row are the same logits
    assert np.abs(stats.kl_to_final[last]).max() < 1e-5
    assert (stats.kl_to_final >= 0).all()
    assert stats.kl_to_final[:last].max() > 1e-3  # earlier layers really differ


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "opt"])
@pytest.mark.parametrize("call_mb", [0, 64])
def test_other_families_match_reference(make_session: SessionFactory, monkeypatch: pytest.MonkeyPatch, arch: str,
                                        call_mb: int) -> None:
    monkeypatch.setattr(core.lenses.reduce, "CALL_MB", call_mb)
    session = make_session(arch)
    trace = session.trace("The capital of Italy is Rome, and the capital of Spain is")
    stats = lens_stats(session, trace, top_k=4)
    ref = reference(session, trace, range(trace.n_layers + 1))
    assert_matches_reference(stats, ref, trace, None, top_k=4)
    assert (stats.target_rank[-1] == 1).all()  # exact: target and last row are the same logits


def test_explicit_targets_and_layer_subset(llama_session: ModelSession, long_trace: Trace) -> None:
    tok = llama_session.tokenizer
    targets = [tok(" Paris", add_special_tokens=False).input_ids[0], 5, llama_session.adapter.d_vocab - 1]
    layers = [3, 0, 2, 2]
    stats = lens_stats(llama_session, long_trace, top_k=3, targets=targets, layers=layers)
    assert stats.layers.tolist() == [0, 2, 3]
    assert stats.layer_row(2) == 1
    with pytest.raises(ValueError, match="not computed"):
        stats.layer_row(1)
    ref = reference(llama_session, long_trace, [0, 2, 3])
    expected_targets = np.tile(np.asarray(targets), (long_trace.n_pos, 1))
    assert_matches_reference(stats, ref, long_trace, expected_targets, top_k=3)
    assert stats.target_rank.shape == (3, long_trace.n_pos, 3)
    assert not (stats.target_rank == 1).all()


def test_kl_is_zero_at_last_layer_and_nonnegative(make_session: SessionFactory) -> None:
    session = make_session("gpt2")
    trace = session.trace("Paris is a city in France; Rome is a city in Italy.")
    stats = lens_stats(session, trace)
    assert (stats.kl_to_final >= 0).all()
    assert np.abs(stats.kl_to_final[-1]).max() < 1e-5
    assert np.isfinite(stats.entropy).all() and (stats.entropy > 0).all()
    assert (stats.entropy <= np.log(session.adapter.d_vocab) + 1e-4).all()


def test_top_k_is_clamped_to_vocab(make_session: SessionFactory) -> None:
    session = make_session("gpt2")
    trace = session.trace("fox dog")
    stats = lens_stats(session, trace, top_k=10**6)
    assert stats.top_ids.shape[-1] == session.adapter.d_vocab
    np.testing.assert_allclose(stats.top_probs.sum(-1), 1.0, rtol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": [0, 4]}, "Layers must lie"),
        ({"layers": [-1]}, "Layers must lie"),
        ({"layers": []}, "Layers must lie"),
        ({"targets": []}, "at least one target"),
        ({"targets": [10**6]}, "Target token ids"),
        ({"targets": [-1]}, "Target token ids"),
    ],
)
def test_bad_inputs_raise_value_error(make_session: SessionFactory, kwargs: dict, message: str) -> None:
    session = make_session("llama")
    trace = session.trace("fox dog")
    with pytest.raises(ValueError, match=message):
        lens_stats(session, trace, **kwargs)


BIG_VOCAB = 50_000
BigVocabCase = tuple[ModelSession, Trace, LensStats]


@pytest.fixture(scope="module")
def big_vocab_case(make_session: SessionFactory) -> BigVocabCase:
    """A tiny model with a 50k vocabulary fed ids directly, its trace and its stats (default call size)."""
    session = make_session("llama", vocab_size=BIG_VOCAB, num_hidden_layers=4)
    ids = torch.randint(0, BIG_VOCAB, (40,), generator=torch.Generator().manual_seed(1))
    trace = session.trace(ids)
    return session, trace, lens_stats(session, trace, top_k=5)


@dataclass
class Spy:
    """What lens_stats computed: the shape of every logits call and of every chunk it reduced."""

    calls: list[tuple[int, ...]]  # [rows, vocab] per unembedding call, in order
    chunks: list[tuple[int, ...]]  # [layer, pos, vocab] per reduced chunk


def _spy(monkeypatch: pytest.MonkeyPatch, session: ModelSession) -> Spy:
    spy = Spy(calls=[], chunks=[])
    real_unembed, real_reduce = session.adapter.unembed, core.lenses.reduce.reduce_logits

    def unembed(normed: torch.Tensor) -> torch.Tensor:
        out = real_unembed(normed)
        spy.calls.append((int(np.prod(out.shape[:-1])), out.shape[-1]))
        return out

    def reduce(logits, *args):
        spy.chunks.append(tuple(logits.shape))
        return real_reduce(logits, *args)

    monkeypatch.setattr(session.adapter, "unembed", unembed)
    monkeypatch.setattr(core.lenses.reduce, "reduce_logits", reduce)
    return spy


@pytest.mark.parametrize("call_mb", [0, 4, 16])
def test_memory_stays_within_the_call_size(big_vocab_case: BigVocabCase, monkeypatch: pytest.MonkeyPatch,
                                           call_mb: int) -> None:
    session, trace, whole = big_vocab_case
    full = (trace.n_layers + 1) * trace.n_pos * BIG_VOCAB  # 5 x 40 x 50000 = 10M floats
    call_elems = call_mb * 2**20 // 4  # float32 logits of one call
    assert full > call_elems
    tile = min(trace.n_pos, core.lenses.reduce.POS_TILE)
    monkeypatch.setattr(core.lenses.reduce, "CALL_MB", call_mb)
    spy = _spy(monkeypatch, session)
    stats = lens_stats(session, trace, top_k=5)
    assert spy.chunks and all(s[-1] == BIG_VOCAB for s in spy.chunks)
    numels = [int(np.prod(s)) for s in spy.chunks]
    assert max(numels) <= max(call_elems, tile * BIG_VOCAB)  # one layer of one position tile is the floor
    assert full not in numels
    # every (layer, position) row was unembedded exactly once (the final layer's rows serve as the target too)
    assert sum(rows for rows, _ in spy.calls) == (trace.n_layers + 1) * trace.n_pos
    assert max(rows for rows, _ in spy.calls) * BIG_VOCAB <= max(call_elems, tile * BIG_VOCAB)
    # another call size is another computation: ids and ranks up to near-ties, values within tolerance
    ref = reference(session, trace, range(trace.n_layers + 1))
    # 50,000 random logits of one scale crowd each other: the bounds pin 70 % of these ranks (measured)
    assert_matches_reference(stats, ref, trace, None, top_k=5, tight=0.6)
    for name in ("top_probs", "entropy", "kl_to_final", "target_prob", "next_token_ce"):
        np.testing.assert_allclose(getattr(stats, name), getattr(whole, name), rtol=1e-4, atol=1e-6)
    assert (stats.target_rank[-1] == 1).all()  # exact: by construction


def test_memory_spy_sees_a_whole_tensor_when_the_call_size_allows(big_vocab_case: BigVocabCase,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The spy is not blind: with a huge call size one call reads every earlier layer x position."""
    session, trace, _ = big_vocab_case
    monkeypatch.setattr(core.lenses.reduce, "CALL_MB", 10_000)
    spy = _spy(monkeypatch, session)
    lens_stats(session, trace, top_k=5)
    assert spy.chunks == [(trace.n_layers, trace.n_pos, BIG_VOCAB), (1, trace.n_pos, BIG_VOCAB)]


def test_rows_do_not_depend_on_the_layers_asked_for(big_vocab_case: BigVocabCase) -> None:
    """A layer subset reads whole groups: its rows are the full run's rows (exact: the same calls)."""
    session, trace, whole = big_vocab_case
    subset = [1, 3, 4]
    stats = lens_stats(session, trace, top_k=5, layers=subset)
    for name in ("top_ids", "target_rank", "top_probs", "entropy", "kl_to_final"):
        assert np.array_equal(getattr(stats, name), getattr(whole, name)[subset]), name


def _shape_sensitive_unembed(monkeypatch: pytest.MonkeyPatch, session: ModelSession, scale: float) -> None:
    """Make the unembedding round like a kernel that depends on the product's shape: each call adds
    ``scale`` x sin(the call's row count) x a fixed random vector over the vocabulary.
    A row computed in calls of two different shapes then gets different logits, as on CPUs whose matrix
    kernels round [1, d] and [40, d] products differently; the same call shape gives the same logits."""
    real = session.adapter.unembed
    noise = torch.randn(session.adapter.d_vocab, generator=torch.Generator().manual_seed(7))

    def unembed(normed: torch.Tensor) -> torch.Tensor:
        rows = int(np.prod(normed.shape[:-1]))
        return real(normed) + scale * math.sin(rows) * noise

    monkeypatch.setattr(session.adapter, "unembed", unembed)


@pytest.mark.parametrize(("call_mb", "tile"), [(0, 16), (1, 16), (64, 16), (64, 128)])
def test_final_rank_and_subsets_under_a_shape_sensitive_kernel(
        big_vocab_case: BigVocabCase, monkeypatch: pytest.MonkeyPatch, call_mb: int, tile: int) -> None:
    """The root cause of the Intel failure, reproduced on any CPU: the final layer's rank of its own top-1 is
    exactly 1, and rows do not change with the layers asked for, even when every matrix-product shape rounds
    differently. (The previous code took the target from a separate final-layer product of another shape:
    under this kernel its final ranks were not all 1 and its ranks changed with the memory budget.)"""
    session, trace, _ = big_vocab_case
    monkeypatch.setattr(core.lenses.reduce, "POS_TILE", tile)  # 16: three position tiles over 40 positions
    monkeypatch.setattr(core.lenses.reduce, "CALL_MB", call_mb)
    _shape_sensitive_unembed(monkeypatch, session, scale=0.5)
    stats = lens_stats(session, trace, top_k=5)
    assert (stats.target_rank[-1] == 1).all()  # exact: by construction
    assert np.abs(stats.kl_to_final[-1]).max() < 1e-5
    subset = lens_stats(session, trace, top_k=5, layers=[0, 2, 4])
    for name in ("top_ids", "target_ids", "target_rank"):  # exact: same calls, same shapes
        assert np.array_equal(getattr(subset, name), getattr(stats, name)[[0, 2, 4]] if name != "target_ids"
                              else stats.target_ids), name


def test_the_shape_sensitive_kernel_does_flip_near_ties(big_vocab_case: BigVocabCase,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The test above is not blind: under the fake kernel, the same final-layer rows read by products of two
    shapes (one row at a time vs all 40 positions at once) give different top-1 ids somewhere."""
    session, trace, _ = big_vocab_case
    _shape_sensitive_unembed(monkeypatch, session, scale=0.5)
    a = session.adapter
    with torch.no_grad():
        one_by_one = torch.cat([a.unembed(a.final_norm(trace.resid[-1, p:p + 1])) for p in range(trace.n_pos)])
        together = a.unembed(a.final_norm(trace.resid[-1]))
    assert (one_by_one.argmax(-1) != together.argmax(-1)).any()


def test_big_vocab_ids_beyond_the_tokenizer(big_vocab_case: BigVocabCase) -> None:
    session, trace, _ = big_vocab_case
    assert len(session.tokenizer) < BIG_VOCAB
    assert len(session.vocab_strings()) == BIG_VOCAB
    assert session.vocab_strings()[-1] == f"<unused {BIG_VOCAB - 1}>"
    assert len(trace.tokens) == trace.n_pos == 40


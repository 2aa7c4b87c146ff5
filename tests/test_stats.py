"""``core.stats.lens_stats`` against a plain unchunked reference, and its memory bound."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pytest
import torch

import core.stats
from core.stats import LensStats, lens_stats
from core.trace import ModelSession, Trace

SessionFactory = Callable[..., ModelSession]
LONG_PROMPT = (
    "The capital of France is Paris. The capital of Italy is Rome, and the capital of Spain is Madrid. "
    "The quick brown fox jumps over the lazy dog. Zebras quietly juggle xylophones near Quebec, "
    "and the capital of France is"
)


@dataclass(frozen=True)
class Reference:
    """Full [layer, pos, vocab] log-probabilities of the logit lens, computed in one go (float64)."""

    logp: torch.Tensor  # [layer, pos, vocab]
    final_logp: torch.Tensor  # [pos, vocab]


def reference(session: ModelSession, trace: Trace, layers: Sequence[int]) -> Reference:
    a = session.adapter
    with torch.no_grad():
        logits = a.unembed(a.final_norm(trace.resid)).double()  # [layer+1, pos, vocab]
    logp = torch.log_softmax(logits, -1)
    return Reference(logp=logp[list(layers)], final_logp=logp[-1])


def assert_matches_reference(stats: LensStats, ref: Reference, trace: Trace, targets: np.ndarray,
                             top_k: int) -> None:
    """Every statistic equals the unchunked reference (tie-tolerant where float order can differ)."""
    probs = ref.logp.exp()  # [layer, pos, vocab]
    n_layer, n_pos, vocab = probs.shape
    assert stats.top_ids.shape == (n_layer, n_pos, top_k)
    # top-k: the chosen ids carry the reported probabilities, and those are the k largest
    picked = probs.gather(-1, torch.from_numpy(stats.top_ids))
    np.testing.assert_allclose(stats.top_probs, picked.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(stats.top_probs, probs.topk(top_k, -1).values.numpy(), rtol=1e-4, atol=1e-7)
    assert (np.diff(stats.top_probs, axis=-1) <= 1e-7).all()
    entropy = -(probs * ref.logp).sum(-1)
    np.testing.assert_allclose(stats.entropy, entropy.numpy(), rtol=1e-4, atol=1e-5)
    final_p = ref.final_logp.exp()
    kl = (final_p * (ref.final_logp - ref.logp)).sum(-1)
    np.testing.assert_allclose(stats.kl_to_final, kl.numpy(), rtol=1e-3, atol=1e-5)
    # targets
    assert stats.target_ids.shape == targets.shape
    assert (stats.target_ids == targets).all()
    t_idx = torch.from_numpy(targets)[None].expand(n_layer, -1, -1)  # [layer, pos, target]
    t_logp = ref.logp.gather(-1, t_idx)
    np.testing.assert_allclose(stats.target_prob, t_logp.exp().numpy(), rtol=1e-4, atol=1e-7)
    eps = 1e-5  # float32 vs float64: ranks may only differ among near-ties
    lo = 1 + (ref.logp[..., None, :] > t_logp[..., None] + eps).sum(-1)  # [layer, pos, target]
    hi = (ref.logp[..., None, :] > t_logp[..., None] - eps).sum(-1)  # the target itself is one of these
    rank = torch.from_numpy(stats.target_rank)
    assert ((lo <= rank) & (rank <= hi)).all()
    assert (lo == hi).float().mean() > 0.9  # the bounds are tight almost everywhere
    # next-token cross-entropy
    nxt = trace.input_ids[1:]
    ce = -ref.logp[:, :-1].gather(-1, nxt[None, :, None].expand(n_layer, -1, 1))[..., 0]
    np.testing.assert_allclose(stats.next_token_ce[:, :-1], ce.numpy(), rtol=1e-4, atol=1e-5)
    assert np.isnan(stats.next_token_ce[:, -1]).all()


@pytest.fixture(scope="module")
def llama_session(make_session: SessionFactory) -> ModelSession:
    return make_session("llama")


@pytest.fixture(scope="module")
def long_trace(llama_session: ModelSession) -> Trace:
    trace = llama_session.trace(LONG_PROMPT)
    assert trace.n_pos > 64  # more than one position chunk at the default budget
    return trace


@pytest.mark.parametrize("budget_mb", [0, 0.05, 1, 256])
def test_default_targets_match_reference(llama_session: ModelSession, long_trace: Trace, budget_mb: float) -> None:
    stats = lens_stats(llama_session, long_trace, top_k=7, budget_mb=budget_mb)
    layers = list(range(long_trace.n_layers + 1))
    ref = reference(llama_session, long_trace, layers)
    assert stats.layers.tolist() == layers and stats.lens == "logit"
    final_top1 = ref.final_logp.argmax(-1)  # [pos]
    assert_matches_reference(stats, ref, long_trace, final_top1.numpy()[:, None], top_k=7)
    last = stats.layer_row(long_trace.n_layers)
    assert (stats.target_rank[last] == 1).all()
    assert np.abs(stats.kl_to_final[last]).max() < 1e-5
    assert (stats.kl_to_final >= 0).all()
    assert stats.kl_to_final[:last].max() > 1e-3  # earlier layers really differ


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "opt"])
@pytest.mark.parametrize("budget_mb", [0, 256])
def test_other_families_match_reference(make_session: SessionFactory, arch: str, budget_mb: int) -> None:
    session = make_session(arch)
    trace = session.trace("The capital of Italy is Rome, and the capital of Spain is")
    stats = lens_stats(session, trace, top_k=4, budget_mb=budget_mb)
    ref = reference(session, trace, range(trace.n_layers + 1))
    assert_matches_reference(stats, ref, trace, ref.final_logp.argmax(-1).numpy()[:, None], top_k=4)


def test_explicit_targets_and_layer_subset(llama_session: ModelSession, long_trace: Trace) -> None:
    tok = llama_session.tokenizer
    targets = [tok(" Paris", add_special_tokens=False).input_ids[0], 5, llama_session.adapter.d_vocab - 1]
    layers = [3, 0, 2, 2]
    stats = lens_stats(llama_session, long_trace, top_k=3, targets=targets, layers=layers, budget_mb=0.05)
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
    """A tiny model with a 50k vocabulary fed ids directly, its trace and its stats in one chunk."""
    session = make_session("llama", vocab_size=BIG_VOCAB, num_hidden_layers=4)
    ids = torch.randint(0, BIG_VOCAB, (40,), generator=torch.Generator().manual_seed(1))
    trace = session.trace(ids)
    return session, trace, lens_stats(session, trace, top_k=5, budget_mb=10_000)


def _spy_chunks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    real = core.stats._logits

    def spy(*args, **kwargs) -> torch.Tensor:
        out = real(*args, **kwargs)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(core.stats, "_logits", spy)
    return shapes


@pytest.mark.parametrize("budget_mb", [0, 4, 16])
def test_memory_stays_within_budget(big_vocab_case: BigVocabCase, monkeypatch: pytest.MonkeyPatch,
                                    budget_mb: int) -> None:
    session, trace, whole = big_vocab_case
    full = (trace.n_layers + 1) * trace.n_pos * BIG_VOCAB  # 5 x 40 x 50000 = 10M floats
    budget_elems = budget_mb * 2**20 // 16  # ~4 live float32 [.., vocab] tensors per chunk
    assert full > budget_elems
    shapes = _spy_chunks(monkeypatch)
    stats = lens_stats(session, trace, top_k=5, budget_mb=budget_mb)
    assert shapes and all(s[-1] == BIG_VOCAB for s in shapes)
    numels = [int(np.prod(s)) for s in shapes]
    assert max(numels) <= max(budget_elems, BIG_VOCAB)  # one [vocab] row is the floor
    assert full not in numels
    # every (layer, position) row was unembedded once, plus the final layer's rows once more
    assert sum(numels) // BIG_VOCAB == (trace.n_layers + 2) * trace.n_pos
    # chunking changes nothing
    for name in ("top_ids", "target_ids", "target_rank"):
        assert (getattr(stats, name) == getattr(whole, name)).all(), name
    for name in ("top_probs", "entropy", "kl_to_final", "target_prob", "next_token_ce"):
        np.testing.assert_allclose(getattr(stats, name), getattr(whole, name), rtol=1e-4, atol=1e-6)


def test_memory_spy_sees_a_whole_tensor_when_the_budget_allows(big_vocab_case: BigVocabCase,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The spy is not blind: with a huge budget the single chunk is layers x positions x vocab."""
    session, trace, _ = big_vocab_case
    shapes = _spy_chunks(monkeypatch)
    lens_stats(session, trace, top_k=5, budget_mb=10_000)
    assert (trace.n_layers + 1, trace.n_pos, BIG_VOCAB) in shapes


def test_big_vocab_ids_beyond_the_tokenizer(big_vocab_case: BigVocabCase) -> None:
    session, trace, _ = big_vocab_case
    assert len(session.tokenizer) < BIG_VOCAB
    assert len(session.vocab_strings()) == BIG_VOCAB
    assert session.vocab_strings()[-1] == f"<unused {BIG_VOCAB - 1}>"
    assert len(trace.tokens) == trace.n_pos == 40


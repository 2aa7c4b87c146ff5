"""Batched traces (core.model.batch) against one-at-a-time traces on every tiny architecture.

Batched and unbatched passes are different computations (other GEMM shapes, a mask): residuals compare within
float32 tolerances (RTOL, ATOL below) and lens top-1 ids within near-ties (tests/numerics.py).
"""

from __future__ import annotations

from types import SimpleNamespace

import diskcache
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ARCHS
from numerics import assert_top1_within_ties, assert_top_k_within_ties

from core.analyses.attention_mlp import prompts as amlp_prompts
from core.analyses.attention_mlp.passes import neuron_acts
from core.analyses.depth import pos
from core.analyses.depth.facts import teacher_force, teacher_force_batch
from core.analyses.depth.frequency import frequency_section, random_prefixes
from core.analyses.depth.options import options_section
from core.analyses.depth.pos import pos_section
from core.analyses.extraction import extraction_rows
from core.analyses.topk import collect as topk_collect
from core.lenses import training
from core.lenses.logit import LogitLens
from core.lenses.patchscope import question_patchscope
from core.lenses.stats import output_logits
from core.lenses.training import collect_residuals, mean_kl_by_layer
from core.model import batch as batch_mod
from core.model.batch import iter_traces, pad_right, plan_batches, token_budget, trace_batch

RTOL, ATOL = 1e-4, 1e-5
"""float32 residuals of a batched vs an unbatched pass: a few ulps per block, 3 tiny blocks of width 48."""
LENGTHS = (3, 7, 12)


def _ids(session, lengths=LENGTHS, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(1, session.adapter.d_vocab, (n,), generator=generator) for n in lengths]


# -- planning and padding ------------------------------------------------------------------------------------------
def test_plan_batches_partitions_longest_first_under_budget() -> None:
    lengths = [5, 12, 3, 12, 7, 40]
    batches = plan_batches(lengths, budget=24)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [5]  # longer than the budget: a batch of its own
    assert batches[1] == [1, 3]  # the two 12s (ties in input order), 2 x 12 = 24 tokens
    for b in batches[1:]:
        assert len(b) * max(lengths[i] for i in b) <= 24
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat, reverse=True)


def test_pad_right_positions_and_mask() -> None:
    ids, mask, positions = pad_right([torch.tensor([4, 5, 6]), torch.tensor([7])], pad_id=0)
    assert ids.tolist() == [[4, 5, 6], [7, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert positions.tolist() == [[0, 1, 2], [0, 1, 2]]


def test_token_budget_follows_the_memory_budget(make_session) -> None:
    session = make_session("llama")
    per_token = 4 * (session.adapter.n_layers + 1) * session.adapter.d_model
    assert token_budget(session, memory_bytes=100 * per_token) == 100
    assert token_budget(session, ("mlp_out",), memory_bytes=100 * per_token) < 100
    assert token_budget(session, memory_bytes=1 << 40) == batch_mod.MAX_CPU_BATCH_TOKENS  # a CPU session


# -- equality with one-at-a-time passes ---------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_batched_residuals_equal_unbatched(make_session, arch: str) -> None:
    session = make_session(arch)
    seqs = _ids(session)
    batched = trace_batch(session, seqs, budget=10_000)  # one batch: 3, 7 and 12 tokens padded to 12
    for seq, got in zip(seqs, batched):
        ref = session.trace(seq)
        assert got.resid.shape == ref.resid.shape  # real positions only
        assert torch.equal(got.input_ids, seq)  # exact: the ids themselves
        torch.testing.assert_close(got.resid, ref.resid, rtol=RTOL, atol=ATOL)
        ref_logits = output_logits(session.adapter, ref.resid[-1])  # [pos, vocab]
        got_top1 = output_logits(session.adapter, got.resid[-1]).argmax(-1)  # [pos]
        assert_top1_within_ties(got_top1, ref_logits)


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_sites_equal_unbatched(make_session, arch: str) -> None:
    session = make_session(arch)
    capture = ("head_z", "attn_out", "mlp_out", "neurons")
    seqs = _ids(session, seed=1)
    for seq, got in zip(seqs, trace_batch(session, seqs, capture=capture, budget=10_000)):
        ref = session.trace(seq, capture=capture)
        for name in capture:
            torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=RTOL, atol=ATOL)


def test_batch_of_one_equals_unbatched(make_session) -> None:
    session = make_session("gpt2")
    seq = _ids(session, (9,))[0]
    (got,) = trace_batch(session, [seq])
    # a different call (an explicit all-ones mask and position ids): compared within tolerance
    torch.testing.assert_close(got.resid, session.trace(seq).resid, rtol=RTOL, atol=ATOL)


def test_input_order_kept_across_several_batches(make_session) -> None:
    session = make_session("opt")
    seqs = _ids(session, (12, 3, 7, 12, 5), seed=2)
    seen: list[float] = []
    traces = trace_batch(session, seqs, budget=14, progress=lambda f, _m: seen.append(f))
    assert [t.n_pos for t in traces] == [12, 3, 7, 12, 5]
    assert seen[-1] == 1.0 and len(seen) >= 3  # several batches under a 14-token budget
    for seq, got in zip(seqs, traces):
        torch.testing.assert_close(got.resid, session.trace(seq).resid, rtol=RTOL, atol=ATOL)


def test_text_prompts_are_tokenized_like_trace(make_session) -> None:
    session = make_session("llama")
    texts = ["The capital of France is Paris.", "A transformer reads tokens."]
    for text, got in zip(texts, trace_batch(session, texts)):
        ref = session.trace(text)
        assert got.tokens == ref.tokens
        torch.testing.assert_close(got.resid, ref.resid, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_padding_token_never_matters(make_session, monkeypatch, arch: str) -> None:
    session = make_session(arch)
    seqs = _ids(session, seed=3)
    first = trace_batch(session, seqs, budget=10_000)
    monkeypatch.setattr(batch_mod, "_pad_id", lambda _s: session.adapter.d_vocab - 1)
    second = trace_batch(session, seqs, budget=10_000)
    for a, b in zip(first, second):
        torch.testing.assert_close(a.resid, b.resid, rtol=RTOL, atol=ATOL)


def test_bad_input_is_a_value_error(make_session) -> None:
    session = make_session("gpt2")
    with pytest.raises(ValueError, match="attention patterns"):
        trace_batch(session, ["hello"], capture=("attn_patterns",))
    with pytest.raises(ValueError, match="empty"):
        trace_batch(session, ["hello", "  "])
    with pytest.raises(ValueError, match="empty"):
        iter_traces(session, ["hello", ""])  # checked before any pass, without iterating
    assert trace_batch(session, []) == []


# -- converted analyses: batched vs the one-at-a-time passes they replaced ------------------------------------------
TEXTS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "A transformer reads tokens.",
    "The quick brown fox jumps over the lazy dog while the capital of Spain is Madrid, and Rome is in Italy.",
    "Layers after layers refine the prediction of the next token in the stream.",
    "Paris is a city in France.",
]


def _one_at_a_time(session, prompts, capture=(), budget=None, progress=None):
    """The reference: what the analyses ran before batching, one ``session.trace`` per prompt, in order."""
    for k, prompt in enumerate(prompts):
        yield k, session.trace(prompt, capture=capture)


@pytest.mark.parametrize("arch", ARCHS)
def test_extraction_batched_equals_one_at_a_time(make_session, monkeypatch, arch: str) -> None:
    session = make_session(arch)
    lenses = {"logit": LogitLens(session.adapter), "question": question_patchscope(session)}
    batched = extraction_rows(session, TEXTS, lenses, seed=2)
    monkeypatch.setattr(batch_mod, "iter_traces", _one_at_a_time)
    reference = extraction_rows(session, TEXTS, lenses, seed=2)
    keys = ["text", "position", "layer", "method"]
    pd.testing.assert_frame_equal(batched[keys], reference[keys])  # exact: the same seeded choices
    # tiny random models have no near-tie at these rows: the batched residuals (within 1e-6) keep every argmax
    assert (batched.correct == reference.correct).all()
    for column in ("surprisal_patched", "surprisal_original"):
        np.testing.assert_allclose(batched[column], reference[column], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "opt"])
def test_lens_residuals_batched_equal_one_at_a_time(make_session, monkeypatch, arch: str) -> None:
    session = make_session(arch)
    texts = TEXTS * 3
    batched = collect_residuals(session, texts, n_tokens=100, seq_len=16)
    kl = mean_kl_by_layer(session, LogitLens(session.adapter), TEXTS, 16)
    monkeypatch.setattr(training, "iter_traces", _one_at_a_time)
    reference = collect_residuals(session, texts, n_tokens=100, seq_len=16)
    assert batched.shape == reference.shape == (session.adapter.n_layers + 1, 100, session.adapter.d_model)
    torch.testing.assert_close(batched, reference, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(kl, mean_kl_by_layer(session, LogitLens(session.adapter), TEXTS, 16),
                               rtol=1e-4, atol=1e-6)


def test_lens_residuals_need_a_long_enough_text(make_session) -> None:
    with pytest.raises(ValueError, match="8 tokens"):
        collect_residuals(make_session("gpt2"), ["Hi."], n_tokens=10, seq_len=16)


@pytest.fixture
def fresh_results(monkeypatch, tmp_path):
    """An empty results store for Top-k records (so the test computes, then reads back)."""
    store = diskcache.Cache(str(tmp_path / "results"))
    monkeypatch.setattr(topk_collect, "results_cache", lambda: store)
    yield store
    store.close()


@pytest.mark.parametrize("arch", ARCHS)
def test_topk_records_batched_equal_one_at_a_time(make_session, fresh_results, arch: str) -> None:
    session = make_session(arch)
    texts = TEXTS[:4] + TEXTS[:1]  # different lengths, and a repeated text
    records = topk_collect.collect(session, texts, k=3, max_tokens=16)  # 16 cuts the longest text
    assert records[4] is records[0]  # one record per distinct text
    for text, got in zip(texts, records):
        ref = topk_collect.compute_record(session, text, 3, 16)
        np.testing.assert_array_equal(got.input_ids, ref.input_ids)  # exact: the same tokenizer call
        assert (got.n_tokens_original, got.first_pos) == (ref.n_tokens_original, ref.first_pos)
        ref_logits = output_logits(session.adapter, session.trace(torch.as_tensor(ref.input_ids)).resid[1:])
        assert_top_k_within_ties(torch.as_tensor(got.top_ids).long(), ref_logits)  # [layer, pos, k]
        np.testing.assert_allclose(got.top_probs, ref.top_probs, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got.cosine, ref.cosine, rtol=1e-5, atol=1e-5)


def test_topk_records_are_read_back_without_a_pass(make_session, fresh_results, monkeypatch) -> None:
    session = make_session("gpt2")
    first = topk_collect.collect(session, TEXTS[:3], k=2, max_tokens=16)

    def no_pass(*_args, **_kwargs):
        raise AssertionError("a cached record was traced again")

    monkeypatch.setattr(topk_collect, "iter_traces", no_pass)
    again = topk_collect.collect(session, TEXTS[:3], k=2, max_tokens=16)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.top_ids, b.top_ids)  # exact: the stored record itself
    with pytest.raises(ValueError):
        topk_collect.collect(session, TEXTS[:1], k=0, max_tokens=16)


# -- Depth sections -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def long_llama(make_session):
    """A tiny rotary model with a long context: the few-shot Depth prompts run to hundreds of tiny-BPE tokens."""
    return make_session("llama", max_position_embeddings=4096)


def _frames_close(a: pd.DataFrame, b: pd.DataFrame, float_columns: tuple[str, ...]) -> None:
    other = [c for c in a.columns if c not in float_columns]
    pd.testing.assert_frame_equal(a[other], b[other])  # labels, layers, ids: the same choices
    for column in float_columns:
        np.testing.assert_allclose(a[column].to_numpy(float), b[column].to_numpy(float), rtol=1e-4, atol=1e-6)


def test_depth_options_batched_equals_one_at_a_time(long_llama, monkeypatch) -> None:
    lens = LogitLens(long_llama.adapter)
    rows, summary = options_section(long_llama, lens, n=3, seed=1)
    monkeypatch.setattr(batch_mod, "iter_traces", _one_at_a_time)
    ref_rows, ref_summary = options_section(long_llama, lens, n=3, seed=1)
    _frames_close(rows, ref_rows, ("prob",))
    pd.testing.assert_frame_equal(summary, ref_summary)  # exact: no near-tie decides an option here


def test_depth_frequency_batched_equals_one_at_a_time(long_llama, monkeypatch) -> None:
    lens = LogitLens(long_llama.adapter)
    rows, shares, flips = frequency_section(long_llama, lens, n=6, seed=2)
    monkeypatch.setattr(batch_mod, "iter_traces", _one_at_a_time)
    ref_rows, ref_shares, ref_flips = frequency_section(long_llama, lens, n=6, seed=2)
    assert len(rows) == len(ref_rows) and rows.example.max() == 5
    for k, resid in enumerate(batch_mod.last_residuals(long_llama, random_prefixes(6, 2))):  # one at a time
        ref_logits = output_logits(long_llama.adapter, resid[:, 0])  # [layer+1, vocab] the logit lens
        assert_top1_within_ties(torch.tensor(rows[rows.example == k].guess.to_numpy(int)), ref_logits)
    # the buckets follow from the ids: equal wherever the ids are (no near-tie in these tiny-model rows)
    pd.testing.assert_frame_equal(rows, ref_rows)
    pd.testing.assert_frame_equal(shares, ref_shares)
    pd.testing.assert_frame_equal(flips, ref_flips)


def _fake_readout(prefix: list[int]) -> SimpleNamespace:
    return SimpleNamespace(final_id=sum(prefix) % 5, prefix=tuple(prefix))


def test_teacher_forcing_together_equals_one_by_one() -> None:
    prompts = [[1, 2], [3], [4, 4, 1], [2, 2], [0]]
    answers = [[3, 4, 0], [3], [4, 1], [1], [0, 0, 2]]
    alternatives = [{1}, set(), {0}, {1}, set()]
    calls: list[int] = []

    def step(prefixes):
        calls.append(len(prefixes))
        return [_fake_readout(p) for p in prefixes]

    together = teacher_force_batch(prompts, answers, alternatives, step)
    assert calls == [5, 3, 2]  # one call per answer token, over the examples still running
    for p, a, alt, got in zip(prompts, answers, alternatives, together):
        alone = teacher_force(p, a, alt, _fake_readout)
        assert [(num, r.prefix) for num, r in got] == [(num, r.prefix) for num, r in alone]
    assert sum(len(r) for r in together) > 0  # the fixture has correct tokens to record


def test_depth_pos_chunks_keep_the_one_at_a_time_choices(long_llama, monkeypatch) -> None:
    lens = LogitLens(long_llama.adapter)
    even = set(range(0, long_llama.adapter.d_vocab, 2))
    monkeypatch.setattr(pos, "_first_ids", lambda _session, _answer: even)  # about half the candidates "correct"
    rows, counts = pos_section(long_llama, lens, n=3, seed=1, max_tries=5)
    monkeypatch.setattr(pos, "CHUNK", 1)  # the sequential loop: one candidate, one pass at a time
    monkeypatch.setattr(batch_mod, "iter_traces", _one_at_a_time)
    ref_rows, ref_counts = pos_section(long_llama, lens, n=3, seed=1, max_tries=5)
    pd.testing.assert_frame_equal(counts, ref_counts)  # exact: the same candidates tried and kept
    assert (counts.tried > counts.kept).any() and (counts.kept > 0).all()  # both outcomes occurred
    _frames_close(rows, ref_rows, ("prob",))


# -- Attention -> MLP corpus scan -----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_window_peaks_batched_equal_one_pass_per_window(make_session, arch: str) -> None:
    session = make_session(arch)
    windows = amlp_prompts.corpus_windows(session, TEXTS, window=12)  # 12-token windows and shorter tails
    assert len({len(w) for w in windows}) > 1
    groups = {0: torch.tensor([0, 3, 5]), session.adapter.n_layers - 1: torch.tensor([1, 2])}
    peaks = amlp_prompts.window_peaks(session, windows, groups)
    for w, ids in enumerate(windows):
        acts = neuron_acts(session, ids, list(groups))  # the one-window pass the scan used to make
        for b, idx in groups.items():
            ref = acts[b][:, idx]  # [pos, n]
            torch.testing.assert_close(peaks[b][0][w], ref.max(0).values, rtol=RTOL, atol=ATOL)
            # the chosen position holds the max within tolerance (positions may swap only on near-ties)
            chosen = ref.gather(0, peaks[b][1][w][None])[0]  # [n]
            torch.testing.assert_close(chosen, ref.max(0).values, rtol=RTOL, atol=ATOL)


def test_scan_top_windows_batched_equals_one_at_a_time(make_session, monkeypatch) -> None:
    session = make_session("gpt2")
    windows = amlp_prompts.corpus_windows(session, TEXTS * 2, window=9)
    neurons = pd.DataFrame({"block": [1, 1, 3], "neuron": [2, 7, 4], "token_id": [5, 5, 6], "token": ["x", "x", "y"]})
    top = amlp_prompts.scan_top_windows(session, windows, neurons, top=3)

    def one_window_at_a_time(session, seqs, site, blocks, memory_bytes=0):
        for i, seq in enumerate(seqs):
            got = next(batch_mod.iter_site_captures(session, [seq], site, blocks))[1]
            yield i, got

    monkeypatch.setattr(amlp_prompts, "iter_site_captures", one_window_at_a_time)
    ref = amlp_prompts.scan_top_windows(session, windows, neurons, top=3)
    assert len(top) == 3 * 3
    _frames_close(top, ref, ("activation",))

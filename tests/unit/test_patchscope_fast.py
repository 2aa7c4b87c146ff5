"""Fast patchscopes (issue 14, part 3): the target prompt's prefix encoded once into a key/value cache, only the
last target token run per patched forward and only through the blocks after the patch, (layer, position) rows
batched under a memory budget; without a cache (nnsight), the whole target prompt per row.

The reference is the slow way, written here: per source position ONE forward of the whole target prompt, one
batch row per layer, each row patched at its layer's residual, last target position. It is a different
computation (other shapes, a cache), so values compare with a tolerance and top-1 ids up to near-ties
(:mod:`numerics`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ARCHS
from numerics import assert_top1_within_ties

import core.lenses.patchscope as patchscope_mod
import core.lenses.reduce as reduce_mod
from core.lenses.patchscope import (Patchscope, identity_patchscope, question_bare_patchscope, question_patchscope,
                                   sink_token)
from core.lenses.reduce import lens_chunks
from core.lenses.stats import lens_stats
from core.model.executors import LocalExecutor, NnsightExecutor, Pass, import_nnsight
from core.model.hooks import residual_patch

PROMPT = "The capital of France is Paris, and the capital of Italy is"
SCOPES = {"identity": identity_patchscope, "question": question_patchscope}
RTOL = 1e-4  # of the reference's largest |logit| (atol) and of each value (rtol): float32 rounding of other shapes


def slow_readings(session, target_ids: torch.Tensor, resid: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """[layer, pos, d_model] source residuals -> [layer, pos, vocab]: one forward of the whole target prompt per
    position, one row per layer, patched at the last target position (the implementation before the cache)."""
    n_target = target_ids.numel()
    out = []
    for p in range(resid.shape[1]):
        ids = target_ids[None].expand(len(layers), -1)
        patches = [residual_patch(layer, resid[i, p][None], position=n_target - 1, rows=(i,))
                   for i, layer in enumerate(layers)]
        out.append(session.run(Pass(ids, patches=patches, logits=True)).logits)  # [layer, vocab]
    return torch.stack(out, dim=1)


def assert_readings_close(got: torch.Tensor, want: torch.Tensor) -> None:
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=RTOL, atol=RTOL * scale)
    assert_top1_within_ties(got.argmax(-1), want)


def counting(monkeypatch, session) -> list[Pass]:
    """Record every Pass the session runs (the shared session's ``run`` is restored by monkeypatch)."""
    seen: list[Pass] = []
    run = session.run

    def counted(p: Pass):
        seen.append(p)
        return run(p)

    monkeypatch.setattr(session, "run", counted)
    return seen


class NoCacheExecutor(LocalExecutor):
    """The local executor, but one that hands no key/value cache on (as the nnsight executors)."""

    kv_cache = False


def through_nnsight(session):
    """The same model, its passes run by nnsight's simulation of an NDIF request."""
    wrapped = import_nnsight().TransformersModel(session.model, tokenizer=session.tokenizer, task="text-generation")
    return session.with_executor(NnsightExecutor(wrapped, "simulate"))


@pytest.mark.parametrize("scope_name", sorted(SCOPES))
@pytest.mark.parametrize("arch", ARCHS)
def test_cached_prefix_equals_the_whole_prompt_per_position(make_session, arch: str, scope_name: str) -> None:
    session = make_session(arch)
    trace = session.trace(PROMPT)
    n = trace.n_layers
    layers = list(range(n + 1))  # 0 = embeddings .. n = the last layer
    positions = [0, 3, 6, trace.n_pos - 1]
    resid = trace.resid[layers][:, positions]  # [layer, pos, d_model]
    scope = SCOPES[scope_name](session)
    got = scope.logits(resid, layers)
    want = slow_readings(session, scope.target_ids, resid, layers)
    assert got.shape == (n + 1, len(positions), session.adapter.d_vocab)
    assert_readings_close(got, want)
    # the patches reach the reading: layers and positions read differently
    assert (got[0] - got[1]).abs().max() > 1e-3 and (got[1, 0] - got[1, 1]).abs().max() > 1e-3
    # a subset of layers reads what the full set read at those layers
    assert_readings_close(scope.logits(resid[[0, n]], [0, n]), want[[0, n]])


@pytest.mark.parametrize("arch", ARCHS)
def test_lens_stats_in_position_runs_equal_the_slow_way(make_session, monkeypatch, arch: str) -> None:
    """lens_stats reads the patchscope in runs of 3 positions (a budget that fits 3): its statistics are those of
    the slow readings."""
    session = make_session(arch)
    trace = session.trace(PROMPT)
    n, vocab = trace.n_layers, session.adapter.d_vocab
    monkeypatch.setattr(reduce_mod, "CALL_MB", 4 * vocab * n * 3.5 / 2**20)
    scope = identity_patchscope(session)
    calls: list[tuple[int, int]] = []
    logits = scope.logits
    monkeypatch.setattr(scope, "logits", lambda resid, layers: calls.append(tuple(resid.shape[:2])) or
                        logits(resid, layers))
    stats = lens_stats(session, trace, scope, top_k=3)
    assert calls == [(n, 3)] * (trace.n_pos // 3) + ([(n, trace.n_pos % 3)] if trace.n_pos % 3 else [])
    want = slow_readings(session, scope.target_ids, trace.resid[:n], list(range(n)))  # [layer, pos, vocab]
    assert_top1_within_ties(torch.as_tensor(stats.top_ids[:n, :, 0]), want)
    logp = torch.log_softmax(want, -1)
    np.testing.assert_allclose(stats.entropy[:n], -(logp.exp() * logp).sum(-1).numpy(), rtol=1e-4, atol=1e-5)
    final = torch.log_softmax(session.run(Pass(trace.input_ids[None], logits=True)).logits, -1)  # last position
    kl = (final.exp() * (final - logp[:, -1])).sum(-1)
    np.testing.assert_allclose(stats.kl_to_final[:n, -1], kl.numpy(), rtol=1e-4, atol=1e-5)


def test_position_runs_are_fixed_by_the_model_and_the_tile() -> None:
    vocab, last, call_mb = 1000, 4, 4 * 1000 * 4 * 5 / 2**20  # 5 positions of all 4 earlier layers fit
    ps = slice(128, 140)
    runs = {tuple(layers): [(rows, pos) for rows, pos, group, wanted in
                            lens_chunks(layers, last, ps, vocab, True, call_mb)]
            for layers in ([0, 1, 2, 3, 4], [1, 3], [2, 4])}
    assert runs[(0, 1, 2, 3, 4)] == [(slice(0, 4), slice(128, 133)), (slice(0, 4), slice(133, 138)),
                                     (slice(0, 4), slice(138, 140))]
    for layers, got in runs.items():  # the positions never depend on the layers asked for
        assert [pos for _, pos in got] == [pos for _, pos in runs[(0, 1, 2, 3, 4)]]
    assert runs[(1, 3)][0][0] == slice(0, 2) and runs[(2, 4)][0][0] == slice(0, 1)  # the last layer is not read
    one = [pos for _, pos, _, _ in lens_chunks([0, 1, 2, 3, 4], last, ps, vocab, True, call_mb / 10)]
    assert one == [slice(p, p + 1) for p in range(128, 140)]  # a budget below one position: one at a time


@pytest.mark.parametrize("arch", ["gpt2", "llama", "opt"])
def test_the_prefix_is_encoded_once(make_session, monkeypatch, arch: str) -> None:
    session = make_session(arch)
    trace = session.trace(PROMPT)
    layers = list(range(trace.n_layers + 1))
    scope = identity_patchscope(session)
    n_target = scope.target_ids.numel()
    seen = counting(monkeypatch, session)
    first = scope.logits(trace.resid[:, :5], layers)
    second = scope.logits(trace.resid[:, :5], layers)
    encoded = [p for p in seen if p.keep_cache]
    assert len(encoded) == 1 and torch.equal(encoded[0].input_ids[0].cpu(), scope.target_ids[:-1])
    patched = [p for p in seen if not p.keep_cache]
    assert len(patched) == 2  # every (layer, position) row of a call in one forward
    assert all(p.input_ids.shape == (len(layers) * 5, 1) and p.past_key_values is not None for p in patched)
    assert all(int(p.input_ids[0, 0]) == int(scope.target_ids[-1]) for p in patched)
    assert torch.equal(first, second)  # the kept cache is not grown by the forwards that continue it
    past = scope.prefix_cache()
    assert past.get_seq_length() == n_target - 1 and past.layers[0].keys.shape[0] == 1


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gptj", "opt"])
def test_blocks_before_the_patch_are_skipped(make_session, arch: str) -> None:
    """A row patched at layer l goes through blocks l+1.. only (block b, 0-based, computes the rows of layers <= b);
    the blocks' own forward is back afterwards."""
    session = make_session(arch)
    trace = session.trace(PROMPT)
    n = trace.n_layers
    scope = identity_patchscope(session)
    scope.prefix_cache()  # the prefix's pass, before counting
    seen: list[tuple[int, int]] = []
    before = [block.__dict__.get("forward") for block in session.adapter.blocks]  # nnsight may have wrapped them
    inner = [session.adapter.block_part("attn_out", b) for b in range(n)]  # a module inside each block
    handles = [m.register_forward_pre_hook(lambda _m, args, b=b: seen.append((b, args[0].shape[0])))
               for b, m in enumerate(inner)]
    try:
        scope.logits(trace.resid[:, :5], list(range(n + 1)))  # 5 rows per layer 0..n
    finally:
        for handle in handles:
            handle.remove()
    assert seen == [(b, 5 * (b + 1)) for b in range(n)]
    assert [block.__dict__.get("forward") for block in session.adapter.blocks] == before


def test_bare_question_scope_runs_one_token_forwards(make_session, monkeypatch) -> None:
    session = make_session("llama")
    trace = session.trace(PROMPT)
    scope = question_bare_patchscope(session)
    assert scope.target_ids.numel() == 1 and scope.prefix_cache() is None
    seen = counting(monkeypatch, session)
    scope.logits(trace.resid[:, :4], list(range(trace.n_layers + 1)))
    assert [tuple(p.input_ids.shape) for p in seen] == [((trace.n_layers + 1) * 4, 1)]
    assert all(p.past_key_values is None and not p.keep_cache for p in seen)


@pytest.mark.parametrize("arch", ["gpt2", "qwen3", "gpt_neox"])
def test_rows_split_over_forwards_under_the_budget(make_session, monkeypatch, arch: str) -> None:
    session = make_session(arch)
    trace = session.trace(PROMPT)
    layers = list(range(trace.n_layers + 1))
    scope = identity_patchscope(session)
    want = scope.logits(trace.resid[:, :6], layers)  # 24 rows, one forward
    per_row = patchscope_mod.FORWARD_MB / scope.rows_per_forward(scope.prefix_cache())
    monkeypatch.setattr(patchscope_mod, "FORWARD_MB", 5.5 * per_row)  # 5 rows fit
    assert scope.rows_per_forward(scope.prefix_cache()) == 5
    seen = counting(monkeypatch, session)
    got = scope.logits(trace.resid[:, :6], layers)
    assert [p.input_ids.shape[0] for p in seen] == [5, 5, 4, 5, 5]  # ceil(24 / 5) forwards of near-equal size
    assert_readings_close(got, want)


@pytest.mark.parametrize("arch", ARCHS)
def test_no_kv_cache_runs_the_whole_prompt_with_the_same_numbers(make_session, monkeypatch, arch: str) -> None:
    local = make_session(arch)
    plain = local.with_executor(NoCacheExecutor())
    trace = local.trace(PROMPT)
    layers = list(range(trace.n_layers + 1))
    scope = identity_patchscope(plain)
    assert scope.prefix_cache() is None
    seen = counting(monkeypatch, plain)
    got = scope.logits(trace.resid[:, :5], layers)
    assert [tuple(p.input_ids.shape) for p in seen] == [(len(layers) * 5, scope.target_ids.numel())]
    assert_readings_close(got, identity_patchscope(local).logits(trace.resid[:, :5], layers))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_nnsight_falls_back_to_the_whole_prompt(make_session, arch: str) -> None:
    local = make_session(arch)
    remote = through_nnsight(local)
    trace = local.trace(PROMPT)
    layers = [0, 1, trace.n_layers]
    a = lens_stats(local, trace, identity_patchscope(local), top_k=3, layers=layers)
    b = lens_stats(remote, trace, identity_patchscope(remote), top_k=3, layers=layers)
    np.testing.assert_array_equal(a.top_ids[..., 0], b.top_ids[..., 0])  # tiny random models: no near-tie here
    np.testing.assert_allclose(a.entropy, b.entropy, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.top_probs, b.top_probs, rtol=1e-4, atol=1e-6)
    scope = Patchscope(remote, "a b", "self")
    assert scope.prefix_cache() is None


def test_seed_question_scope_puts_the_sink_token_first(make_session) -> None:
    """The logitscope seed's target is [BOS, "?"] (TransformerLens prepends BOS): the tokenizer's BOS, else EOS, goes
    first where the tokenizer adds none; the bare variant keeps the tokenizer's own encoding."""
    session = make_session("llama")
    tok = session.tokenizer
    sink = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    bare = tok("?", return_tensors="pt").input_ids[0].tolist()
    assert sink is not None and bare[0] != sink  # the tiny tokenizer adds no BOS: the sink must be put first
    assert question_patchscope(session).target_ids.tolist() == [sink] + bare
    assert question_bare_patchscope(session).target_ids.tolist() == bare
    assert sink_token(tok, torch.tensor([sink] + bare)) is None  # a prompt that starts with it gets no second one

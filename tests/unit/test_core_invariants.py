"""Invariants of one traced forward pass, on a tiny random model of every supported family."""

from __future__ import annotations

import threading

import pytest
import torch
from numerics import assert_top1_within_ties, assert_top_k_within_ties
from torch import nn
from transformers.utils import ModelOutput

from core.lenses.logit import LogitLens
from core.lenses.stats import lens_stats
from core.model.session import CAPTURABLE, ModelSession, Trace

ALL_CAPTURES = CAPTURABLE

PROMPT = "The capital of France is Paris, and the capital of Italy is"


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    """Max abs error within ``rel`` of the expected tensor's scale (and shapes equal)."""
    assert actual.shape == expected.shape
    scale = float(expected.abs().max())
    assert scale > 0, "degenerate reference: all zeros"
    err = float((actual.float() - expected.float()).abs().max())
    assert err <= rel * scale, f"max error {err:.3g} > {rel:g} x scale {scale:.3g}"


def full_trace(session: ModelSession, prompt: str = PROMPT) -> Trace:
    return session.trace(prompt, capture=ALL_CAPTURES)


def model_outputs(session: ModelSession, ids: torch.Tensor) -> ModelOutput:
    with torch.no_grad():
        return session.model(ids[None], output_hidden_states=True)


def test_trace_shapes(arch_session: ModelSession) -> None:
    trace = full_trace(arch_session)
    a = arch_session.adapter
    n, p = a.n_layers, len(trace.input_ids)
    assert (trace.n_layers, trace.n_pos) == (n, p) and n == 3
    assert trace.resid.shape == (n + 1, p, a.d_model)
    assert trace.attn_patterns.shape == (n, a.n_heads, p, p)
    assert trace.head_z.shape == (n, p, a.n_heads * a.d_head)
    assert trace.attn_out.shape == trace.mlp_out.shape == (n, p, a.d_model)
    assert trace.neurons.shape == (n, p, a.d_mlp)
    assert len(trace.tokens) == p
    assert "".join(trace.tokens) == PROMPT


def test_last_layer_logit_lens_equals_model_logits(arch_session: ModelSession) -> None:
    trace = arch_session.trace(PROMPT)
    a = arch_session.adapter
    logits = model_outputs(arch_session, trace.input_ids).logits[0]  # [pos, vocab]
    with torch.no_grad():
        lens_logits = a.unembed(a.final_norm(trace.resid[-1]))  # [pos, vocab]
        via_lens = LogitLens(a).logits(trace.resid[-1:], [trace.n_layers])[0]
    assert_rel_close(lens_logits, logits)
    assert_rel_close(via_lens, logits)
    # the other layers are not the output: the lens genuinely reads different states
    with torch.no_grad():
        first = a.unembed(a.final_norm(trace.resid[1]))
    assert float((first - logits).abs().max()) > 1e-3


def test_lens_stats_last_layer_matches_softmax_of_logits(arch_session: ModelSession) -> None:
    trace = arch_session.trace(PROMPT)
    logits = model_outputs(arch_session, trace.input_ids).logits[0].float()  # [pos, vocab]
    probs = torch.softmax(logits, -1)
    stats = lens_stats(arch_session, trace, top_k=5)
    last = stats.layer_row(trace.n_layers)
    ref = probs.topk(5, dim=-1)
    # different computations (lens_stats' chunked logit lens vs a separate forward of the whole model): ids
    # up to near-ties of the reference logits (numerics.logit_tol), probabilities within rtol 1e-4
    assert_top_k_within_ties(stats.top_ids[last], logits)
    assert torch.allclose(torch.from_numpy(stats.top_probs[last]), ref.values, rtol=1e-4, atol=1e-6)
    assert_top1_within_ties(stats.target_ids[:, 0], logits)  # the default target: the final top-1
    # exact: same computation (the last layer's row and the default target both come from lens_stats' one
    # output-logits tensor, so the target is its own argmax)
    assert (stats.target_rank[last] == 1).all()
    assert abs(stats.kl_to_final[last]).max() < 1e-5


def test_resid_matches_hf_hidden_states(arch_session: ModelSession) -> None:
    trace = arch_session.trace(PROMPT)
    hidden = model_outputs(arch_session, trace.input_ids).hidden_states
    n = trace.n_layers
    assert len(hidden) == n + 1
    for layer in range(n):  # hidden[n] is after the final norm: compared via the lens test
        assert_rel_close(trace.resid[layer], hidden[layer][0])
    # the last residual is captured *before* the final norm, so it is not hidden[n] itself
    if hidden[n].shape[-1] == trace.resid.shape[-1]:
        assert float((trace.resid[n] - hidden[n][0]).abs().max()) > 1e-3


def test_residual_pieces_sum(arch_session: ModelSession) -> None:
    trace = full_trace(arch_session)
    for layer in range(1, trace.n_layers + 1):
        delta = trace.resid[layer] - trace.resid[layer - 1]  # [pos, d_model]
        assert_rel_close(trace.attn_out[layer - 1] + trace.mlp_out[layer - 1], delta, rel=1e-4)
        # both pieces matter: neither alone explains the update
        assert float((trace.attn_out[layer - 1] - delta).abs().max()) > 1e-4
        assert float((trace.mlp_out[layer - 1] - delta).abs().max()) > 1e-4


def test_attention_patterns_are_causal_distributions(arch_session: ModelSession) -> None:
    trace = arch_session.trace(PROMPT, capture=("attn_patterns",))
    patterns = trace.attn_patterns  # [layer, head, pos, pos]
    assert torch.allclose(patterns.sum(-1), torch.ones(patterns.shape[:-1]), atol=1e-5)
    upper = torch.triu(torch.ones(trace.n_pos, trace.n_pos, dtype=torch.bool), diagonal=1)
    # exact: not a comparison of two computations (masked scores underflow to exactly 0 in the softmax)
    assert float(patterns[..., upper].abs().max()) == 0.0
    assert float(patterns.min()) >= 0.0
    # not uniform: heads actually look at something
    assert float(patterns[:, :, -1].std(-1).max()) > 1e-3
    assert trace.head_z is None and trace.mlp_out is None


def test_head_outputs_sum_to_attention_output(arch_session: ModelSession) -> None:
    trace = full_trace(arch_session)
    a = arch_session.adapter
    for layer in range(trace.n_layers):
        heads = arch_session.head_outputs(trace, layer)  # [pos, head, d_model]
        assert heads.shape == (trace.n_pos, a.n_heads, a.d_model)
        bias = a.attn_out(layer).bias
        total = heads.sum(1) + (bias.float() if bias is not None else 0.0)
        assert_rel_close(total, trace.attn_out[layer], rel=1e-4)
        # the heads differ from one another
        assert float((heads[:, 0] - heads[:, 1]).abs().max()) > 1e-5


def test_head_outputs_need_head_z(arch_session: ModelSession) -> None:
    trace = arch_session.trace(PROMPT)
    with pytest.raises(ValueError, match="head_z"):
        arch_session.head_outputs(trace, 0)


def test_neurons_times_out_weights_equal_mlp_out(arch_session: ModelSession) -> None:
    trace = full_trace(arch_session)
    a = arch_session.adapter
    for layer in range(trace.n_layers):
        weight = a.neuron_out_weight(layer)  # [d_mlp, d_model]
        assert weight.shape == (a.d_mlp, a.d_model)
        bias = a.neurons(layer).bias
        out = trace.neurons[layer] @ weight.float() + (bias.float() if bias is not None else 0.0)
        assert_rel_close(out, trace.mlp_out[layer], rel=1e-4)
        # every position has its own activations (guards against capturing one position only)
        assert float((trace.neurons[layer][0] - trace.neurons[layer][-1]).abs().max()) > 1e-4


def _hook_ids(model: nn.Module) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every module's forward (pre-)hook ids. transformers itself installs permanent, inert
    output-capturing hooks on first use, so hooks are compared with a snapshot, not with none."""
    return {name: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks)) for name, m in model.named_modules()}


def test_hooks_removed_when_forward_raises(arch_session: ModelSession, monkeypatch: pytest.MonkeyPatch) -> None:
    model = arch_session.model
    expected = full_trace(arch_session)
    before = _hook_ids(model)
    hooked = [arch_session.adapter.blocks[0], arch_session.adapter.attn_out(0), arch_session.adapter.neurons(0)]
    assert all(not m._forward_pre_hooks for m in hooked)

    def boom(*args, **kwargs):
        raise RuntimeError("boom in the last block")

    monkeypatch.setattr(arch_session.adapter.blocks[-1], "forward", boom)
    with pytest.raises(RuntimeError, match="boom"):
        full_trace(arch_session)
    assert _hook_ids(model) == before
    monkeypatch.undo()
    again = full_trace(arch_session)
    assert _hook_ids(model) == before
    # exact: same computation (the same prompt traced again by the same code with the same shapes)
    assert torch.equal(again.resid, expected.resid)
    assert torch.equal(again.neurons, expected.neurons)


def test_hooks_removed_after_success_and_unknown_capture(arch_session: ModelSession) -> None:
    before = _hook_ids(arch_session.model)
    full_trace(arch_session)
    assert _hook_ids(arch_session.model) == before
    with pytest.raises(ValueError, match="Unknown capture"):
        arch_session.trace(PROMPT, capture=("resid_mid",))
    assert _hook_ids(arch_session.model) == before


_THREAD_PROMPTS = [
    "The capital of France is",
    "The quick brown fox",
    "Paris is a city in France; Rome is a city in Italy.",
    "A transformer reads tokens",
    "Layers after layers refine the prediction of the next token.",
    "The capital of Spain is Madrid",
    "fox dog",
    "The lazy dog jumps over the quick brown fox, and the fox",
]


def _assert_traces_equal(a: Trace, b: Trace) -> None:
    # exact: same computation (one prompt traced concurrently vs sequentially, same shapes and code path)
    assert torch.equal(a.input_ids, b.input_ids) and a.tokens == b.tokens
    for name in ("resid",) + ALL_CAPTURES:
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_concurrent_traces_equal_sequential(arch_session: ModelSession) -> None:
    expected = [full_trace(arch_session, p) for p in _THREAD_PROMPTS]
    before = _hook_ids(arch_session.model)
    rounds = 3
    results: dict[tuple[int, int], Trace] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(_THREAD_PROMPTS))

    def work(i: int) -> None:
        try:
            for r in range(rounds):
                barrier.wait(timeout=30)
                # rotate prompts so every thread traces different prompts each round
                k = (i + r) % len(_THREAD_PROMPTS)
                results[(r, k)] = full_trace(arch_session, _THREAD_PROMPTS[k])
        except BaseException as err:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(err)
            barrier.abort()  # release the other threads at once

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(_THREAD_PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(results) == rounds * len(_THREAD_PROMPTS)
    for (_, k), trace in results.items():
        _assert_traces_equal(trace, expected[k])
    assert _hook_ids(arch_session.model) == before

"""The attention kernel: models load with SDPA where their class has it, and only a trace that captures attention
patterns runs with eager, for that one pass, under the session lock, restored afterwards."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import ARCHS, SessionFactory, build_tiny_model
from numerics import assert_top1_within_ties
from transformers import AutoConfig, PreTrainedTokenizerFast

from core.model.loading import attention_kernel, eager_attention
from core.model.session import CAPTURABLE, ModelSession, Trace

PROMPT = "The capital of France is Paris, and the capital of Italy is"
NO_SDPA = {"gptj"}
"""Families whose transformers class (5.x) has no SDPA kernel: they load with eager."""
KERNEL_RTOL = KERNEL_ATOL = 1e-5
"""SDPA vs eager in float32: another summation order in the softmax-weighted sum, so values differ in the last
bits (measured up to ~3e-6 on logits of scale ~3 on the tiny models); 1e-5 is a few times that."""
NO_PATTERN_CAPTURES = tuple(name for name in CAPTURABLE if name != "attn_patterns")


def eager_twin(session: ModelSession, tokenizer: PreTrainedTokenizerFast) -> ModelSession:
    """A session on the same weights (same seed and config) loaded with the eager kernel."""
    model = build_tiny_model(session.adapter.model_type, session.adapter.d_vocab)
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    return ModelSession(model, tokenizer, session.spec)


@pytest.fixture(scope="module")
def eager_sessions(make_session: SessionFactory, tiny_tokenizer: PreTrainedTokenizerFast) -> dict[str, ModelSession]:
    return {arch: eager_twin(make_session(arch), tiny_tokenizer) for arch in ARCHS}


def _logits(session: ModelSession, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return session.model(ids[None]).logits[0]  # [pos, vocab]


@pytest.mark.parametrize("arch", ARCHS)
def test_loads_with_sdpa_where_the_class_has_it(make_session: SessionFactory, arch: str) -> None:
    model = make_session(arch).model
    expected = "eager" if arch in NO_SDPA else "sdpa"
    assert attention_kernel(model.config) == expected
    assert model.config._attn_implementation == expected


def test_a_config_without_a_causal_lm_class_gets_eager() -> None:
    config = AutoConfig.for_model("vit", hidden_size=8, num_hidden_layers=1, num_attention_heads=2)
    assert attention_kernel(config) == "eager"  # not a causal LM: the loader reports it as unsupported


@pytest.mark.parametrize("arch", ARCHS)
def test_sdpa_matches_eager_within_tolerance(make_session: SessionFactory, eager_sessions: dict[str, ModelSession],
                                             arch: str) -> None:
    session, eager = make_session(arch), eager_sessions[arch]
    trace = session.trace(PROMPT, capture=NO_PATTERN_CAPTURES)
    reference = eager.trace(PROMPT, capture=NO_PATTERN_CAPTURES)
    # different computations (SDPA vs eager kernels): within KERNEL_RTOL / KERNEL_ATOL in float32
    for name in ("resid",) + NO_PATTERN_CAPTURES:
        torch.testing.assert_close(getattr(trace, name), getattr(reference, name), rtol=KERNEL_RTOL,
                                   atol=KERNEL_ATOL, msg=lambda m, n=name: f"{n}: {m}")
    logits, eager_logits = _logits(session, trace.input_ids), _logits(eager, trace.input_ids)  # [pos, vocab]
    torch.testing.assert_close(logits, eager_logits, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    assert_top1_within_ties(logits.argmax(-1), eager_logits)


@pytest.mark.parametrize("arch", ARCHS)
def test_patterns_are_the_eager_ones(make_session: SessionFactory, eager_sessions: dict[str, ModelSession],
                                     arch: str) -> None:
    session, eager = make_session(arch), eager_sessions[arch]
    kernel = session.model.config._attn_implementation
    trace = session.trace(PROMPT, capture=CAPTURABLE)
    reference = eager.trace(PROMPT, capture=CAPTURABLE)
    assert trace.attn_patterns is not None and trace.attn_patterns.shape[0] == session.adapter.n_layers
    # exact: same computation (the pattern trace IS an eager pass of the same weights on the same ids)
    for name in ("resid",) + CAPTURABLE:
        assert torch.equal(getattr(trace, name), getattr(reference, name)), name
    assert session.model.config._attn_implementation == kernel  # restored after the pass


def test_kernel_is_eager_during_the_pass_and_restored_when_it_raises(make_session: SessionFactory,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    session = make_session("llama")
    assert session.model.config._attn_implementation == "sdpa"
    seen: list[str] = []

    def boom(*args, **kwargs):
        seen.append(session.model.config._attn_implementation)
        raise RuntimeError("boom in the forward pass")

    monkeypatch.setattr(session.model, "forward", boom)
    with pytest.raises(RuntimeError, match="boom"):
        session.trace(PROMPT, capture=("attn_patterns",))
    with pytest.raises(RuntimeError, match="boom"):
        session.trace(PROMPT)
    assert seen == ["eager", "sdpa"]
    assert session.model.config._attn_implementation == "sdpa"


def test_eager_attention_leaves_an_eager_model_alone(make_session: SessionFactory) -> None:
    model = make_session("gptj").model
    with eager_attention(model):
        assert model.config._attn_implementation == "eager"
    assert model.config._attn_implementation == "eager"


def _traces_equal(a: Trace, b: Trace, names: tuple[str, ...]) -> bool:
    # exact: same computation (one prompt and capture traced concurrently vs sequentially, same kernel and shapes)
    return all(torch.equal(getattr(a, n), getattr(b, n)) for n in ("resid",) + names)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_concurrent_pattern_and_plain_traces_equal_sequential(make_session: SessionFactory, arch: str) -> None:
    """Threads mixing pattern traces (eager) and plain ones (SDPA) on one model: each gets its own kernel's result.

    Without the lock around the switch, a plain trace could run while another thread's switch is in force and
    come back with eager's last bits instead of SDPA's (the two kernels differ: checked at the end)."""
    session = make_session(arch)
    kinds = {"plain": NO_PATTERN_CAPTURES, "patterns": CAPTURABLE}
    expected = {kind: session.trace(PROMPT, capture=names) for kind, names in kinds.items()}
    wrong: list[str] = []

    def worker(kind: str) -> None:
        for _ in range(4):
            if not _traces_equal(session.trace(PROMPT, capture=kinds[kind]), expected[kind], kinds[kind]):
                wrong.append(kind)

    threads = [threading.Thread(target=worker, args=(kind,)) for kind in ("plain", "patterns") * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert session.model.config._attn_implementation == "sdpa"
    assert not torch.equal(expected["plain"].resid, expected["patterns"].resid)  # the kernels do differ

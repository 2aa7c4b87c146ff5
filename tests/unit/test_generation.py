"""Generation on tiny random-init models of every architecture: the KV-cached greedy continuation against full
recomputation and Hugging Face's own ``generate``, seeded sampling, the range checks, the lens over a generation."""

from __future__ import annotations

import pytest
import torch

from conftest import ARCHS
from numerics import assert_same_greedy, assert_top1_within_ties
from core.analyses.generation import MAX_NEW_TOKENS, Generation, generate, generation_table, stop_ids
from core.analyses.lens import run_lens
from core.model.executors import Pass
from core.model.session import ModelSession

PROMPT = "The capital of France is"
N = 12
TIE = 1e-4  # top-2 logits closer than this: either token is a correct argmax


def _full_logits(session: ModelSession, ids: torch.Tensor) -> torch.Tensor:
    """[vocab] last-position logits of one pass over ``ids`` without any cache."""
    return session.run(Pass(ids[None], logits=True)).logits[0]


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_matches_full_recompute_and_hf_generate(make_session, arch: str) -> None:
    session = make_session(arch)
    gen = generate(session, PROMPT, N)
    assert isinstance(gen, Generation)
    prompt_ids = session.tokenize(PROMPT)
    assert torch.equal(gen.prompt_ids, prompt_ids) and gen.n_prompt == prompt_ids.numel()
    assert torch.equal(gen.ids[:gen.n_prompt], prompt_ids)
    assert 1 <= gen.n_new <= N and len(gen.tokens) == gen.ids.numel()
    assert gen.stopped == ("eos" if int(gen.ids[-1]) in stop_ids(session) else "length")
    if gen.stopped == "length":
        assert gen.n_new == N
    # step by step: the argmax of a full pass (no cache) over the sequence so far, and the cached pass's logits
    cache = None
    for k in range(gen.n_new):
        prefix = gen.ids[:gen.n_prompt + k]
        full = _full_logits(session, prefix)
        step = prefix[None] if cache is None else prefix[None, -1:]
        out = session.run(Pass(step, logits=True, past_key_values=cache, keep_cache=True))
        cache = out.past_key_values
        torch.testing.assert_close(out.logits[0], full, rtol=1e-4, atol=1e-4)
        top2 = full.topk(2).values
        if float(top2[0] - top2[1]) < TIE:
            continue  # a near-tie: either token is the argmax
        assert int(gen.ids[gen.n_prompt + k]) == int(full.argmax()), (arch, k)
    # the same without a cache, and Hugging Face's greedy generate (other computations: equal up to near-ties)
    def reference(prefix: torch.Tensor) -> torch.Tensor:
        return _full_logits(session, prefix)

    assert_same_greedy(generate(session, PROMPT, N, use_cache=False).ids, gen.ids, reference)
    with torch.no_grad():
        hf = session.model.generate(prompt_ids[None], attention_mask=torch.ones_like(prompt_ids)[None],
                                    max_new_tokens=N, do_sample=False, pad_token_id=0,
                                    eos_token_id=sorted(stop_ids(session)))
    assert_same_greedy(hf[0], gen.ids, reference)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_seeded_sampling_is_reproducible_and_seed_dependent(make_session, arch: str) -> None:
    session = make_session(arch)
    runs = [generate(session, PROMPT, 20, sample=True, seed=s, temperature=2.0).ids.tolist() for s in (1, 1, 2)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    top1 = generate(session, PROMPT, 8, sample=True, seed=3, top_k=1)  # top-k 1: the greedy continuation
    assert top1.ids.tolist() == generate(session, PROMPT, 8).ids.tolist()  # the same passes: exact


def test_stops_at_end_of_sequence(make_session, monkeypatch: pytest.MonkeyPatch) -> None:
    session = make_session("llama")
    free = generate(session, PROMPT, N)
    third = int(free.new_ids[2])
    first = next(k for k in range(N) if int(free.new_ids[k]) == third)  # where that token first comes
    monkeypatch.setattr(session.model.generation_config, "eos_token_id", third)
    gen = generate(session, PROMPT, N)
    assert gen.stopped == "eos" and gen.n_new == first + 1 and int(gen.ids[-1]) == third
    assert gen.ids.tolist() == free.ids[:gen.ids.numel()].tolist()


def test_range_checks_come_before_any_pass(make_session, monkeypatch: pytest.MonkeyPatch) -> None:
    session = make_session("llama")
    monkeypatch.setattr(session, "run", lambda p: pytest.fail("a pass ran"))
    n_prompt = session.tokenize(PROMPT).numel()
    cases = [
        (dict(max_new_tokens=0), "from 1 to 256"),
        (dict(max_new_tokens=MAX_NEW_TOKENS + 1), "from 1 to 256"),
        (dict(max_new_tokens=2.5), "whole number"),
        (dict(max_new_tokens=session.max_tokens - n_prompt + 1), f"at most {session.max_tokens - n_prompt} new"),
        (dict(max_new_tokens=5, sample=True, temperature=0.0), "temperature must be above 0"),
        (dict(max_new_tokens=5, top_k=-1), "Top-k"),
        (dict(max_new_tokens=5, seed=-1), "seed"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            generate(session, PROMPT, **kwargs)
    with pytest.raises(ValueError, match="empty"):
        generate(session, "   ", 5)


def test_prompt_filling_the_context_exactly_is_allowed(make_session) -> None:
    session = make_session("gpt2")
    ids = session.tokenize(PROMPT)
    room = session.max_tokens - ids.numel()
    gen = generate(session, ids, room)  # ids in: the same as the text
    assert gen.ids.numel() <= session.max_tokens


def test_lens_over_a_generation_reads_its_ids(make_session) -> None:
    session = make_session("llama")
    gen = generate(session, PROMPT, 6)
    trace = session.trace(gen.ids)
    assert torch.equal(trace.input_ids, gen.ids) and trace.tokens == gen.tokens
    result = run_lens(session, "", trace=trace, top_k=3)
    assert set(result.frame.position) == set(range(gen.ids.numel()))
    # the lens's final layer at each prompt position predicts what greedy decoding chose after the prompt
    final = trace.resid[-1, gen.n_prompt - 1]  # the full pass's last layer at the last prompt position
    assert_top1_within_ties(gen.ids[gen.n_prompt:gen.n_prompt + 1],
                            session.adapter.unembed(session.adapter.final_norm(final[None])).detach())
    table = generation_table(session, gen)
    assert table.generated.sum() == gen.n_new and table.id.tolist() == gen.ids.tolist()


def test_continuation_text_round_trips(make_session) -> None:
    session = make_session("gpt2")
    gen = generate(session, PROMPT, 10)
    assert session.tokenizer.decode(gen.ids.tolist()) == session.tokenizer.decode(gen.prompt_ids.tolist()) + gen.text


def test_nnsight_executor_runs_without_a_cache(make_session) -> None:
    pytest.importorskip("nnsight")
    from core.model.executors import NnsightExecutor, import_nnsight

    session = make_session("llama")
    nnsight = import_nnsight()
    wrapped = nnsight.TransformersModel(session.model, tokenizer=session.tokenizer, task="text-generation")
    remote_like = session.with_executor(NnsightExecutor(wrapped, "here"))
    assert_same_greedy(generate(remote_like, PROMPT, 5).ids, generate(session, PROMPT, 5).ids,
                       lambda prefix: _full_logits(session, prefix))


def test_command_line_bounds_agree() -> None:
    """The CLI checks -n before torch loads, with its own copy of the bound."""
    from core.analyses import generation
    from core.cli import generate as cli

    assert (cli.MAX_NEW_TOKENS, cli.DEFAULT_NEW_TOKENS) == (generation.MAX_NEW_TOKENS, generation.DEFAULT_NEW_TOKENS)

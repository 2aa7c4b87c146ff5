""""Copy as code": each snippet runs as written (the model load swapped for a tiny session) and gives what the
core API gives directly."""

from __future__ import annotations

import ast

import pandas as pd
import pytest

from core.analyses.generation import generate
from core.analyses.lens import compare_frames, run_lens
from core.model.loading import ModelSpec
from core.model.session import ModelSession
from core.snippets import (attention_snippet, contributions_snippet, generation_snippet, lens_snippet,
                           whatif_snippet)

PROMPT = "The capital of France is"


@pytest.fixture
def loaded() -> list[str]:
    """The model keys the snippets asked to load."""
    return []


@pytest.fixture
def session(make_session, monkeypatch: pytest.MonkeyPatch, loaded: list[str]) -> ModelSession:
    """The tiny llama session, which the snippets' ``ModelSession.load`` returns."""
    tiny = make_session("llama")

    def load(cls, spec: ModelSpec, progress=None) -> ModelSession:
        loaded.append(spec.key())
        return tiny

    monkeypatch.setattr(ModelSession, "load", classmethod(load))
    return tiny


def run_snippet(code: str) -> dict:
    ast.parse(code)  # valid Python as it stands
    namespace: dict = {}
    exec(compile(code, "<snippet>", "exec"), namespace)  # noqa: S102 - our own generated code
    return namespace


def test_lens_snippet(session: ModelSession, loaded: list[str]) -> None:
    code = lens_snippet("bundled", PROMPT, top_k=5, targets=[" Paris"], layers=[0, 2, 3], positions=[1, 4])
    got = run_snippet(code)
    want = run_lens(session, PROMPT, top_k=5, targets=[" Paris"], layers=[0, 2, 3], positions=[1, 4])
    pd.testing.assert_frame_equal(got["frame"], want.frame)
    assert loaded == ["bundled"]
    every = run_snippet(lens_snippet("bundled", "a 'quoted'\nprompt", top_k=3))  # literals escaped
    pd.testing.assert_frame_equal(every["frame"], run_lens(session, "a 'quoted'\nprompt", top_k=3).frame)


def test_lens_snippet_with_another_lens(session: ModelSession) -> None:
    code = lens_snippet("bundled", PROMPT, top_k=3, lens="identity", target_prompt="", layers=[1, 3])
    from core.lenses.registry import build_lens

    want = run_lens(session, PROMPT, lens=build_lens(session, "identity", ""), top_k=3, layers=[1, 3])
    pd.testing.assert_frame_equal(run_snippet(code)["frame"], want.frame)


@pytest.mark.parametrize("targets", [(), (" Paris",)])
def test_whatif_snippet(session: ModelSession, targets: tuple[str, ...]) -> None:
    prompt_b = "The capital of Italy is"
    got = run_snippet(whatif_snippet("bundled", PROMPT, prompt_b, top_k=4, targets=targets, layers=[0, 3]))
    final = [session.adapter.n_layers]
    if targets:
        ids = None
    else:
        last = [run_lens(session, p, top_k=4, layers=final, positions=[session.tokenize(p).numel() - 1])
                for p in (PROMPT, prompt_b)]
        ids = list(dict.fromkeys(int(r.stats.target_ids[-1, 0]) for r in last))
    a = run_lens(session, PROMPT, top_k=4, targets=list(targets), target_ids=ids, layers=[0, 3])
    b = run_lens(session, prompt_b, top_k=4, targets=list(targets), target_ids=ids, layers=[0, 3])
    want = compare_frames(a, b)
    pd.testing.assert_frame_equal(got["diff"], want, check_exact=False, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sample", [False, True])
def test_generation_snippet(session: ModelSession, sample: bool) -> None:
    code = generation_snippet("bundled", PROMPT, 7, sample=sample, seed=3, temperature=1.5, top_k=20, lens_top_k=4,
                              layers=[0, 3])
    got = run_snippet(code)
    gen = generate(session, PROMPT, 7, sample=sample, seed=3, temperature=1.5, top_k=20)
    assert got["gen"].ids.tolist() == gen.ids.tolist() and got["gen"].text == gen.text
    want = run_lens(session, "", trace=session.trace(gen.ids), top_k=4, layers=[0, 3])
    pd.testing.assert_frame_equal(got["frame"], want.frame)


def test_chat_snippets_wrap_the_prompt(session: ModelSession) -> None:
    code = lens_snippet("bundled", PROMPT, top_k=3, chat=True)
    assert "chat_prompt(session.tokenizer, prompt)" in code
    with pytest.raises(ValueError, match="no chat template"):  # the tiny tokenizer has none: the snippet says so
        run_snippet(code)


def test_contributions_snippet(session: ModelSession) -> None:
    from core.analyses.contributions import contribution_graph, decompose

    target, other = 5, 9
    got = run_snippet(contributions_snippet("bundled", PROMPT, layer=2, position=3, target=target, other=other,
                                            threshold=0.05))
    want = decompose(session, PROMPT, layer=2, position=3, target=target, other=other)
    pd.testing.assert_frame_equal(got["d"].frame, want.frame)
    graph = contribution_graph(session, PROMPT, target_position=3, layer=2, threshold=0.05)
    pd.testing.assert_frame_equal(got["graph"].edges, graph.edges)


def test_attention_snippet(session: ModelSession) -> None:
    from core.analyses.attention_heads import attention_at

    got = run_snippet(attention_snippet("bundled", PROMPT, block=2, position=-1, target=7))
    want = attention_at(session, PROMPT, 2, -1, target=7)
    pd.testing.assert_frame_equal(got["view"].frame, want.frame)
    pd.testing.assert_frame_equal(got["view"].heads, want.heads)

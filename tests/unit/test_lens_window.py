"""What the Lens page computes first: statistics at some positions only, and what-if edits that continue the base
prompt's key/value cache and reuse its statistics (issue 14, parts 1 and 2)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch

import core.analyses.lens as lens_analysis
from core.analyses.lens import join_positions, run_lens, run_lens_edit, select_positions
from core.lenses.stats import lens_stats
from core.model.session import ModelSession
from conftest import ARCHS

PROMPT = "The capital of France is Paris, and the capital of Italy is Rome. The quick brown fox jumps"
EDITED = PROMPT + " over the lazy dog"
SLIDING = {"mistral"}  # tiny models whose key/value cache has sliding-window layers (the family's default)
ATOL = 1e-4  # float32 rounding of the same statistics read from calls of another shape (values are O(1) or ranks)


def assert_same_stats(a, b, ties: np.ndarray | None = None) -> None:
    """Float statistics within ATOL; top-1 ids equal wherever the top-2 probabilities are not within ATOL."""
    for name in ("top_probs", "entropy", "kl_to_final", "target_prob"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=ATOL, rtol=1e-4, err_msg=name)
    np.testing.assert_allclose(a.next_token_ce, b.next_token_ce, atol=ATOL, rtol=1e-4, equal_nan=True)
    gap = a.top_probs[..., 0] - a.top_probs[..., 1]
    clear = gap > ATOL
    assert clear.mean() > 0.5  # the comparison below must cover most cells to mean anything
    np.testing.assert_array_equal(a.top_ids[..., 0][clear], b.top_ids[..., 0][clear])
    np.testing.assert_array_equal(a.positions, b.positions)


@pytest.mark.parametrize("arch", ARCHS)
def test_stats_at_some_positions_equal_the_full_table_there(make_session: Callable[..., ModelSession],
                                                           arch: str) -> None:
    session = make_session(arch)
    trace = session.trace(PROMPT)
    wanted = [0, 3, trace.n_pos - 1]
    full = lens_stats(session, trace, top_k=3)
    part = lens_stats(session, trace, top_k=3, positions=wanted, layers=[0, 2, session.adapter.n_layers])
    assert part.top_ids.shape == (3, 3, 3) and part.positions.tolist() == wanted
    rows = [0, 2, session.adapter.n_layers]
    expect = select_positions(full, wanted)
    for name in ("top_probs", "entropy", "kl_to_final", "target_prob"):
        np.testing.assert_allclose(getattr(part, name), getattr(expect, name)[rows], atol=ATOL, rtol=1e-4)
    np.testing.assert_array_equal(part.target_ids, expect.target_ids)  # the final top-1: the model's output


def test_positions_out_of_range_are_refused(make_session: Callable[..., ModelSession]) -> None:
    session = make_session("gpt2")
    trace = session.trace(PROMPT)
    with pytest.raises(ValueError, match="Positions must lie in 0"):
        lens_stats(session, trace, positions=[trace.n_pos])


def test_frames_carry_the_real_positions(make_session: Callable[..., ModelSession]) -> None:
    session = make_session("llama")
    result = run_lens(session, PROMPT, top_k=2, positions=[1, 4])
    assert sorted(result.frame.position.unique()) == [1, 4]
    assert sorted(result.targets.position.unique()) == [1, 4]
    assert result.frame[result.frame.position == 4].token.iloc[0] == result.tokens[4]


def test_join_positions_restores_the_full_table(make_session: Callable[..., ModelSession]) -> None:
    session = make_session("gpt2")
    full = run_lens(session, PROMPT, top_k=2).stats
    n = full.positions.size
    joined = join_positions([select_positions(full, range(3, n)), select_positions(full, [0, 1, 2])])
    for name in ("top_ids", "entropy", "target_rank", "target_ids", "positions"):
        np.testing.assert_array_equal(getattr(joined, name), getattr(full, name))


@pytest.mark.parametrize("arch", ARCHS)
def test_an_edit_continues_the_cache_and_equals_a_fresh_trace(make_session: Callable[..., ModelSession],
                                                             arch: str) -> None:
    session = make_session(arch)
    base = session.trace(PROMPT, keep_cache=True)
    for edited in (EDITED, PROMPT[:-6] + " walks", PROMPT):
        got, shared = session.trace_edit(base, edited)
        fresh = session.trace(edited)
        ids = fresh.input_ids
        n = min(len(ids), base.n_pos)
        expect_shared = min(next((i for i in range(n) if ids[i] != base.input_ids[i]), n), len(ids) - 1)
        if arch in SLIDING:  # its cache keeps a window only: cutting it back would lose states, so all runs
            assert shared == 0
        else:
            assert shared == expect_shared > 0
        assert got.tokens == fresh.tokens
        scale = fresh.resid.abs().amax(dim=(1, 2), keepdim=True)
        torch.testing.assert_close(got.resid / scale, fresh.resid / scale, atol=1e-5, rtol=0)
        assert got.cache is not None  # an edit can be edited again


def test_an_edit_without_a_cache_runs_the_whole_prompt(make_session: Callable[..., ModelSession]) -> None:
    session = make_session("gpt2")
    base = session.trace(PROMPT)  # no keep_cache
    got, shared = session.trace_edit(base, EDITED)
    assert shared == 0
    torch.testing.assert_close(got.resid, session.trace(EDITED).resid)


def test_an_unrelated_prompt_shares_nothing(make_session: Callable[..., ModelSession]) -> None:
    session = make_session("gpt2")
    base = session.trace("Paris is a city in France", keep_cache=True)
    got, shared = session.trace_edit(base, "Layers after layers refine the prediction")
    assert shared == 0 and got.n_pos == session.trace("Layers after layers refine the prediction").n_pos


@pytest.mark.parametrize("targets", [None, [" Paris"]])
def test_what_if_reuses_the_shared_positions_and_matches_a_fresh_run(
        make_session: Callable[..., ModelSession], monkeypatch: pytest.MonkeyPatch, targets) -> None:
    session = make_session("llama")
    base_trace = session.trace(PROMPT, keep_cache=True)
    base = run_lens(session, PROMPT, top_k=3, targets=targets, trace=base_trace)
    computed: list[list[int]] = []
    real = lens_analysis.lens_stats

    def spy(*args, **kwargs):
        computed.append(list(kwargs.get("positions") or []))
        return real(*args, **kwargs)

    monkeypatch.setattr(lens_analysis, "lens_stats", spy)
    trace, shared = session.trace_edit(base_trace, EDITED)
    got, reused = run_lens_edit(session, base_trace, base, trace, top_k=3, targets=targets)
    assert shared == base_trace.n_pos  # the edit appends: the whole base prompt is shared
    n_reused = base_trace.n_pos - 1  # the base's last position gains a next token (its cross-entropy changes)
    assert reused == n_reused
    assert computed == [list(range(n_reused, trace.n_pos))]  # only positions from the first change on
    monkeypatch.setattr(lens_analysis, "lens_stats", real)
    expect = run_lens(session, EDITED, top_k=3, targets=targets)
    assert_same_stats(got.stats, expect.stats)
    assert got.frame.shape == expect.frame.shape and list(got.frame.columns) == list(expect.frame.columns)


def test_trace_progress_reports_every_block_and_changes_nothing(make_session: Callable[..., ModelSession]) -> None:
    session = make_session("llama")
    seen: list[float] = []
    got = session.trace(PROMPT, progress=lambda f: seen.append(f) or "a return value the hook must not pass on")
    assert seen == [(i + 1) / session.adapter.n_layers for i in range(session.adapter.n_layers)]
    torch.testing.assert_close(got.resid, session.trace(PROMPT).resid)

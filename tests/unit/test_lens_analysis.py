"""The Lens analysis: targets, position alignment, tidy frames, comparisons and prompt validation."""

from __future__ import annotations

from typing import Callable

import pandas as pd
import pytest

from core.analyses.lens import (
    LENS_COLUMNS,
    align_positions,
    compare_frames,
    first_layer_reaching,
    lens_frame,
    resolve_target,
    run_lens,
    settling_layer,
    targets_frame,
)
from core.lenses.stats import lens_stats
from core.model.session import ModelSession

COMPARE_COLUMNS = ["layer", "position_a", "position_b", "token_a", "token_b", "top1_a", "top1_b", "top1_changed",
                   "status", "target_prob_a", "target_prob_b", "delta_target_prob", "delta_entropy", "delta_kl_to_final"]


@pytest.fixture(scope="module")
def session(make_session: Callable[..., ModelSession]) -> ModelSession:
    return make_session("gpt2")


# -- targets -----------------------------------------------------------------------------------
def test_resolve_single_token_target(session: ModelSession) -> None:
    ids = session.tokenizer(" Paris", add_special_tokens=False).input_ids
    assert len(ids) == 1
    choice = resolve_target(session, " Paris")
    assert (choice.token_id, choice.token, choice.text, choice.note) == (ids[0], " Paris", " Paris", "")


def test_resolve_multi_token_target_takes_first_with_note(session: ModelSession) -> None:
    ids = session.tokenizer(" Zebra", add_special_tokens=False).input_ids
    assert len(ids) > 1
    pieces = [session.tokenizer.decode([i]) for i in ids]
    choice = resolve_target(session, " Zebra")
    assert choice.token_id == ids[0] and choice.token == pieces[0]
    assert f"{len(ids)} tokens" in choice.note
    for piece in pieces:
        assert repr(piece) in choice.note
    assert f"using the first, {pieces[0]!r}" in choice.note


@pytest.mark.parametrize("text", ["", None])
def test_resolve_empty_target_raises(session: ModelSession, text: str | None) -> None:
    with pytest.raises(ValueError, match="target is empty"):
        resolve_target(session, text)  # type: ignore[arg-type]


# -- alignment ---------------------------------------------------------------------------------
def test_align_same_tokens() -> None:
    tokens = ("The", " cat", " sat")
    assert align_positions(tokens, tokens) == [(0, 0), (1, 1), (2, 2)]


def test_align_same_length_substitution_pairs_one_to_one() -> None:
    assert align_positions(("The", " cat", " sat"), ("The", " dog", " sat")) == [(0, 0), (1, 1), (2, 2)]


def test_align_insertion_in_the_middle() -> None:
    a = ("The", " capital", " of", " France", " is")
    b = ("The", " capital", " city", " of", " France", " is")
    assert align_positions(a, b) == [(0, 0), (1, 1), (2, 3), (3, 4), (4, 5)]
    assert align_positions(b, a) == [(0, 0), (1, 1), (3, 2), (4, 3), (5, 4)]


def test_align_last_positions_always_pair() -> None:
    assert align_positions(("A", "B", "C"), ("X", "Y")) == [(2, 1)]
    assert align_positions(("A", "B", "C"), ("A", "B", "C", "D")) == [(0, 0), (1, 1), (2, 3)]
    assert align_positions(("A", "B"), ("A", "B", "C", "B")) == [(0, 0), (1, 3)]
    assert align_positions(("A",), ("B", "C", "D")) == [(0, 2)]


# -- frames ------------------------------------------------------------------------------------
def test_lens_frame_rows_and_columns(session: ModelSession) -> None:
    trace = session.trace("The capital of France is")
    stats = lens_stats(session, trace, top_k=4, layers=[0, 2, 3])
    vocab = session.vocab_strings()
    frame = lens_frame(stats, trace.tokens, vocab)
    assert list(frame.columns) == LENS_COLUMNS
    assert len(frame) == 3 * trace.n_pos
    assert sorted(set(zip(frame.layer, frame.position))) == [(l, p) for l in (0, 2, 3) for p in range(trace.n_pos)]
    row = frame[(frame.layer == 2) & (frame.position == 3)].iloc[0]
    r = stats.layer_row(2)
    # exact: same computation (the frame is a view of these very stats arrays)
    assert row.token == trace.tokens[3]
    assert row.top_tokens == [vocab[i] for i in stats.top_ids[r, 3]]
    assert row.top_probs == pytest.approx(stats.top_probs[r, 3].tolist(), abs=1e-6)
    assert row.target == vocab[stats.target_ids[3, 0]]
    assert row.target_rank == stats.target_rank[r, 3, 0]
    assert row.entropy == pytest.approx(float(stats.entropy[r, 3]))
    assert row.kl_to_final == pytest.approx(float(stats.kl_to_final[r, 3]))
    # exact: same computation (the default target is the argmax of the very logits the last layer's row reads)
    assert (frame[frame.layer == 3].target_rank == 1).all()


def test_targets_frame_one_row_per_target(session: ModelSession) -> None:
    trace = session.trace("The capital of France is")
    ids = [resolve_target(session, " Paris").token_id, resolve_target(session, " Rome").token_id]
    stats = lens_stats(session, trace, targets=ids)
    frame = targets_frame(stats, trace.tokens, session.vocab_strings())
    assert len(frame) == (trace.n_layers + 1) * trace.n_pos * 2
    assert set(frame.target) == {" Paris", " Rome"}
    sub = frame[(frame.layer == 1) & (frame.position == 2) & (frame.target == " Rome")]
    assert len(sub) == 1 and sub.target_rank.iloc[0] == stats.target_rank[1, 2, 1]  # exact: a view of stats


def test_run_lens_targets_and_notes(session: ModelSession) -> None:
    result = run_lens(session, "The capital of France is", top_k=3, targets=[" Paris", " Zebra"])
    assert result.stats.target_ids.shape[1] == 2
    assert len(result.notes) == 1 and "Zebra" in result.notes[0]
    assert set(result.frame.target) == {" Paris"}  # the frame shows the first target
    assert all(len(t) == 3 for t in result.frame.top_tokens)
    with pytest.raises(ValueError, match="Top-k"):
        run_lens(session, "The capital of France is", top_k=0)
    with pytest.raises(ValueError, match="Top-k"):
        run_lens(session, "The capital of France is", top_k=101)


def test_compare_prompt_with_itself(session: ModelSession) -> None:
    a = run_lens(session, "The capital of France is", targets=[" Paris"])
    b = run_lens(session, "The capital of France is", targets=[" Paris"])
    cmp = compare_frames(a, b)
    assert list(cmp.columns) == COMPARE_COLUMNS
    assert len(cmp) == len(a.frame)
    # exact: same computation (one prompt run twice by the same code with the same shapes)
    assert not cmp.top1_changed.any()
    assert (cmp.position_a == cmp.position_b).all()
    for col in ("delta_target_prob", "delta_entropy", "delta_kl_to_final"):
        assert (cmp[col].abs() < 1e-7).all(), col


def test_compare_with_an_insertion(session: ModelSession) -> None:
    a = run_lens(session, "The capital of France is", targets=[" Paris"])
    b = run_lens(session, "The old capital of France is", targets=[" Paris"])
    pairs = align_positions(a.tokens, b.tokens)
    assert len(b.tokens) > len(a.tokens) and pairs[-1] == (len(a.tokens) - 1, len(b.tokens) - 1)
    cmp = compare_frames(a, b)
    n_res = a.stats.layers.size
    assert len(cmp) == n_res * len(b.tokens)  # every position of B has its column, the inserted ones too
    unpaired = sorted(set(range(len(b.tokens))) - {pb for _, pb in pairs})
    assert unpaired  # " old" (and whatever the tokenizer split with it) has no partner in A
    new = cmp[cmp.position_b.isin(unpaired)]
    assert (new.status == "inserted").all() and (new.position_a == -1).all() and not new.top1_changed.any()
    assert new.delta_target_prob.isna().all() and new.token_a.isna().all()
    paired = cmp[~cmp.position_b.isin(unpaired)]
    assert set(paired.status) <= {"same", "changed"} and paired.delta_entropy.notna().all()
    assert (paired.status == "changed").equals(paired.top1_changed)
    cmp = paired
    assert cmp[["layer", "position_b"]].equals(cmp[["layer", "position_b"]].sort_values(["layer", "position_b"]))
    last = cmp[(cmp.layer == n_res - 1) & (cmp.position_a == len(a.tokens) - 1)].iloc[0]
    fa = a.frame[(a.frame.layer == n_res - 1) & (a.frame.position == len(a.tokens) - 1)].iloc[0]
    fb = b.frame[(b.frame.layer == n_res - 1) & (b.frame.position == len(b.tokens) - 1)].iloc[0]
    assert last.delta_target_prob == pytest.approx(fb.target_prob - fa.target_prob)
    assert last.delta_entropy == pytest.approx(fb.entropy - fa.entropy)
    assert last.top1_changed == (fa.top_tokens[0] != fb.top_tokens[0])  # exact: read from the same two frames
    assert (cmp.token_a == [a.tokens[p] for p in cmp.position_a]).all()


# -- first / settling layer --------------------------------------------------------------------
def _frame(ranks_by_position: dict[int, list[int]], layers: list[int]) -> pd.DataFrame:
    rows = [{"layer": l, "position": p, "target_rank": r}
            for p, ranks in ranks_by_position.items() for l, r in zip(layers, ranks)]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # row order must not matter


def test_first_and_settling_layer() -> None:
    layers = [0, 5, 10, 15, 20, 25]
    frame = _frame({0: [9, 1, 4, 1, 1, 1], 1: [50, 40, 30, 2, 3, 8], 2: [1, 1, 1, 1, 1, 1],
                    3: [7, 1, 1, 1, 1, 2]}, layers)
    assert first_layer_reaching(frame, 0) == 5
    assert settling_layer(frame, 0) == 15
    assert first_layer_reaching(frame, 0, rank=4) == 5
    assert settling_layer(frame, 0, rank=4) == 5
    assert first_layer_reaching(frame, 1) is None and settling_layer(frame, 1) is None
    assert first_layer_reaching(frame, 1, rank=3) == 15 and settling_layer(frame, 1, rank=3) is None
    assert settling_layer(frame, 1, rank=10) == 15
    assert first_layer_reaching(frame, 2) == 0 and settling_layer(frame, 2) == 0
    assert first_layer_reaching(frame, 3) == 5 and settling_layer(frame, 3) is None  # left rank 1 at the end
    assert first_layer_reaching(frame, 9) is None and settling_layer(frame, 9) is None  # absent position


# -- prompt validation -------------------------------------------------------------------------
@pytest.mark.parametrize("prompt", ["", "   ", "\n\t  \n"])
def test_empty_prompts_raise(session: ModelSession, prompt: str) -> None:
    with pytest.raises(ValueError, match="prompt is empty"):
        session.tokenize(prompt)
    with pytest.raises(ValueError, match="prompt is empty"):
        session.trace(prompt)
    with pytest.raises(ValueError, match="prompt is empty"):
        run_lens(session, prompt)


def test_too_long_prompt_raises(session: ModelSession) -> None:
    prompt = "Zebras quietly juggle xylophones near Quebec. " * 20
    n = len(session.tokenizer(prompt).input_ids)
    assert n > session.max_tokens == 128
    with pytest.raises(ValueError, match=rf"is {n} tokens long; this model reads at most 128"):
        session.trace(prompt)
    fits = "Zebras quietly juggle xylophones near Quebec. " * 2
    assert session.trace(fits).n_pos == len(session.tokenizer(fits).input_ids) <= 128


def test_vocab_strings_decode_every_id(session: ModelSession) -> None:
    vocab = session.vocab_strings()
    assert len(vocab) == session.adapter.d_vocab
    ids = session.tokenizer(" Paris", add_special_tokens=False).input_ids
    assert vocab[ids[0]] == " Paris"
    decoded = [session.tokenizer.decode([i]) for i in range(len(vocab))]
    # every id decodes to its own text, except the byte tokens that are part of a character (core.model.token_text)
    assert all(v == d for v, d in zip(vocab, decoded) if "\ufffd" not in d)
    partial = [v for v, d in zip(vocab, decoded) if "\ufffd" in d]
    assert partial and all("\ufffd" not in v and "\\x" in v for v in partial)


def test_compare_with_an_unrelated_prompt_keeps_every_column(session: ModelSession) -> None:
    """Nothing of B matches A but the last position (the prediction, always paired): B's other columns remain,
    marked inserted, rather than collapsing to one column."""
    a = run_lens(session, "The capital of France is", targets=[" Paris"])
    b = run_lens(session, "A transformer reads tokens", targets=[" Paris"])
    cmp = compare_frames(a, b)
    per_position = cmp.groupby("position_b").status.first()
    assert list(per_position.index) == list(range(len(b.tokens)))
    assert per_position.iloc[-1] in ("same", "changed") and cmp.position_a.max() == len(a.tokens) - 1
    assert (per_position.iloc[:-1] == "inserted").all()

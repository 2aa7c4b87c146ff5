"""Activation patching (core/analyses/patching.py) and ``python -m core patch`` on tiny random-init models of every
architecture in ARCHS.

Tolerances: the batched grid continues the corrupted run's key/value cache and runs many rows per pass, the
reference (patch_cells) runs one full pass per cell; both are float32 on the CPU, so they agree to float rounding:
atol 1e-4 on logit differences of order 1 (measured: at most 5e-7). Exact restorations (the last residual layer
patched at every position) are checked to 1e-4 relative.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ARCHS
from core.analyses import patching
from core.analyses.lens import LENS_COLUMNS, run_lens
from core.analyses.patching import (GRID_COLUMNS, PatchMetric, check_pair, grid_snippet, metric_value, patch_cells,
                                    patch_lens, patch_lens_snippet, patching_grid, resolve_metric)
from core.cli import main as cli_main
from core.cli import patch as cli_patch
from core.model.executors import Pass, starts_at_block
from core.model.hooks import residual_captures, residual_patch
from core.model.session import ModelSession

CLEAN = "The capital of France is"
CORRUPT = "The capital of Spain is"  # the same 5 tokens but ' Spain' for ' France' (the tiny tokenizer)
ATOL = 1e-4
RTOL_EXACT = 1e-4


@pytest.fixture(params=ARCHS)
def session(request: pytest.FixtureRequest, make_session) -> ModelSession:
    return make_session(request.param)


@pytest.fixture(scope="module")
def llama(make_session) -> ModelSession:
    return make_session("llama")


def _metric(session: ModelSession) -> PatchMetric:
    return resolve_metric(session, "logit_diff", " Paris", " Rome")


SKIPPING = {"llama", "mistral", "qwen2", "qwen3", "smollm3", "gpt_neox", "gptj"}
"""The tiny models whose batched grid starts each pass at its first changed block (GPT-2 and OPT add a learned
position embedding to the token embeddings: they run every block)."""


SHARED = 3
"""CLEAN and CORRUPT share their first 3 tokens: cells there are the corrupted value without a pass."""


def _expected_batches(session: ModelSession, site: str, n_cells: int, rows: int) -> int:
    """Passes of a grid over all 5 positions (the shared prefix runs none)."""
    run_cells = n_cells * (5 - SHARED) // 5
    if session.adapter.model_type not in SKIPPING:
        return -(-run_cells // rows)
    n = session.adapter.n_layers
    return len(patching._plan_tiles(site, patching.site_layers(site, n), list(range(SHARED, 5)), rows, 5, n))


def _run_metric(session: ModelSession, prompt: str, metric: PatchMetric, patches=()) -> float:
    out = session.run(Pass(session.tokenize(prompt)[None], patches=tuple(patches), logits=True))
    return float(metric_value(out.logits, metric)[0])


# -- the invariants, every architecture -------------------------------------------------------------------------
def test_prompts_pair_token_for_token(session: ModelSession) -> None:
    clean, corrupt = check_pair(session, CLEAN, CORRUPT)
    assert clean.numel() == corrupt.numel() == 5
    assert int((clean != corrupt).sum()) == 1


def test_last_layer_restores_the_clean_metric(session: ModelSession) -> None:
    """Patching the last residual layer at every position gives the clean logits; the grid's cell at the last layer
    and position equals the clean value, its other last-layer cells the corrupted value (the logits read the last
    position only)."""
    metric = _metric(session)
    n = session.adapter.n_layers
    clean_value = _run_metric(session, CLEAN, metric)
    got = session.run(Pass(session.tokenize(CLEAN)[None], captures=residual_captures([n], row=0)))
    everywhere = _run_metric(session, CORRUPT, metric, [residual_patch(n, got.captured.residual([n])[0])])
    assert everywhere == pytest.approx(clean_value, rel=RTOL_EXACT, abs=1e-6)
    result = patching_grid(session, CLEAN, CORRUPT, metric, layers=[n])
    assert result.clean_value == pytest.approx(clean_value, rel=RTOL_EXACT, abs=1e-6)
    last = result.frame.iloc[-1]
    assert (last.layer, last.position) == (n, 4)
    assert last.value == pytest.approx(clean_value, rel=RTOL_EXACT, abs=1e-6)
    assert last.effect == pytest.approx(1.0, abs=1e-4)
    earlier = result.frame[result.frame.position < 4]
    np.testing.assert_allclose(earlier.value, result.corrupt_value, rtol=RTOL_EXACT, atol=1e-6)
    np.testing.assert_allclose(earlier.effect, 0.0, atol=1e-4)


def test_no_patch_is_the_corrupted_run(session: ModelSession) -> None:
    metric = _metric(session)
    result = patching_grid(session, CLEAN, CORRUPT, metric, layers=[0], positions=[0])
    assert result.corrupt_value == pytest.approx(_run_metric(session, CORRUPT, metric), rel=RTOL_EXACT, abs=1e-6)
    # position 0 holds the same token in both prompts: patching it (at the embeddings) changes nothing
    assert result.frame.value.iloc[0] == pytest.approx(result.corrupt_value, rel=RTOL_EXACT, abs=1e-6)


@pytest.mark.parametrize("site", patching.PATCH_SITES)
def test_batched_grid_equals_the_per_cell_loop(session: ModelSession, site: str) -> None:
    """Batches of 7 rows (so batches straddle positions and continue the cache from different prefixes) against one
    full pass per cell."""
    metric = _metric(session)
    batched = patching_grid(session, CLEAN, CORRUPT, metric, site=site, batch_size=7)
    reference = patching_grid(session, CLEAN, CORRUPT, metric, site=site, single=True)
    assert list(batched.frame.columns) == GRID_COLUMNS
    n = session.adapter.n_layers
    assert len(batched.frame) == (n + (site == "resid")) * 5
    assert batched.frame.layer.min() == (0 if site == "resid" else 1) and batched.frame.layer.max() == n
    pd.testing.assert_frame_equal(batched.frame[["layer", "position", "token", "clean_token"]],
                                  reference.frame[["layer", "position", "token", "clean_token"]])
    np.testing.assert_allclose(batched.frame.value, reference.frame.value, rtol=0, atol=ATOL)
    assert batched.clean_value == pytest.approx(reference.clean_value, abs=ATOL)
    assert batched.corrupt_value == pytest.approx(reference.corrupt_value, abs=ATOL)
    cells = list(zip(batched.frame.layer, batched.frame.position))[:3]
    np.testing.assert_allclose(patch_cells(session, CLEAN, CORRUPT, metric, site, cells),
                               reference.frame.value[:3], rtol=0, atol=1e-6)
    assert batched.batch_size == 7 and batched.skips_blocks == (session.adapter.model_type in SKIPPING)
    assert batched.n_passes == _expected_batches(session, site, len(batched.frame), 7) + 2


def test_the_shared_prefix_is_the_corrupted_value_without_a_pass(session: ModelSession) -> None:
    """Before the first differing token both runs hold the same activations: those cells equal the corrupted value
    (the per-cell loop, which does patch them, agrees) and no batched pass runs for them."""
    assert session.tokenize(CLEAN)[:SHARED].tolist() == session.tokenize(CORRUPT)[:SHARED].tolist()
    assert session.tokenize(CLEAN)[SHARED] != session.tokenize(CORRUPT)[SHARED]
    metric = _metric(session)
    grid = patching_grid(session, CLEAN, CORRUPT, metric, batch_size=64)
    prefix = grid.frame[grid.frame.position < SHARED]
    assert (prefix.value == grid.corrupt_value).all()
    cells = [(int(r.layer), int(r.position)) for r in prefix.iloc[::7].itertuples()]
    np.testing.assert_allclose(patch_cells(session, CLEAN, CORRUPT, metric, "resid", cells),
                               grid.corrupt_value, rtol=0, atol=ATOL)


def test_batch_size_does_not_change_the_grid(session: ModelSession) -> None:
    metric = _metric(session)
    one = patching_grid(session, CLEAN, CORRUPT, metric, batch_size=1)
    big = patching_grid(session, CLEAN, CORRUPT, metric, batch_size=64)
    assert one.n_passes == len(one.frame) * (5 - SHARED) // 5 + 2
    assert big.n_passes == _expected_batches(session, "resid", len(big.frame), 64) + 2
    np.testing.assert_allclose(one.frame.value, big.frame.value, rtol=0, atol=ATOL)
    np.testing.assert_allclose(one.frame.effect, big.frame.effect, rtol=0, atol=1e-3)


def test_patch_lens_changes_only_the_cone(session: ModelSession) -> None:
    """Source and target prompts of different lengths, cells at different layers and positions: outside the target
    cell's cone the patched lens equals the unpatched one; the target cell reads the source residual."""
    n = session.adapter.n_layers
    source, target = "The capital of France is Paris.", "The capital of Spain is"
    result = patch_lens(session, source, target, source_cell=(n, 3), target_cell=(1, 2), top_k=5)
    frame = result.frame
    assert set(LENS_COLUMNS) <= set(frame.columns)
    assert {"in_cone", "changed", "delta_target_prob", "top1_unpatched"} <= set(frame.columns)
    assert len(frame) == (n + 1) * 5
    cone = frame.in_cone.to_numpy()
    expected = ((frame.layer == 1) & (frame.position == 2)) | ((frame.layer > 1) & (frame.position >= 2))
    assert (cone == expected.to_numpy()).all()
    outside = frame[~frame.in_cone]
    base = result.unpatched.frame[~frame.in_cone]
    assert (outside.top_tokens.str[0] == base.top_tokens.str[0]).all()
    np.testing.assert_allclose(outside.target_prob, base.target_prob, atol=1e-6)
    np.testing.assert_allclose(outside.entropy, base.entropy, atol=1e-5)
    assert not outside.changed.any()
    assert frame.changed.any()  # the patched cell itself reads another residual
    # the target cell holds the source residual: its logit lens is the source's at the source cell
    src = run_lens(session, source, top_k=5, layers=[n], positions=[3]).frame.iloc[0]
    cell = frame[(frame.layer == 1) & (frame.position == 2)].iloc[0]
    assert cell.top_tokens == src.top_tokens
    np.testing.assert_allclose(cell.top_probs, src.top_probs, atol=1e-5)


# -- metrics, notes, errors (one architecture) ----------------------------------------------------------------------
def test_metric_values_by_hand(llama: ModelSession) -> None:
    logits = torch.tensor([[2.0, 1.0, 3.0, 0.5], [0.0, 0.0, 0.0, 1.0]])
    prob = PatchMetric("prob", 0)
    expected = torch.softmax(logits, -1)[:, 0]
    torch.testing.assert_close(metric_value(logits, prob), expected)
    torch.testing.assert_close(metric_value(logits, PatchMetric("logprob", 0)), expected.log())
    torch.testing.assert_close(metric_value(logits, PatchMetric("rank", 0)), torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(metric_value(logits, PatchMetric("rank", 2)), torch.tensor([1.0, 2.0]))  # ties: best
    torch.testing.assert_close(metric_value(logits, PatchMetric("logit_diff", 2, 1)), torch.tensor([2.0, 0.0]))
    assert metric_value(logits.double(), prob).dtype == torch.float32


@pytest.mark.parametrize("kind", ["prob", "logprob", "rank"])
def test_other_metrics_run(llama: ModelSession, kind: str) -> None:
    metric = resolve_metric(llama, kind, " Paris")
    result = patching_grid(llama, CLEAN, CORRUPT, metric, layers=[0, llama.adapter.n_layers])
    assert result.frame.value.iloc[-1] == pytest.approx(result.clean_value, rel=RTOL_EXACT, abs=1e-6)
    assert metric.other_id is None
    assert metric.label().startswith({"prob": "p(", "logprob": "log p(", "rank": "rank of"}[kind])


def test_identical_prompts_are_allowed_with_notes(llama: ModelSession) -> None:
    result = patching_grid(llama, CLEAN, CLEAN, _metric(llama), layers=[1, 2])
    assert result.frame.effect.isna().all()
    assert any("same tokens" in note for note in result.notes)
    assert any("undefined" in note for note in result.notes)
    np.testing.assert_allclose(result.frame.value, result.clean_value, atol=1e-5)


def test_progress_is_called_per_batch(llama: ModelSession) -> None:
    seen: list[float] = []
    result = patching_grid(llama, CLEAN, CORRUPT, _metric(llama), batch_size=6, progress=seen.append)
    assert len(seen) == result.n_passes - 2 and seen[-1] == 1.0 and seen == sorted(seen)


def test_memory_budget_sets_the_batch(llama: ModelSession) -> None:
    row = patching.row_bytes(llama, 5)
    assert patching.batch_size_for(llama, 5, budget_bytes=1) == 1
    assert patching.batch_size_for(llama, 5, budget_bytes=3 * row) == 3
    assert patching.batch_size_for(llama, 5, budget_bytes=10**12) == patching.MAX_BATCH
    assert patching_grid(llama, CLEAN, CORRUPT, _metric(llama), budget_bytes=3 * row).batch_size == 3


# -- starting passes at a later block ---------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", ["llama", "gpt_neox", "gptj", "gpt2", "opt"])
def test_batched_passes_skip_the_blocks_below_the_patch(make_session, model_type: str) -> None:
    """Only the last layer patched: where the model can start at a later block, the batched pass runs no block at
    all (each block runs twice: the clean and the corrupted pass); GPT-2 and OPT (learned position embeddings) run
    every block in the batched pass too."""
    session = make_session(model_type)
    n = session.adapter.n_layers
    calls = [0] * n
    handles = [block.register_forward_hook(lambda *_a, b=b: calls.__setitem__(b, calls[b] + 1))
               for b, block in enumerate(session.adapter.blocks)]
    try:
        result = patching_grid(session, CLEAN, CORRUPT, _metric(session), layers=[n], batch_size=64)
        skips = model_type in SKIPPING
        assert starts_at_block(session) == skips and result.skips_blocks == skips
        assert result.n_passes == 3 and calls == [2 if skips else 3] * n
        calls[:] = [0] * n
        result = patching_grid(session, CLEAN, CORRUPT, _metric(session), layers=[2], positions=[3], batch_size=64)
        # blocks 1-2 (0-based 0, 1) cannot change: skipped; blocks 3.. run
        assert calls == ([2, 2] + [3] * (n - 2) if skips else [3] * n)
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("model_type", ["llama", "gpt_neox", "gptj"])
def test_a_pass_from_a_later_block_equals_the_full_pass(make_session, model_type: str) -> None:
    session = make_session(model_type)
    ids = session.tokenize(CORRUPT)[None]
    n = session.adapter.n_layers
    full = session.run(Pass(ids, captures=residual_captures(range(n + 1), row=0), logits=True))
    for start in range(n + 1):
        resid = full.captured.residual([start])  # [1, pos, d_model]
        out = session.run(Pass(ids, logits=True, start_block=start, resid=resid))
        torch.testing.assert_close(out.logits, full.logits, rtol=1e-5, atol=1e-5)
    assert len(session.model.get_submodule(session.adapter.arch.blocks)) == n


def test_the_block_list_is_restored_after_a_pass_that_raises(llama: ModelSession) -> None:
    blocks = llama.model.get_submodule(llama.adapter.arch.blocks)
    ids = llama.tokenize(CORRUPT)[None]
    resid = torch.zeros(1, ids.shape[1], llama.adapter.d_model)
    bad = residual_patch(2, torch.zeros(7, 3), position=1)  # does not broadcast to [d_model]: the hook raises
    with pytest.raises(RuntimeError):
        llama.run(Pass(ids, patches=(bad,), logits=True, start_block=1, resid=resid))
    assert llama.model.get_submodule(llama.adapter.arch.blocks) is blocks and len(blocks) == llama.adapter.n_layers
    assert list(blocks) == llama.adapter.blocks
    ok = llama.run(Pass(ids, logits=True))  # the model still runs every block
    assert ok.logits.shape == (1, llama.adapter.d_vocab)


def test_models_that_cannot_start_later_refuse(make_session) -> None:
    gpt2 = make_session("gpt2")
    ids = gpt2.tokenize(CORRUPT)[None]
    with pytest.raises(ValueError, match="cannot start a pass at a later block"):
        gpt2.run(Pass(ids, logits=True, start_block=1, resid=torch.zeros(1, ids.shape[1], gpt2.adapter.d_model)))
    with pytest.raises(ValueError, match="needs the residual"):
        Pass(ids, start_block=1)
    mixed = make_session("qwen2", use_sliding_window=True, sliding_window=2, max_window_layers=1)
    assert not starts_at_block(mixed)  # per-layer attention types differ: the loop index would pick the masks


def test_tiles_cover_every_cell_once() -> None:
    layers, positions = list(range(0, 31)), list(range(30))
    for rows in (1, 7, 64):
        tiles = patching._plan_tiles("resid", layers, positions, rows, 30, 30)
        cells = [cell for tile in tiles for cell in tile]
        assert sorted(cells) == [(l, p) for l in layers for p in positions]
        assert all(1 <= len(tile) <= rows for tile in tiles)
    tiles = patching._plan_tiles("mlp_out", [2, 5, 6], [1, 4], 64, 5, 6)
    assert sorted(cell for tile in tiles for cell in tile) == [(l, p) for l in (2, 5, 6) for p in (1, 4)]


@pytest.mark.parametrize("call, words", [
    (lambda s: check_pair(s, CLEAN, "The capital of the United Kingdom is"), ["5 tokens", "token for token"]),
    (lambda s: check_pair(s, CLEAN, "  "), ["corrupted prompt is empty"]),
    (lambda s: check_pair(s, "", CORRUPT), ["clean prompt is empty"]),
    (lambda s: check_pair(s, CLEAN, "a " * 400), ["corrupted prompt", "shorten"]),
    (lambda s: resolve_metric(s, "logit_diff", " Eiffel", " Rome"), ["' Eiffel' is", "tokens (", "single token"]),
    (lambda s: resolve_metric(s, "logit_diff", " Paris"), ["second token"]),
    (lambda s: resolve_metric(s, "logit_diff", " Paris", " Paris"), ["same"]),
    (lambda s: resolve_metric(s, "entropy", " Paris"), ["unknown metric"]),
    (lambda s: resolve_metric(s, "prob", ""), ["empty"]),
    (lambda s: patching_grid(s, CLEAN, CORRUPT, _metric(s), site="resid_post"), ["unknown patching site"]),
    (lambda s: patching_grid(s, CLEAN, CORRUPT, _metric(s), layers=[4]), ["layer 4", "0..3"]),
    (lambda s: patching_grid(s, CLEAN, CORRUPT, _metric(s), site="mlp_out", layers=[0]), ["layer 0", "1..3"]),
    (lambda s: patching_grid(s, CLEAN, CORRUPT, _metric(s), positions=[5]), ["position 5", "0..4"]),
    (lambda s: patching_grid(s, CLEAN, CORRUPT, _metric(s), layers=[]), ["no layers"]),
    (lambda s: patching_grid(s, CLEAN, CORRUPT, PatchMetric("prob", 10**6)), ["vocabulary"]),
    (lambda s: patch_lens(s, CLEAN, CORRUPT, (4, 0), (1, 1)), ["source layer 4", "0..3"]),
    (lambda s: patch_lens(s, CLEAN, CORRUPT, (1, 0), (1, 9)), ["target position 9"]),
    (lambda s: patch_lens(s, CLEAN, CORRUPT, (1, 0), (1, 1), top_k=0), ["top-k"]),
])
def test_bad_input_is_a_clear_value_error(llama: ModelSession, call, words: list[str]) -> None:
    with pytest.raises(ValueError) as err:
        call(llama)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word.lower() in message.lower(), (word, message)


def test_bad_input_fails_before_any_pass(llama: ModelSession, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pass(_p):
        raise AssertionError("a forward pass ran before the input was checked")

    monkeypatch.setattr(llama, "run", no_pass)
    with pytest.raises(ValueError):
        patching_grid(llama, CLEAN, CORRUPT, _metric(llama), layers=[9])
    with pytest.raises(ValueError):
        patch_lens(llama, CLEAN, CORRUPT, (1, 0), (1, 1), targets=[""])


def test_default_metric_reads_the_final_top1s(llama: ModelSession) -> None:
    logits = llama.run(Pass(torch.stack([llama.tokenize(CLEAN), llama.tokenize(CORRUPT)]), logits=True)).logits
    metric, note = patching.default_metric(llama, "logit_diff", CLEAN, CORRUPT)
    assert metric.token_id == int(logits[0].argmax()) and metric.other_id != metric.token_id
    if int(logits[1].argmax()) != metric.token_id:
        assert metric.other_id == int(logits[1].argmax()) and note == ""
    same, note = patching.default_metric(llama, "logit_diff", CLEAN, CLEAN)
    assert same.other_id == int(logits[0].topk(2).indices[1]) and "second choice" in note
    typed, _ = patching.default_metric(llama, "logit_diff", CLEAN, CORRUPT, " Paris", " Rome")
    assert typed == _metric(llama)
    prob, _ = patching.default_metric(llama, "prob", CLEAN, CORRUPT, None, " Rome")
    assert prob.other_id is None and prob.token_id == metric.token_id


# -- snippets ---------------------------------------------------------------------------------------------------------
def _exec_with(session: ModelSession, code: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Run a snippet with ModelSession.load answering ``session`` (the tiny model stands in for the named one)."""
    monkeypatch.setattr(ModelSession, "load", classmethod(lambda cls, spec, progress=None: session))
    namespace: dict = {}
    exec(compile(code, "<snippet>", "exec"), namespace)  # noqa: S102 - our own generated code
    return namespace


def test_grid_snippet_reproduces_the_grid(llama: ModelSession, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    code = grid_snippet("bundled", CLEAN, CORRUPT, "logit_diff", " Paris", " Rome", site="attn_out", layers=[1, 3])
    assert "ModelSession.load(ModelSpec.parse('bundled').resolved())" in code and "print(result.frame)" in code
    got = _exec_with(llama, code, monkeypatch)["result"]
    direct = patching_grid(llama, CLEAN, CORRUPT, _metric(llama), site="attn_out", layers=[1, 3])
    pd.testing.assert_frame_equal(got.frame, direct.frame)
    assert "effect" in capsys.readouterr().out
    prob = grid_snippet("bundled", CLEAN, CORRUPT, "prob", "'quoted' \"Paris\"", None)
    compile(prob, "<snippet>", "exec")
    assert "other" not in prob.split("resolve_metric")[1].split("\n")[0]


def test_patch_lens_snippet_reproduces_the_lens(llama: ModelSession, monkeypatch: pytest.MonkeyPatch) -> None:
    code = patch_lens_snippet("bundled", CLEAN, CORRUPT, (2, 3), (1, 4), top_k=3, targets=[" Paris"])
    got = _exec_with(llama, code, monkeypatch)["result"]
    direct = patch_lens(llama, CLEAN, CORRUPT, (2, 3), (1, 4), top_k=3, targets=[" Paris"])
    pd.testing.assert_frame_equal(got.frame, direct.frame)


# -- the command line -----------------------------------------------------------------------------------------------
def test_cli_names_match_the_analysis() -> None:
    assert cli_patch.METRICS == patching.METRIC_KINDS and cli_patch.SITES == patching.PATCH_SITES


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch):
    """``main.main`` with ``patch`` registered (the lead wires it into MODULES; added here when not yet)."""
    if cli_patch not in cli_main.MODULES:
        monkeypatch.setattr(cli_main, "MODULES", (*cli_main.MODULES, cli_patch))
    return cli_main.main


@pytest.mark.parametrize("args, words", [
    (["--prompt", CLEAN], ["--corrupt is missing"]),
    (["--prompt", " ", "--corrupt", CORRUPT], ["--prompt is empty"]),
    (["--prompt", CLEAN, "--corrupt", CORRUPT, "--metric", "prob", "--other", " Rome"], ["--other"]),
    (["--prompt", CLEAN, "--corrupt", CORRUPT, "--layers", "1,x"], ["--layers", "whole numbers"]),
    (["--prompt", CLEAN, "--corrupt", CORRUPT, "--layers", "31", "--site", "mlp_out"], ["--layers 31", "1..30"]),
    (["--prompt", CLEAN, "--corrupt", CORRUPT, "--layers", "0", "--site", "attn_out"], ["--layers 0", "1..30"]),
    (["--prompt", CLEAN, "--source-cell", "3,1"], ["both"]),
    (["--prompt", CLEAN, "--source-cell", "3", "--target-cell", "1,1"], ["--source-cell", "LAYER,POSITION"]),
    (["--prompt", CLEAN, "--source-cell", "31,0", "--target-cell", "1,1"], ["--source-cell layer 31", "0..30"]),
    (["--prompt", CLEAN, "--corrupt", CORRUPT, "--batch-size", "0"], ["--batch-size"]),
    (["--prompt", CLEAN, "--corrupt", CORRUPT, "--token", ""], ["empty"]),
])
def test_cli_refuses_bad_arguments_before_loading(cli, monkeypatch, capsys, args: list[str],
                                                  words: list[str]) -> None:
    """Exit 2, one ``error:`` line; the model never loads (the bounds come from the bundled model's config.json)."""
    monkeypatch.setattr(cli_patch, "load_session", lambda model: pytest.fail("the model loaded"))
    assert cli(["patch", *args]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    for word in words:
        assert word.lower() in err[0].lower(), (word, err[0])


@pytest.mark.parametrize("args", [["--metric", "entropy"], ["--site", "resid_post"], ["--format", "xml"]])
def test_cli_refuses_unknown_choices(cli, capsys, args: list[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli(["patch", "--prompt", CLEAN, "--corrupt", CORRUPT, *args])
    assert done.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "invalid choice" in err[0]


def test_cli_grid_prints_the_frame(cli, llama, monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli_patch, "load_session", lambda model: llama)
    assert cli(["patch", "--prompt", CLEAN, "--corrupt", CORRUPT, "--token", " Paris", "--other", " Rome",
                "--site", "mlp_out", "--layers", "1,3"]) == 0
    rows = pd.DataFrame(json.loads(capsys.readouterr().out))
    direct = patching_grid(llama, CLEAN, CORRUPT, _metric(llama), site="mlp_out", layers=[1, 3]).frame
    assert list(rows.columns) == GRID_COLUMNS and len(rows) == len(direct)
    np.testing.assert_allclose(rows.value, direct.value, atol=1e-6)
    assert cli(["patch", "--prompt", CLEAN, "--corrupt", CORRUPT, "--format", "table", "--layers", "0"]) == 0
    assert "effect" in capsys.readouterr().out.splitlines()[0]


def test_cli_patch_lens(cli, llama, monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli_patch, "load_session", lambda model: llama)
    assert cli(["patch", "--prompt", CLEAN, "--corrupt", CORRUPT, "--source-cell", "3,-1", "--target-cell", "1,2",
                "--top-k", "3", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("layer,position,token,top_tokens") and "in_cone" in out.splitlines()[0]
    assert len(out.strip().splitlines()) == 1 + 4 * 5


def test_register_adds_patch() -> None:
    parser = argparse.ArgumentParser()
    cli_patch.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["patch", "--prompt", "a", "--corrupt", "b"])
    assert (args.metric, args.site, args.format, args.func) == ("logit_diff", "resid", "json", cli_patch.cmd_patch)

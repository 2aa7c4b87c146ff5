"""The science on the real bundled model (SmolLM2-135M-Instruct) and the ``python -m core`` CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.analyses.lens import LENS_COLUMNS, first_layer_reaching, resolve_target, run_lens, settling_layer
from core.lenses.stats import lens_stats
from core.model.loading import ModelSpec
from core.model.session import ModelSession

from numerics import assert_ranks_within_ties, assert_top1_within_ties

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "The capital of France is"
N_LAYERS = 30
LONG_PROMPT = (
    "The Eiffel Tower was built for the 1889 World's Fair in Paris. At first many artists disliked it, "
    "but today it is the most visited paid monument in the world, and its lights sparkle every evening"
)


@pytest.fixture(scope="module")
def paris_id(bundled_session: ModelSession) -> int:
    choice = resolve_target(bundled_session, " Paris")
    assert choice.note == "" and choice.token == " Paris"
    return choice.token_id


def test_bundled_dimensions(bundled_session: ModelSession) -> None:
    a = bundled_session.adapter
    assert (a.model_type, a.n_layers, a.d_model, a.n_heads, a.d_vocab) == ("llama", N_LAYERS, 576, 9, 49152)
    assert bundled_session.model.config.num_key_value_heads == 3
    assert a.d_head == 64 and a.d_mlp == 1536
    assert bundled_session.model.config._attn_implementation == "sdpa"  # a pattern trace switches to eager
    assert bundled_session.spec.key() == "bundled"


def test_paris_is_the_final_top1(bundled_session: ModelSession, paris_id: int) -> None:
    ids = bundled_session.tokenize(PROMPT)
    assert bundled_session.token_strings(ids) == ("The", " capital", " of", " France", " is")
    with torch.no_grad():
        logits = bundled_session.model(ids[None]).logits[0, -1]
    assert int(logits.argmax()) == paris_id
    assert float(torch.softmax(logits, -1)[paris_id]) > 0.2


def test_logit_lens_rank_of_paris(bundled_session: ModelSession, paris_id: int) -> None:
    result = run_lens(bundled_session, PROMPT, targets=[" Paris"])
    frame = result.frame
    last_pos = len(result.tokens) - 1
    at_last = frame[frame.position == last_pos].set_index("layer").sort_index()
    assert at_last.index.tolist() == list(range(N_LAYERS + 1))
    assert at_last.target_rank.loc[N_LAYERS] == 1
    assert at_last.top_tokens.loc[N_LAYERS][0] == " Paris"
    # Measured: " Paris" is first top-1 only after the last block (rank 3 after block 29, 7 after 28,
    # in the hundreds from block 24 down and in the thousands before): the logit lens of this small
    # model only commits at the very end.
    first_top1 = first_layer_reaching(frame, last_pos, rank=1)
    assert first_top1 == N_LAYERS
    assert settling_layer(frame, last_pos, rank=1) == N_LAYERS
    first_top10 = first_layer_reaching(frame, last_pos, rank=10)
    assert first_top10 is not None and 24 <= first_top10 < N_LAYERS
    assert at_last.target_rank.loc[:20].min() > 100  # far from the top well after the embeddings
    assert at_last.target_prob.loc[N_LAYERS] > 0.2 > at_last.target_prob.loc[: N_LAYERS - 1].max()


def test_lens_ranks_match_an_independent_hidden_state_lens(bundled_session: ModelSession, paris_id: int) -> None:
    """Ranks from lens_stats equal ranks from HF hidden states + model.model.norm + lm_head, up to near-ties."""
    model = bundled_session.model
    ids = bundled_session.tokenize(PROMPT)
    with torch.no_grad():
        hidden = model(ids[None], output_hidden_states=True).hidden_states
        logits = torch.stack([model.lm_head(h[0, -1] if l == N_LAYERS else model.model.norm(h[0, -1]))
                              for l, h in enumerate(hidden)])  # [layer, vocab]
    stats = lens_stats(bundled_session, bundled_session.trace(PROMPT), targets=[paris_id])
    got = torch.from_numpy(stats.target_rank[:, -1, :])  # [layer, 1]
    # different computations (lens_stats' chunked lens vs one [vocab] row per layer from HF's hidden states):
    # each rank lies between the bounds that near-ties of the reference logits allow (numerics.logit_tol;
    # where no token is that close to " Paris" the bounds pin the rank exactly)
    target = torch.full((N_LAYERS + 1, 1), paris_id)
    assert_ranks_within_ties(got, logits, target)


def test_last_layer_lens_equals_logits_on_a_long_prompt(bundled_session: ModelSession) -> None:
    trace = bundled_session.trace(LONG_PROMPT)
    assert trace.n_pos > 30
    a = bundled_session.adapter
    with torch.no_grad():
        out = bundled_session.model(trace.input_ids[None], output_hidden_states=True)
        lens_logits = a.unembed(a.final_norm(trace.resid[-1]))  # [pos, vocab]
    logits = out.logits[0]
    assert float((lens_logits - logits).abs().max()) <= 1e-4 * float(logits.abs().max())
    for layer in (0, 1, 15, N_LAYERS - 1):
        torch.testing.assert_close(trace.resid[layer], out.hidden_states[layer][0], rtol=1e-5, atol=1e-4)
    stats = lens_stats(bundled_session, trace, top_k=5, layers=[N_LAYERS - 1, N_LAYERS])
    probs = torch.softmax(logits, -1)
    # different computations (lens_stats' output logits vs a separate forward): the top-1 up to near-ties
    assert_top1_within_ties(stats.top_ids[-1, :, 0], logits)
    np.testing.assert_allclose(stats.top_probs[-1], probs.topk(5, -1).values.numpy(), rtol=1e-3, atol=1e-6)
    assert np.abs(stats.kl_to_final[-1]).max() < 1e-4
    ce = torch.nn.functional.cross_entropy(logits[:-1], trace.input_ids[1:], reduction="none")
    np.testing.assert_allclose(stats.next_token_ce[-1, :-1], ce.numpy(), rtol=1e-3, atol=1e-4)
    assert float(ce.mean()) < 4.0  # a trained model reads ordinary English well


def test_random_twin_does_not_know_paris(bundled_session: ModelSession, paris_id: int) -> None:
    twin = ModelSession.load(ModelSpec(random_init=True))
    assert twin.adapter.n_layers == N_LAYERS and twin.adapter.d_vocab == 49152
    trained = dict(bundled_session.model.named_parameters())
    for name, param in twin.model.named_parameters():
        if param.dim() == 2:
            assert not torch.equal(param, trained[name]), name
    ids = twin.tokenize(PROMPT)
    with torch.no_grad():
        probs = torch.softmax(twin.model(ids[None]).logits[0, -1], -1)
    assert int(probs.argmax()) != paris_id
    assert float(probs[paris_id]) < 1e-3
    result = run_lens(twin, PROMPT, targets=[" Paris"])
    assert result.frame[result.frame.position == len(ids) - 1].target_rank.min() > 10


# -- CLI ---------------------------------------------------------------------------------------
CLI_ARGS = ("--prompt", PROMPT, "--top-k", "3", "--target", " Paris")
CLI_RUNS: dict[str, tuple[str, ...]] = {
    "json": ("--model", "bundled", *CLI_ARGS, "--format", "json"),
    "csv": (*CLI_ARGS, "--format", "csv"),
    "empty": ("--prompt", "", "--format", "json"),
    "unknown": ("--model", "nobody-here/no-such-model-xyz", "--prompt", PROMPT),
    "multi": ("--prompt", PROMPT, "--target", " Xylophonistically", "--top-k", "2"),
}
CliRuns = dict[str, subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def cli() -> CliRuns:
    """Every CLI run of this module, started together (each pays the torch import) and awaited."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    procs = {name: subprocess.Popen([sys.executable, "-m", "core", "lens", *args], cwd=ROOT, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, args in CLI_RUNS.items()}
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


def assert_one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def cli_json_records(cli: CliRuns) -> list[dict]:
    proc = cli["json"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""  # no note for a single-token target, no traceback
    return json.loads(proc.stdout)


def test_cli_json(cli_json_records: list[dict]) -> None:
    records = cli_json_records
    assert isinstance(records, list) and len(records) == (N_LAYERS + 1) * 5
    assert all(list(r) == LENS_COLUMNS for r in records)
    assert {(r["layer"], r["position"]) for r in records} == {(l, p) for l in range(N_LAYERS + 1) for p in range(5)}
    assert [r["token"] for r in records[:5]] == ["The", " capital", " of", " France", " is"]
    assert all(len(r["top_tokens"]) == len(r["top_probs"]) == 3 for r in records)
    assert {r["target"] for r in records} == {" Paris"}
    final = next(r for r in records if r["layer"] == N_LAYERS and r["position"] == 4)
    assert final["top_tokens"][0] == " Paris" and final["target_rank"] == 1
    assert final["target_prob"] == pytest.approx(final["top_probs"][0], rel=1e-5)
    assert final["kl_to_final"] == pytest.approx(0.0, abs=1e-5)
    ranks = {r["layer"]: r["target_rank"] for r in records if r["position"] == 4}
    assert min(ranks[l] for l in range(N_LAYERS)) > 1
    assert all(r["target_rank"] >= 1 and r["entropy"] >= 0 and r["kl_to_final"] >= 0 for r in records)


def test_cli_csv_is_the_same_table(cli: CliRuns, cli_json_records: list[dict]) -> None:
    proc = cli["csv"]
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(io.StringIO(proc.stdout), keep_default_na=False)
    assert list(table.columns) == LENS_COLUMNS
    expected = pd.DataFrame(cli_json_records)
    assert len(table) == len(expected)
    for col in ("layer", "position", "token", "target", "target_rank"):  # exact: same computation (the same
        assert table[col].tolist() == expected[col].tolist(), col       # command and shapes in two processes)
    for col in ("target_prob", "entropy", "kl_to_final"):
        np.testing.assert_allclose(table[col], expected[col], rtol=1e-5, atol=1e-7)
    assert table.top_tokens.tolist() == [str(t) for t in expected.top_tokens]  # exact: same computation


def test_cli_defaults_in_process(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Default top-k (10) and default targets (each position's final top-1), through ``main``."""
    from transformers.utils import logging as hf_logging

    from core.cli.main import main

    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")  # main() sets these; restore them afterwards
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        assert main(["lens", "--prompt", PROMPT]) == 0
    finally:
        hf_logging.enable_progress_bar()
    records = json.loads(capsys.readouterr().out)
    assert len(records) == (N_LAYERS + 1) * 5
    assert all(len(r["top_tokens"]) == 10 for r in records)
    last_layer = [r for r in records if r["layer"] == N_LAYERS]
    # exact: same computation (the default target is the argmax of the tensor the last layer's row reads)
    assert all(r["target"] == r["top_tokens"][0] and r["target_rank"] == 1 for r in last_layer)
    assert last_layer[-1]["target"] == " Paris"


def test_cli_empty_prompt_fails_cleanly(cli: CliRuns) -> None:
    assert_one_line_error(cli["empty"], "prompt is empty")


def test_cli_unknown_model_fails_cleanly(cli: CliRuns) -> None:
    assert_one_line_error(cli["unknown"], "nobody-here/no-such-model-xyz")


def test_cli_multi_token_target_notes_on_stderr(cli: CliRuns) -> None:
    proc = cli["multi"]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "' Xylophonistically' is" in proc.stderr and "using the first" in proc.stderr
    records = json.loads(proc.stdout)
    first_piece = proc.stderr.split("using the first, ")[1].strip().rstrip(".")
    assert {repr(r["target"]) for r in records} == {first_piece}
    assert len(records) == (N_LAYERS + 1) * 5

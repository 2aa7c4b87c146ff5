"""Contributions and attention on the real bundled model (SmolLM2-135M-Instruct), and `python -m core contributions`
(assumes core.cli.contributions is registered in core.cli.main.MODULES)."""

from __future__ import annotations

import io
import json

import pytest
import torch

from core.analyses.attention_heads import attention_at
from core.analyses.contributions import contribution_graph, decompose, lens_logits
from core.model.session import ModelSession

pytestmark = pytest.mark.integration

PROMPT = "The capital of France is"
N_LAYERS = 30


@pytest.fixture(scope="module")
def paris(bundled_session: ModelSession):
    return decompose(bundled_session, PROMPT, N_LAYERS, -1, target=" Paris", other=" London")


def test_dla_sums_to_the_real_logit(bundled_session: ModelSession, paris) -> None:
    ids = bundled_session.tokenize(PROMPT)
    with torch.no_grad():
        logits = bundled_session.model(ids[None]).logits[0, -1].float()
    assert paris.target == " Paris" and paris.other == " London"
    assert int(logits.argmax()) == paris.target_id
    for heads in (False, True):
        parts = paris.parts(heads=heads)
        assert abs(parts.dla.sum() - float(logits[paris.target_id])) < 1e-3
        assert abs(parts.dla_diff.sum() - float(logits[paris.target_id] - logits[paris.other_id])) < 1e-3
    assert paris.residual_error < 1e-5


def test_the_late_blocks_write_paris(paris) -> None:
    """Measured: the last blocks' MLPs (B30 MLP first, about 7 of the 17 logits) and block 24's attention (head 4)
    carry most of the logit; block 24's attention carries most of the Paris - London difference."""
    whole = paris.parts().sort_values("dla", ascending=False)
    assert whole.iloc[0].part == "B30 MLP"
    assert (whole.head(5).block >= 24).all()
    assert whole[whole.kind == "embed"].dla.abs().iloc[0] < 1.0
    diff = paris.parts().sort_values("dla_diff", ascending=False).iloc[0]
    assert diff.kind == "attn" and diff.block >= 20
    heads = paris.parts(heads=True)
    top_head = heads[heads.kind == "head"].sort_values("dla", ascending=False).iloc[0]
    assert top_head.part == "B24H4"


def test_intermediate_layer_sums_to_the_lens_logit(bundled_session: ModelSession) -> None:
    d = decompose(bundled_session, PROMPT, 20, 3, target=" Paris")
    real = lens_logits(bundled_session.adapter, d.residual)
    assert abs(d.parts().dla.sum() - float(real[d.target_id])) < 1e-3


def test_graph_and_attention_view(bundled_session: ModelSession) -> None:
    g = contribution_graph(bundled_session, PROMPT, -1, threshold=0.0)
    sums = g.edges.groupby(["target_layer", "target_position", "target_kind"]).weight.sum()
    assert ((sums - 1).abs() < 1e-5).all()
    pruned = contribution_graph(bundled_session, PROMPT, -1, threshold=0.04)
    assert 0 < len(pruned.edges) < len(g.edges)
    view = attention_at(bundled_session, PROMPT, 24, -1, target=" Paris")
    assert ((view.frame.groupby("head").attention.sum() - 1).abs() < 1e-5).all()
    top = view.heads.sort_values("dla").iloc[-1]
    assert top["head"] == 4 and top["top_source"] == 3  # block 24's Paris head reads " France" (weight ~0.9)


def test_cli_table_json_and_graph(capsys) -> None:
    from core.cli.main import main

    assert main(["contributions", "--prompt", PROMPT, "--target", " Paris", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["kind"] for r in rows} == {"embed", "attn", "mlp", "const"} and rows[0]["target"] == " Paris"
    assert main(["contributions", "--prompt", PROMPT, "--layer", "12", "--position", "3", "--heads"]) == 0
    out = capsys.readouterr().out
    assert "B12H8" in out and "B13" not in out
    assert main(["contributions", "--prompt", PROMPT, "--graph", "--threshold", "0.1", "--format", "csv"]) == 0
    import pandas as pd

    edges = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(edges) and (edges.weight >= 0.1).all()


@pytest.mark.parametrize("args, words", [
    (["--layer", "31"], ["--layer 31", "0..30"]),
    (["--layer", "-1"], ["--layer -1"]),
    (["--graph", "--layer", "0"], ["graph needs a block"]),
    (["--threshold", "2"], ["--threshold"]),
    (["--graph", "--heads"], ["--heads"]),
    (["--target", ""], ["--target is empty"]),
])
def test_cli_refuses_bad_input_before_loading(capsys, monkeypatch, args, words) -> None:
    from core.cli import contributions
    from core.cli.main import main

    monkeypatch.setattr(contributions, "load_session", lambda *a: pytest.fail("loaded the model"))
    assert main(["contributions", "--prompt", PROMPT, *args]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err

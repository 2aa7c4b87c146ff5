"""Contributions and attention at one cell, on a tiny model of every architecture: value vectors, the decomposition,
direct logit attribution, the contribution graph and the attention view keep their invariants."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from core.analyses.attention_heads import attention_at, head_source_vectors
from core.analyses.contributions import (EDGE_COLUMNS, attention_sources, contribution_graph, decompose,
                                         lens_logits, node_tokens, proximity)
from core.model.executors import Pass
from core.model.hooks import SITE_ORDER, SITES, Capture
from core.model.session import ModelSession

PROMPT = "The capital of France is Paris, and the capital of Italy is"
RESID_RTOL = 1e-4  # parts vs the captured residual: max |error| / max |residual| (float32 sums of ~15 vectors)
LOGIT_ATOL = 1e-3  # DLA sum vs the real logit (logits of the tiny models are O(1..10))


def test_attn_in_is_a_site_in_execution_order() -> None:
    assert SITES["attn_in"].part == "attn" and SITES["attn_in"].reads == "input"
    assert SITE_ORDER["resid_pre"] < SITE_ORDER["attn_in"] < SITE_ORDER["attn_z"]
    assert set(SITE_ORDER) == set(SITES)


def test_values_reproduce_the_head_outputs(arch_session: ModelSession) -> None:
    """sum_j alpha[h, p, j] v_j^h = z[p, h] (site attn_z) in every block."""
    s = arch_session
    ids = s.tokenize(PROMPT)
    blocks = tuple(range(s.adapter.n_layers))
    out = s.run(Pass(ids[None], captures=(Capture("attn_in", blocks, row=0), Capture("attn_z", blocks, row=0)),
                     attentions=True))
    for b in blocks:
        values = s.adapter.head_values(b, out.captured.get("attn_in", b))
        assert values.shape == (ids.numel(), s.adapter.n_heads, s.adapter.d_head)
        z = torch.einsum("hpj,jhd->phd", out.attentions[b][0], values).reshape(ids.numel(), -1)
        torch.testing.assert_close(z, out.captured.get("attn_z", b), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer", [0, 1, 3])
def test_parts_sum_to_the_residual_and_dla_to_the_logit(arch_session: ModelSession, layer: int) -> None:
    s = arch_session
    trace = s.trace(PROMPT)
    position = 5
    d = decompose(s, PROMPT, layer, position, target=" Paris", other=" Rome")
    resid = trace.resid[layer, position]
    torch.testing.assert_close(d.residual, resid, atol=1e-6, rtol=0)  # same capture
    for heads in (False, True):
        parts = d.parts(heads=heads)
        vecs = d.vectors[d.frame.index[d.frame["fine" if heads else "whole"]]]
        err = float((vecs.sum(0) - resid).abs().max() / resid.abs().max())
        assert err < RESID_RTOL, (heads, err)
        real = lens_logits(s.adapter, resid)
        assert abs(parts.dla.sum() - float(real[d.target_id])) < LOGIT_ATOL
        assert abs(parts.dla_other.sum() - float(real[d.other_id])) < LOGIT_ATOL
        assert abs(parts.dla_diff.sum() - float(real[d.target_id] - real[d.other_id])) < LOGIT_ATOL
    assert d.residual_error < RESID_RTOL
    assert abs(d.logit - float(lens_logits(s.adapter, resid)[d.target_id])) < 1e-5
    kinds = d.frame.kind.value_counts()
    assert kinds.get("attn", 0) == layer and kinds.get("head", 0) == layer * s.adapter.n_heads
    assert kinds["embed"] == 1 and kinds["const"] == 1
    # heads + bias = the attention output
    for block in range(1, layer + 1):
        rows = d.frame[(d.frame.block == block)]
        attn = d.vectors[rows.index[rows.kind == "attn"]][0]
        split = d.vectors[rows.index[rows.kind.isin(["head", "attn_bias"])]].sum(0)
        torch.testing.assert_close(split, attn, atol=1e-5, rtol=1e-5)


def test_last_layer_dla_sums_to_the_models_own_logit(arch_session: ModelSession) -> None:
    s = arch_session
    ids = s.tokenize(PROMPT)
    with torch.no_grad():
        logits = s.model(ids[None]).logits[0, -1].float()
    d = decompose(s, PROMPT, s.adapter.n_layers, -1)
    assert d.target_id == int(logits.argmax())  # default target: the final top-1
    assert abs(d.parts().dla.sum() - float(logits[d.target_id])) < LOGIT_ATOL
    assert abs(d.parts(heads=True).dla.sum() - float(logits[d.target_id])) < LOGIT_ATOL


def test_per_source_attention_sums_to_the_attention_output(arch_session: ModelSession) -> None:
    s = arch_session
    trace = s.trace(PROMPT, capture=("attn_out",))
    for block in range(1, s.adapter.n_layers + 1):
        sources = attention_sources(s, PROMPT, block)  # [pos, src, d_model]
        torch.testing.assert_close(sources.sum(1), trace.attn_out[block - 1], atol=1e-5, rtol=1e-5)


def _incoming_sums(edges: pd.DataFrame) -> pd.Series:
    return edges.groupby(["target_layer", "target_position", "target_kind"]).weight.sum()


def test_graph_weights_sum_to_one_and_threshold_zero_keeps_all_reachable(arch_session: ModelSession) -> None:
    s = arch_session
    n, tp = s.adapter.n_layers, 6
    g = contribution_graph(s, PROMPT, target_position=tp, layer=n, threshold=0.0)
    assert list(g.edges.columns) == EDGE_COLUMNS
    assert (g.edges.weight >= 0).all() and (g.edges.weight <= 1 + 1e-9).all()
    sums = _incoming_sums(g.edges)
    assert ((sums - 1).abs() < 1e-5).all()
    # every node that can reach the target: residual layers 0..n-1 (and mid / mlp of blocks 1..n-1) at positions
    # 0..tp, and block n's nodes at the target position only
    counts = g.nodes.kind.value_counts()
    assert counts["resid"] == n * (tp + 1) + 1
    assert counts["mid"] == (n - 1) * (tp + 1) + 1 == counts["mlp"]
    assert len(g.edges) == g.n_candidates
    pruned = contribution_graph(s, PROMPT, target_position=tp, layer=n, threshold=0.2)
    assert len(pruned.edges) < len(g.edges) and (pruned.edges.weight >= 0.2).all()
    assert set(map(tuple, pruned.nodes[["layer", "position", "kind"]].values)) <= \
        set(map(tuple, g.nodes[["layer", "position", "kind"]].values))
    assert ((n, tp, "resid") in set(map(tuple, pruned.nodes[["layer", "position", "kind"]].values)))


def test_proximity_weights() -> None:
    y = torch.tensor([[2.0, 0.0]])
    comps = torch.tensor([[[2.0, 0.0], [0.0, 0.0], [-1.0, 0.0], [1.0, 0.0]]])  # y = c0 + c1 only if...
    w = proximity(y, comps)
    assert torch.allclose(w.sum(-1), torch.ones(1))
    assert w[0, 2] == 0 and w[0, 1] == 0 and w[0, 0] > w[0, 3] > 0
    assert torch.allclose(proximity(torch.zeros(1, 2), torch.ones(1, 2, 2)), torch.full((1, 2), 0.5))


def test_node_tokens_are_ranked(make_session) -> None:
    s = make_session("gpt2")
    top = node_tokens(s, PROMPT, (2, 3, "mlp"), readout_layer=3, k=5)
    assert list(top.direction.value_counts().sort_index()) == [5, 5]
    promoted = top[top.direction == "promoted"].logit.to_numpy()
    assert (promoted[:-1] >= promoted[1:]).all() and promoted[0] > top[top.direction == "suppressed"].logit.max()
    resid_top = node_tokens(s, PROMPT, (3, -1, "resid"), readout_layer=3, k=1)
    with torch.no_grad():
        logits = s.model(s.tokenize(PROMPT)[None]).logits[0, -1]
    assert int(resid_top.token_id.iloc[0]) == int(logits.argmax())  # its own residual: the model's top-1


def test_attention_rows_sum_to_one_and_value_weighting_matches_the_heads(arch_session: ModelSession) -> None:
    s = arch_session
    trace = s.trace(PROMPT, capture=("head_z",))
    position = 7
    for block in (1, s.adapter.n_layers):
        view = attention_at(s, PROMPT, block, position, target=" Paris")
        rows = view.frame.groupby("head").attention.sum()
        assert ((rows - 1).abs() < 1e-5).all() and len(rows) == s.adapter.n_heads
        assert (view.frame.source_position <= position).all()
        assert ((view.frame.groupby("head").value_weighted_share.sum() - 1).abs() < 1e-5).all()
        heads = s.head_outputs(trace, block - 1)[position]  # [head, d_model]
        torch.testing.assert_close(torch.tensor(view.heads.write_norm.to_numpy(), dtype=torch.float32),
                                   heads.norm(dim=-1), atol=1e-4, rtol=1e-4)
        # the per-source vectors sum to each head's output
        ids = s.tokenize(PROMPT)
        out = s.run(Pass(ids[None], captures=(Capture("attn_in", (block - 1,), row=0),), attentions=True))
        vecs = head_source_vectors(s.adapter, block - 1, out.captured.get("attn_in", block - 1),
                                   out.attentions[block - 1][0, :, position])
        torch.testing.assert_close(vecs.sum(1), heads, atol=1e-5, rtol=1e-5)
        # value-weighted = alpha * ||v W_O||
        alpha = torch.tensor(view.frame.attention.to_numpy()).reshape(s.adapter.n_heads, -1)
        assert torch.allclose(torch.tensor(view.frame.value_weighted.to_numpy()).reshape(alpha.shape),
                              vecs[:, : position + 1].norm(dim=-1).double(), atol=1e-5)
        assert alpha.shape[1] == position + 1
    # the heads' DLA: their share of the model's logit, with the same frozen readout as decompose
    d = decompose(s, PROMPT, s.adapter.n_layers, position, target=" Paris")
    last = d.frame[(d.frame.kind == "head") & (d.frame.block == s.adapter.n_layers)].dla.to_numpy()
    view = attention_at(s, PROMPT, s.adapter.n_layers, position, target=" Paris")
    assert abs(view.heads.dla.to_numpy() - last).max() < 1e-4


def test_post_norm_opt_is_refused(make_session) -> None:
    s = make_session("opt", do_layer_norm_before=False)
    with pytest.raises(ValueError, match="normalises after each sublayer"):
        decompose(s, PROMPT, 1, -1)
    with pytest.raises(ValueError, match="normalises after each sublayer"):
        contribution_graph(s, PROMPT)
    with pytest.raises(ValueError, match="normalises after each sublayer"):
        attention_at(s, PROMPT, 1, -1)


def test_bad_input_is_refused_with_a_message(make_session) -> None:
    s = make_session("llama")
    n = s.adapter.n_layers
    with pytest.raises(ValueError, match=r"layer must lie in 0\.\.3"):
        decompose(s, PROMPT, n + 1, 0)
    with pytest.raises(ValueError, match="position must lie"):
        decompose(s, PROMPT, 1, 99)
    with pytest.raises(ValueError, match="prompt is empty"):
        decompose(s, "  ", 1, 0)
    with pytest.raises(ValueError, match="target is empty"):
        decompose(s, PROMPT, 1, 0, target="")
    with pytest.raises(ValueError, match="Token ids lie"):
        decompose(s, PROMPT, 1, 0, target=10**7)
    with pytest.raises(ValueError, match=r"layer must lie in 1\.\.3"):
        contribution_graph(s, PROMPT, layer=0)
    with pytest.raises(ValueError, match="threshold must lie"):
        contribution_graph(s, PROMPT, threshold=1.5)
    with pytest.raises(ValueError, match=r"layer must lie in 1\.\.3"):
        attention_at(s, PROMPT, 0, 0)
    with pytest.raises(ValueError, match="position must lie"):
        attention_at(s, PROMPT, 1, -99)
    with pytest.raises(ValueError, match="node kind"):
        node_tokens(s, PROMPT, (1, 0, "attn"), readout_layer=n)


@pytest.mark.parametrize("tile_floats", [48 * 2 * 2, 48 * 30 * 20])
def test_graph_tiles_give_the_same_weights(make_session, monkeypatch, tile_floats: int) -> None:
    """Blocks at once, one block at a time, or a few target positions at a time: the same edges."""
    import core.analyses.contributions as contributions

    s = make_session("qwen2")
    whole = contribution_graph(s, PROMPT, threshold=0.0).edges
    monkeypatch.setattr(contributions, "_TILE_FLOATS", tile_floats)
    tiled = contribution_graph(s, PROMPT, threshold=0.0).edges
    pd.testing.assert_frame_equal(whole.drop(columns="weight"), tiled.drop(columns="weight"))
    assert abs(whole.weight.to_numpy() - tiled.weight.to_numpy()).max() < 1e-6

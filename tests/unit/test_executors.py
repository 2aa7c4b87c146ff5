"""The nnsight executor (the code path NDIF runs) against the local hooks, on every tiny architecture.

Mode "here" runs the nnsight trace in this process; mode "simulate" serialises the request exactly as for NDIF,
deserialises it with Layerscope's own modules hidden (nnsight's local simulation: what the server would have) and runs
it here. Both run the same kernels on the same weights as the local executor, in the same process, so their numbers
are compared exactly (the same computation); a padded batch, a stop or a reduction that differed would show.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ARCHS

import core.lenses.reduce
from core.analyses.attention_mlp.passes import ablated_token_probs, neuron_acts
from core.analyses.lens import run_lens
from core.analyses.topk.intervention import implant_forward
from core.lenses.patchscope import identity_patchscope
from core.lenses.stats import lens_stats, remote_lens_stats
from core.model.batch import trace_batch
from core.model.executors import NnsightExecutor, Pass, RemoteUnavailable, import_nnsight
from core.model.hooks import Capture, Patch, residual_patch
from core.model.remote import api_key, api_key_scope
from core.model.session import ModelSession

PROMPT = "The capital of Italy is Rome, and the capital of Spain is"
ALL_SITES = ("head_z", "attn_out", "mlp_out", "neurons")


def through_nnsight(session: ModelSession, mode: str) -> ModelSession:
    """The same tiny model and tokenizer, its passes run by an nnsight trace in ``mode``."""
    nnsight = import_nnsight()
    wrapped = nnsight.TransformersModel(session.model, tokenizer=session.tokenizer, task="text-generation")
    return session.with_executor(NnsightExecutor(wrapped, mode))


@pytest.fixture(params=["here", "simulate"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


def test_importing_nnsight_leaves_objects_alone() -> None:
    """nnsight mounts .save() on every object when imported; Layerscope's import undoes it (a fresh process: the
    first import is ours)."""
    code = ("from core.model.executors import import_nnsight; import_nnsight(); "
            "print(hasattr(object(), 'save'), hasattr(1, 'save'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("arch", ARCHS)
def test_trace_equals_local_hooks(make_session, arch: str, mode: str) -> None:
    local = make_session(arch)
    remote = through_nnsight(local, mode)
    a, b = local.trace(PROMPT, capture=ALL_SITES), remote.trace(PROMPT, capture=ALL_SITES)
    for name in ("resid", "head_z", "attn_out", "mlp_out", "neurons"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name  # exact: the same computation


@pytest.mark.parametrize("arch", ARCHS)
def test_patches_logits_and_stops_equal_local_hooks(make_session, arch: str, mode: str) -> None:
    local = make_session(arch)
    remote = through_nnsight(local, mode)
    ids = local.tokenize(PROMPT)[None].expand(3, -1)
    d_model = local.adapter.d_model
    patches = (residual_patch(1, torch.linspace(-1, 1, d_model), position=2, rows=(0, 2)),
               Patch("attn_z", 1, 0.0, rows=(1,), head=1),
               Patch("mlp_act", 0, 0.5, position=-1),
               residual_patch(0, torch.ones(d_model), position=0, rows=(2,)))
    captures = (Capture("resid_post", (0, 1, 2)), Capture("mlp_act", (0, 2), position=-1), Capture("attn_z", (1,)))
    want = local.run(Pass(ids, captures=captures, patches=patches, logits=True))
    got = remote.run(Pass(ids, captures=captures, patches=patches, logits=True))
    assert torch.equal(want.logits, got.logits)
    for site, blocks in (("resid_post", (0, 1, 2)), ("mlp_act", (0, 2)), ("attn_z", (1,))):
        for block in blocks:
            assert torch.equal(want.captured.get(site, block), got.captured.get(site, block)), (site, block)
    clean = local.run(Pass(ids, logits=True)).logits
    assert not torch.equal(clean, got.logits)  # the patches changed something (the test can fail)
    stop = Pass(ids[:1], captures=(Capture("mlp_act", (1,), row=0),), stop_early=True, logits=True)
    a, b = local.run(stop), remote.run(stop)
    assert a.captured.stopped and b.captured.stopped and a.logits is None and b.logits is None
    assert torch.equal(a.captured.get("mlp_act", 1), b.captured.get("mlp_act", 1))


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox", "opt"])
def test_padded_batches_equal_local_hooks(make_session, arch: str) -> None:
    """Texts of different lengths in one right-padded batch (mask, position ids) through the simulated request."""
    local = make_session(arch)
    remote = through_nnsight(local, "simulate")
    texts = ["Paris", "The quick brown fox jumps", PROMPT]
    for a, b in zip(trace_batch(local, texts, capture=("mlp_out",)), trace_batch(remote, texts, capture=("mlp_out",))):
        assert torch.equal(a.resid, b.resid) and torch.equal(a.mlp_out, b.mlp_out)


@pytest.mark.parametrize("arch", ARCHS)
def test_lens_reduced_in_the_trace_equals_local_lens_stats(make_session, arch: str, monkeypatch) -> None:
    """The logit lens reduced inside the (simulated NDIF) trace = lens_stats over a local trace, field by field, in
    several position tiles and layer groups, with targets and a layer subset."""
    monkeypatch.setattr(core.lenses.reduce, "POS_TILE", 5)
    monkeypatch.setattr(core.lenses.reduce, "CALL_MB", 0.01)  # groups of a few layers
    local = make_session(arch)
    remote = through_nnsight(local, "simulate")
    ids = local.tokenize(PROMPT)
    for targets, layers in ((None, None), ([5, 17], [0, 2, 3])):
        want = lens_stats(local, local.trace(ids), top_k=4, targets=targets, layers=layers)
        got = remote_lens_stats(remote, ids, top_k=4, targets=targets, layers=layers)
        for name in ("layers", "top_ids", "top_probs", "entropy", "kl_to_final", "target_ids", "target_rank",
                     "target_prob", "next_token_ce"):
            np.testing.assert_array_equal(getattr(want, name), getattr(got, name), err_msg=name)


def test_only_statistics_cross_the_network(make_session) -> None:
    """What comes back from a simulated NDIF lens is its statistics and nothing more: the bytes of the arrays
    themselves plus the serialisation's few KB, never the logits (or residuals); the request is small too."""
    local = make_session("llama")
    remote = through_nnsight(local, "simulate")
    k = 5
    result = run_lens(remote, " ".join([PROMPT] * 6), top_k=k)
    traffic = remote.executor.traffic
    n_cells = (local.adapter.n_layers + 1) * len(result.tokens)  # layers x positions
    arrays = n_cells * (k * (4 + 4) + 4 * 3 + (4 + 4)) + len(result.tokens) * 4  # int32 ids / ranks, float32 stats
    assert len(result.tokens) > 60
    assert arrays < traffic.result_raw_bytes <= arrays + 8_000
    assert traffic.result_bytes <= traffic.result_raw_bytes  # compressed as NDIF sends it
    assert n_cells * local.adapter.d_vocab * 4 > 20 * traffic.result_raw_bytes  # the logits would be 20x more
    assert 0 < traffic.request_bytes < 50_000


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gptj"])
def test_analyses_run_the_same_through_nnsight(make_session, arch: str) -> None:
    """Patchscope passes, the Top-k intervention's implant pass and the Attention -> MLP passes take their forward
    passes from session.run: through nnsight they give the local numbers."""
    local = make_session(arch)
    remote = through_nnsight(local, "simulate")
    trace = local.trace(PROMPT)
    a = lens_stats(local, trace, identity_patchscope(local), top_k=3, layers=[0, 1, 3])
    b = lens_stats(remote, trace, identity_patchscope(remote), top_k=3, layers=[0, 1, 3])
    # not the same computation: locally the target prompt's prefix runs once into a key/value cache, through
    # nnsight in every row; so float32 rounding apart, and top-1 compared where it is not a near-tie
    np.testing.assert_allclose(a.entropy, b.entropy, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.top_probs, b.top_probs, rtol=1e-5, atol=1e-5)
    clear = (a.top_probs[..., 0] - a.top_probs[..., 1]) > 1e-4
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(a.top_ids[..., 0][clear], b.top_ids[..., 0][clear])
    ids = local.tokenize(PROMPT)
    implants = [None, (0, torch.ones(local.adapter.d_model)), (1, -torch.ones(local.adapter.d_model))]
    # not the same computation: locally the prefix runs once into a key/value cache, through nnsight in every row
    torch.testing.assert_close(implant_forward(local, ids, 6, implants), implant_forward(remote, ids, 6, implants),
                               rtol=1e-5, atol=1e-5)
    tokens = list(ids[:8].tolist())
    assert ablated_token_probs(local, tokens, 7, [(0, 1), (2, 3)]) == ablated_token_probs(remote, tokens, 7,
                                                                                          [(0, 1), (2, 3)])
    want, got = neuron_acts(local, tokens, [0, 2]), neuron_acts(remote, tokens, [0, 2])
    assert all(torch.equal(want[layer], got[layer]) for layer in (0, 2))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_attention_patterns_through_nnsight(make_session, arch: str) -> None:
    local = make_session(arch)
    remote = through_nnsight(local, "here")
    a = local.trace(PROMPT, capture=("attn_patterns",))
    b = remote.trace(PROMPT, capture=("attn_patterns",))
    assert torch.equal(a.attn_patterns, b.attn_patterns)


# -- NDIF's error paths, with no network ------------------------------------------------------------------------
@pytest.fixture
def ndif_session(make_session, monkeypatch) -> ModelSession:
    """A tiny model behind the NDIF backend, its requests sent to a closed local port (no network here)."""
    nnsight = import_nnsight()
    session = make_session("gpt2")
    wrapped = nnsight.TransformersModel(session.model, tokenizer=session.tokenizer, task="text-generation")
    monkeypatch.setattr(wrapped, "to_model_key", lambda: "nnsight.modeling.transformers.TransformersModel:{}")
    monkeypatch.setattr(nnsight.CONFIG.API, "HOST", "http://127.0.0.1:9")
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    return session.with_executor(NnsightExecutor(wrapped, "ndif", api_key_getter=api_key))


def test_ndif_without_a_key_says_so_in_one_line(ndif_session: ModelSession) -> None:
    with pytest.raises(RemoteUnavailable) as err:
        run_lens(ndif_session, PROMPT)
    message = str(err.value)
    assert "\n" not in message and "NDIF API key" in message and "NDIF_API_KEY" in message


def test_ndif_without_network_says_so_in_one_line(ndif_session: ModelSession) -> None:
    secret = "sk-test-0123456789"
    with api_key_scope(secret), pytest.raises(RemoteUnavailable) as err:
        run_lens(ndif_session, PROMPT)
    message = str(err.value)
    assert "\n" not in message and "cannot be reached" in message
    assert secret not in message  # the key never appears in what the user (or a log) sees


def test_ndif_refuses_what_needs_weights_here(ndif_session: ModelSession) -> None:
    assert ndif_session.remote
    with pytest.raises(ValueError, match="only the logit lens"):
        run_lens(ndif_session, PROMPT, lens=identity_patchscope(ndif_session))
    with pytest.raises(ValueError, match="NDIF"):
        ndif_session.hooks()
    with api_key_scope("k"), pytest.raises(ValueError, match="Attention weights are not available on NDIF"):
        ndif_session.trace(PROMPT, capture=("attn_patterns",))
    with pytest.raises(ValueError, match="Neuron topics needs the model's weights on this machine"):
        ndif_session.require_local("Neuron topics")
    with pytest.raises(ValueError, match="runs on NDIF"):  # any weight read says so, never a meta-tensor error
        ndif_session.adapter.unembed_weight()
    with pytest.raises(ValueError, match="runs on NDIF"):
        lens_stats(ndif_session, make_trace_like(ndif_session))


def make_trace_like(session: ModelSession):
    """A Trace-shaped stand-in with zero residuals (no pass is run)."""
    from core.model.session import Trace
    ids = session.tokenize(PROMPT)
    n = session.adapter.n_layers
    return Trace(ids, session.token_strings(ids), torch.zeros(n + 1, ids.numel(), session.adapter.d_model))


def test_api_key_scope_wins_over_the_environment_and_ends(monkeypatch) -> None:
    monkeypatch.setenv("NDIF_API_KEY", "from-env")
    assert api_key() == "from-env"
    with api_key_scope("typed"):
        assert api_key() == "typed"
        with api_key_scope(""):
            assert api_key() == "from-env"  # an empty field falls back to the server's key
    assert api_key() == "from-env"
    monkeypatch.delenv("NDIF_API_KEY")
    assert api_key() is None

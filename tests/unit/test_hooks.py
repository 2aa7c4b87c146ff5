"""The one hook mechanism (core.model.hooks, ModelSession.hooks) and the architecture records (core.model.arch),
on the tiny model of every architecture in the matrix."""

from __future__ import annotations

import dataclasses
import inspect
import threading

import pytest
import torch
from conftest import ARCHS
from torch import nn

from core.layers import block_of_layer
from core.model.arch import ARCHITECTURES, BLOCK_KWARGS, resolve, supported_model_types
from core.model.hooks import (
    SITES,
    Capture,
    Patch,
    residual_captures,
    residual_patch,
    residual_site,
)
from core.model.session import ModelSession

PROMPT = "The capital of France is Paris, and the capital of Italy is"
SUB_BLOCK_SITES = tuple(site for site, info in SITES.items() if info.part is not None)


def _ids(session: ModelSession) -> torch.Tensor:
    return session.tokenize(PROMPT)  # [pos]


def _logits(session: ModelSession, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return session.model(ids[None]).logits[0]  # [pos, vocab]


def _hook_ids(model: nn.Module) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every module's forward (pre-)hook ids: transformers installs inert hooks of its own on first use, so
    hooks are compared with a snapshot taken after one plain forward."""
    return {name: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks)) for name, m in model.named_modules()}


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    """Max abs error within ``rel`` of the expected tensor's scale (and shapes equal)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = float(expected.abs().max())
    assert scale > 0, "degenerate reference: all zeros"
    err = float((actual.float() - expected.float()).abs().max())
    assert err <= rel * scale, f"max error {err:.3g} > {rel:g} x scale {scale:.3g}"


# -- the architecture table -------------------------------------------------------------------------------------
def test_the_table_and_the_tiny_matrix_cover_the_same_model_types() -> None:
    assert supported_model_types() == sorted(ARCHITECTURES)
    assert set(ARCHS) == set(supported_model_types())
    assert len(ARCHS) == len(set(ARCHS))


def test_the_record_describes_the_installed_model(arch_session: ModelSession) -> None:
    """Every path of the record resolves on the tiny model, and its kinds and block keywords are true of it."""
    model, arch, adapter = arch_session.model, arch_session.adapter.arch, arch_session.adapter
    assert resolve(model, arch.embed) is model.get_input_embeddings()
    assert resolve(model, arch.unembed) is model.get_output_embeddings()
    assert isinstance(resolve(model, arch.blocks), nn.ModuleList) and adapter.n_layers == 3
    for path in (arch.pos_embed, arch.final_norm):
        assert path is None or isinstance(resolve(model, path), nn.Module), path
    assert (arch.pos_embed is None) == arch.rotary  # positions enter one way or the other
    for field in ("attn", "attn_out", "mlp_out", "mlp_norm", "mlp_in", "mlp_down"):
        assert isinstance(adapter.block_part(field, 0), nn.Module), field
    if arch.gated_mlp:
        assert isinstance(adapter.block_part("mlp_up", 0), nn.Module) and adapter.mlp_up_weight(0) is not None
    else:
        assert adapter.mlp_up_weight(0) is None
        with pytest.raises(ValueError, match="no 'mlp_up'"):
            adapter.block_part("mlp_up", 0)
    norms = [adapter.final_norm_module, adapter.mlp_norm(0)]
    assert all(isinstance(norm, nn.LayerNorm) == (arch.norm == "layernorm") for norm in norms)
    assert all(("rms" in type(norm).__name__.lower()) == (arch.norm == "rmsnorm") for norm in norms)
    assert adapter.layernorm == (arch.norm == "layernorm")
    # the keywords run_blocks passes are ones the block's forward takes, and rotary ones come with their module
    params = inspect.signature(adapter.blocks[0].forward).parameters
    assert set(arch.block_kwargs) <= set(params) and set(arch.block_kwargs) <= set(BLOCK_KWARGS)
    assert ("position_embeddings" in arch.block_kwargs) == (adapter.rotary_module is not None)
    assert ("position_embeddings" in params) == (adapter.rotary_module is not None)


def test_mlp_input_projection_reads_the_norm_and_stream_the_record_names(arch_session: ModelSession) -> None:
    """mlp_pre = mlp_in(mlp_norm(x)), x = the block input (parallel blocks) or block input + attention's write:
    the record's mlp_norm, mlp_in and parallel flag agree with the model's own forward."""
    adapter, ids = arch_session.adapter, _ids(arch_session)
    block = 1
    with arch_session.hooks([Capture(site, (block,), row=0) for site in ("resid_pre", "attn_out", "mlp_pre")]) as got:
        arch_session.model(ids[None])
    stream = got.get("resid_pre", block)
    if not adapter.mlp_reads_block_input():
        stream = stream + got.get("attn_out", block)  # [pos, d_model]
    with torch.no_grad():
        expected = adapter.mlp_in_modules(block)[0](adapter.mlp_norm(block)(stream))  # [pos, d_mlp]
    assert_rel_close(got.get("mlp_pre", block), expected, rel=1e-4)
    assert adapter.mlp_reads_block_input() == (adapter.model_type in ("gptj", "gpt_neox"))


def test_run_blocks_equals_the_models_forward_on_one_token(arch_session: ModelSession) -> None:
    """A one-token prompt's embedding run through every block by Adapter.run_blocks (the record's block keywords)
    gives the model's own last residual."""
    adapter = arch_session.adapter
    trace = arch_session.trace(_ids(arch_session)[:1])
    with torch.no_grad():
        out = adapter.run_blocks(trace.resid[0][None], 0, adapter.n_layers)  # [1, 1, d_model]
    assert_rel_close(out[0], trace.resid[-1], rel=1e-5)
    with pytest.raises(ValueError, match="one-position"):
        adapter.run_blocks(trace.resid[0][None].expand(1, 2, -1), 0, 1)


# -- captures ---------------------------------------------------------------------------------------------------
def test_residual_captures_equal_hf_hidden_states(arch_session: ModelSession) -> None:
    ids, n = _ids(arch_session), arch_session.adapter.n_layers
    layers = range(n + 1)
    with arch_session.hooks(residual_captures(layers, row=0)) as got:
        out = arch_session.model(ids[None], output_hidden_states=True)
    resid = got.residual(layers)  # [layer+1, pos, d_model]
    hidden = out.hidden_states
    assert len(hidden) == n + 1 and resid.shape == (n + 1, ids.numel(), arch_session.adapter.d_model)
    for layer in range(n):
        assert_rel_close(resid[layer], hidden[layer][0])
    # HF's last hidden state is after the final norm (and OPT's project_out); the capture is before it
    with torch.no_grad():
        assert_rel_close(arch_session.adapter.final_norm(resid[n]), hidden[n][0])
    assert residual_site(0) == ("resid_pre", 0) and residual_site(n) == ("resid_post", block_of_layer(n))


def test_capture_rows_and_positions_select_from_the_batch(arch_session: ModelSession) -> None:
    ids = _ids(arch_session)
    batch = torch.stack([ids, ids.flip(0)])  # [2, pos]
    requests = [Capture("resid_post", (0, 2)), Capture("mlp_act", (1,), position=-1), Capture("attn_z", (2,), row=1)]
    with arch_session.hooks(requests) as got:
        arch_session.model(batch)
    full = got.get("resid_post", 2)
    adapter = arch_session.adapter
    assert full.shape == (2, ids.numel(), adapter.d_model) and full.dtype == torch.float32
    assert got.get("mlp_act", 1).shape == (2, adapter.d_mlp)
    assert got.get("attn_z", 2).shape == (ids.numel(), adapter.n_heads * adapter.d_head)
    assert got.stack("resid_post", (0, 2)).shape == (2, 2, ids.numel(), adapter.d_model)
    with pytest.raises(ValueError, match="Nothing was captured"):
        got.get("resid_post", 1)


def test_stop_early_ends_the_pass_after_the_last_capture(arch_session: ModelSession) -> None:
    ids, reached = _ids(arch_session), []
    before = _hook_ids(arch_session.model)
    with arch_session.hooks([Capture("mlp_act", (0,), row=0)], stop_early=True) as got:
        arch_session.model(ids[None])
        reached.append(True)  # skipped: the forward call does not return
    assert got.stopped and not reached
    assert got.get("mlp_act", 0).shape == (ids.numel(), arch_session.adapter.d_mlp)
    assert _hook_ids(arch_session.model) == before


# -- patches ----------------------------------------------------------------------------------------------------
def test_an_empty_request_changes_nothing(arch_session: ModelSession) -> None:
    ids = _ids(arch_session)
    clean = _logits(arch_session, ids)
    with arch_session.hooks() as got:
        empty = arch_session.model(ids[None]).logits[0]
    with arch_session.hooks([Capture(site, (0, 1, 2)) for site in SITES]):
        captured = arch_session.model(ids[None]).logits[0]
    assert not got.stopped
    # exact: same computation (the same forward with no hook, or with hooks that only read)
    assert torch.equal(empty, clean) and torch.equal(captured, clean)


def test_patching_a_site_with_its_own_value_changes_nothing(arch_session: ModelSession) -> None:
    ids, block = _ids(arch_session), 1
    clean = _logits(arch_session, ids)
    with arch_session.hooks([Capture(site, (block,)) for site in SITES]) as got:
        arch_session.model(ids[None])
    for site in SITES:
        with arch_session.hooks(patches=[Patch(site, block, got.get(site, block))]):
            patched = arch_session.model(ids[None]).logits[0]
        # exact: same computation (the model's own float32 values written back before they are read)
        assert torch.equal(patched, clean), site


def test_a_patch_changes_its_position_downstream_only(arch_session: ModelSession) -> None:
    ids, n = _ids(arch_session), arch_session.adapter.n_layers
    layer, position = 1, 6  # residual layer 1 (after block 1) at one position
    layers = range(n + 1)
    clean = arch_session.trace(ids).resid  # [layer+1, pos, d_model]
    value = clean[layer, 2] * 3.0  # another position's state, scaled: clearly not this position's
    with arch_session.hooks(residual_captures(layers, row=0), [residual_patch(layer, value, position)]) as got:
        arch_session.model(ids[None])
    patched = got.residual(layers)
    # different computations (the earlier positions' values come from another pass with other later inputs)
    torch.testing.assert_close(patched[:, :position], clean[:, :position], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(patched[:layer, position], clean[:layer, position], atol=1e-6, rtol=1e-6)
    assert torch.equal(patched[layer, position], value)  # exact: the capture records the patched tensor itself
    for later in range(layer + 1, n + 1):
        assert float((patched[later, position] - clean[later, position]).abs().max()) > 1e-3
        assert float((patched[later, position + 1:] - clean[later, position + 1:]).abs().max()) > 1e-4
    # the same layer's state at later positions is only read by later blocks: unchanged at this layer
    torch.testing.assert_close(patched[layer, position + 1:], clean[layer, position + 1:], atol=1e-6, rtol=1e-6)


def test_head_and_row_patches_write_their_slot_only(arch_session: ModelSession) -> None:
    ids, adapter, block, head = _ids(arch_session), arch_session.adapter, 2, 1
    batch = torch.stack([ids, ids])  # [2, pos]
    d = adapter.d_head
    with arch_session.hooks([Capture("attn_z", (block,))]) as clean:
        arch_session.model(batch)
    with arch_session.hooks([Capture("attn_z", (block,))], [Patch("attn_z", block, 0.0, rows=(1,), head=head)]) as got:
        arch_session.model(batch)
    z, z0 = got.get("attn_z", block), clean.get("attn_z", block)  # [2, pos, head*d_head]
    # exact: a copy of the same pass's values, and zeros written by the patch
    assert torch.equal(z[0], z0[0]) and float(z0[1, :, head * d:(head + 1) * d].abs().max()) > 0
    assert float(z[1, :, head * d:(head + 1) * d].abs().max()) == 0.0
    assert torch.equal(z[1, :, :head * d], z0[1, :, :head * d]) and torch.equal(z[1, :, (head + 1) * d:],
                                                                               z0[1, :, (head + 1) * d:])


# -- removal, locking, validation -------------------------------------------------------------------------------
def _free_in_another_thread(lock: threading.RLock, timeout: float) -> bool:
    """Whether another thread can take ``lock`` within ``timeout`` s (it releases it at once)."""
    got: list[bool] = []

    def take() -> None:
        got.append(lock.acquire(timeout=timeout))
        if got[0]:
            lock.release()

    thread = threading.Thread(target=take)
    thread.start()
    thread.join()
    return got == [True]


def test_hooks_are_removed_when_the_body_or_the_forward_raises(arch_session: ModelSession,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _ids(arch_session)
    _logits(arch_session, ids)  # transformers' own hooks, if any, are in place before the snapshot
    before = _hook_ids(arch_session.model)
    sub_modules = [arch_session.adapter.block_part(SITES[s].part, 0) for s in SUB_BLOCK_SITES]
    # transformers 5 leaves its own output-capturing hook on an attention module (site attn_in) once a pass asked
    # for attention weights: compare with what the sub-modules held before, not with nothing
    sub_before = [(set(m._forward_hooks), set(m._forward_pre_hooks)) for m in sub_modules]
    captures = [Capture(site, (0, 2)) for site in SITES]
    patches = [residual_patch(1, torch.zeros(arch_session.adapter.d_model), position=0)]
    with pytest.raises(RuntimeError, match="inside the block"):
        with arch_session.hooks(captures, patches):
            arch_session.model(ids[None])
            raise RuntimeError("inside the block")
    assert _hook_ids(arch_session.model) == before
    assert [(set(m._forward_hooks), set(m._forward_pre_hooks)) for m in sub_modules] == sub_before

    def boom(*args, **kwargs):
        raise RuntimeError("boom in the last block")

    monkeypatch.setattr(arch_session.adapter.blocks[-1], "forward", boom)
    with pytest.raises(RuntimeError, match="boom"):
        with arch_session.hooks(captures, patches):
            arch_session.model(ids[None])
    monkeypatch.undo()
    assert _hook_ids(arch_session.model) == before
    assert _free_in_another_thread(arch_session.lock, timeout=5)  # the lock was released too


def test_the_hook_context_holds_the_session_lock(make_session) -> None:
    session = make_session("gpt2")
    with session.hooks():
        assert not _free_in_another_thread(session.lock, timeout=0.2)
    assert _free_in_another_thread(session.lock, timeout=5)


def test_bad_requests_are_refused_with_a_message(make_session) -> None:
    session = make_session("llama")
    with pytest.raises(ValueError, match="Unknown hook site"):
        Capture("resid_mid", (0,))
    with pytest.raises(ValueError, match="head"):
        Patch("resid_pre", 0, 0.0, head=1)
    with pytest.raises(ValueError, match="int"):
        Patch("resid_pre", 0.5, 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tensor or a number"):
        Patch("resid_pre", 0, "zero")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not exist"):
        with session.hooks([Capture("resid_post", (3,))]):
            pass
    with pytest.raises(ValueError, match="captured twice"):
        with session.hooks([Capture("resid_post", (0,)), Capture("resid_post", (0, 1), position=-1)]):
            pass


# -- requests are plain data -----------------------------------------------------------------------------------
def test_requests_are_plain_data() -> None:
    capture = Capture("mlp_act", range(3), position=-1, row=0)
    assert capture.blocks == (0, 1, 2)  # normalised to a tuple
    assert Capture(**dataclasses.asdict(capture)) == capture
    assert eval(repr(capture), {"Capture": Capture}) == capture  # noqa: S307 - a repr round trip, no pickle
    assert hash(capture) == hash(Capture("mlp_act", (0, 1, 2), -1, 0)) and len({capture, Capture(**dataclasses.asdict(
        capture))}) == 1
    assert residual_captures(range(4)) == (Capture("resid_pre", (0,)), Capture("resid_post", (0, 1, 2)))

    patch = Patch("attn_z", 2, 0.0, position=None, rows=[1, 3], head=1)
    assert patch.rows == (1, 3)
    as_dict = dataclasses.asdict(patch)
    assert as_dict == {"site": "attn_z", "block": 2, "value": 0.0, "position": None, "rows": (1, 3), "head": 1}
    assert dataclasses.asdict(Patch(**as_dict)) == as_dict
    assert dataclasses.asdict(eval(repr(patch), {"Patch": Patch})) == as_dict  # noqa: S307
    vector = torch.arange(4, dtype=torch.float32)
    tensor_patch = residual_patch(3, vector, position=-1, rows=(0,))
    again = Patch(**dataclasses.asdict(tensor_patch))
    assert (again.site, again.block, again.position, again.rows) == ("resid_post", 2, -1, (0,))
    assert torch.equal(again.value, vector)  # exact: a copy of the same tensor
    for request in (capture, patch, tensor_patch):
        for field in dataclasses.fields(request):
            value = getattr(request, field.name)
            assert not isinstance(value, nn.Module) and not callable(value), field.name

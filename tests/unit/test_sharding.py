"""device="auto-shard": a model spread by accelerate over devices gives the unsharded model's results.

Without GPUs the spread is CPU RAM + disk: ``LAYERSCOPE_MAX_MEMORY`` caps CPU RAM below the tiny model's size, so
accelerate's device_map="auto" keeps the first modules in RAM and offloads the rest to disk (cache/offload/ only);
an offloaded block's weights sit on "meta" between calls and are read in by its hook during the forward pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from numerics import assert_top1_within_ties

import core.validate as validate
from core.lenses.stats import lens_stats
from core.model.arch import loaded_named_parameters
from core.model.batch import trace_batch
from core.model.loading import ModelLoadError, ModelSpec, load_model, max_memory, model_facts, offload_dir
from core.model.session import ModelSession

SHARD_ARCHS = ("gpt2", "llama", "opt")
PROMPT = "The cat sat on the mat because it was warm and"
RESID_ATOL = 1e-5


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private runtime cache, so offload folders land in this test's tmp_path."""
    root = tmp_path / "cache"
    monkeypatch.setenv("LAYERSCOPE_CACHE", str(root))
    return root


def _save(model, tokenizer, folder: Path) -> str:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _cap_ram(monkeypatch: pytest.MonkeyPatch, model, share: float = 0.5) -> None:
    """Let CPU RAM hold about ``share`` of the model's bytes: the rest must go to disk."""
    monkeypatch.setenv("LAYERSCOPE_MAX_MEMORY", f"cpu:{int(model_facts(model).n_bytes * share)}")


@pytest.fixture(params=SHARD_ARCHS)
def split(request: pytest.FixtureRequest, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
          tiny_model_factory, tiny_tokenizer) -> tuple[ModelSession, ModelSession]:
    """(unsharded session, auto-shard session over CPU + disk) of the same saved tiny model."""
    model = tiny_model_factory(request.param)
    folder = _save(model, tiny_tokenizer, tmp_path / request.param)
    reference = ModelSession.load(ModelSpec(source=folder))
    _cap_ram(monkeypatch, model)
    sharded = ModelSession.load(ModelSpec(source=folder, device="auto-shard"))
    return reference, sharded


def test_blocks_really_spread_over_cpu_and_disk(split, cache: Path) -> None:
    reference, sharded = split
    placed = set(sharded.model.hf_device_map.values())
    assert placed == {"cpu", "disk"}, sharded.model.hf_device_map
    assert any(p.device.type == "meta" for p in sharded.model.parameters())  # offloaded, not held in RAM
    assert model_facts(sharded.model).devices == ("cpu", "disk")
    assert model_facts(reference.model).devices == ("cpu",)
    assert sharded.device == torch.device("cpu")  # the embedding's device, not the first parameter's "meta"
    folder = offload_dir(sharded.spec)
    assert folder.is_relative_to(cache / "offload") and folder.is_dir()


def test_trace_and_logit_lens_equal_the_unsharded_model(split) -> None:
    reference, sharded = split
    want, got = reference.trace(PROMPT), sharded.trace(PROMPT)
    torch.testing.assert_close(got.resid, want.resid, rtol=0, atol=RESID_ATOL)
    ref_stats, shard_stats = lens_stats(reference, want), lens_stats(sharded, got)
    adapter = reference.adapter
    with torch.no_grad():
        ref_logits = adapter.unembed(adapter.final_norm(want.resid)).float()  # [layer, pos, vocab]
    assert_top1_within_ties(shard_stats.top_ids[..., 0], ref_logits)
    assert_top1_within_ties(ref_stats.top_ids[..., 0], ref_logits)


def test_attention_patterns_equal_the_unsharded_model(split) -> None:
    """The eager switch for attention weights works on a dispatched model too."""
    reference, sharded = split
    want = reference.trace(PROMPT, capture=("attn_patterns",))
    got = sharded.trace(PROMPT, capture=("attn_patterns",))
    torch.testing.assert_close(got.resid, want.resid, rtol=0, atol=RESID_ATOL)
    torch.testing.assert_close(got.attn_patterns, want.attn_patterns, rtol=0, atol=1e-6)


def test_offloaded_weights_and_blocks_read_like_the_unsharded_model(split) -> None:
    reference, sharded = split
    ref, shard = reference.adapter, sharded.adapter
    last = ref.n_layers - 1  # the last block is offloaded to disk (RAM fills from the embeddings on)
    assert shard.attn_out(last).weight.device.type == "meta"
    torch.testing.assert_close(shard.head_out_weight(last), ref.head_out_weight(last), rtol=0, atol=0)  # exact: copy
    torch.testing.assert_close(shard.neuron_out_weight(last), ref.neuron_out_weight(last), rtol=0, atol=0)  # exact
    torch.testing.assert_close(shard.unembed_weight(), ref.unembed_weight(), rtol=0, atol=0)  # exact: same values
    hidden = torch.randn(5, 1, ref.d_model, generator=torch.Generator().manual_seed(0))  # [n, 1, d_model]
    with torch.no_grad():
        torch.testing.assert_close(shard.run_blocks(hidden, 0, ref.n_layers), ref.run_blocks(hidden, 0, ref.n_layers),
                                   rtol=0, atol=RESID_ATOL)


def test_batched_corpus_pass_equals_the_unsharded_model(split) -> None:
    """Padded batches (attention mask, position ids) run on a model spread over CPU and disk as on a whole one."""
    reference, sharded = split
    texts = ["The cat sat.", "A dog ran over the hill and far away", "Warm"]
    want, got = trace_batch(reference, texts), trace_batch(sharded, texts)
    for w, g in zip(want, got, strict=True):
        torch.testing.assert_close(g.resid, w.resid, rtol=0, atol=RESID_ATOL)


def test_random_twin_spreads_like_a_checkpoint(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
                                               tiny_model_factory, tiny_tokenizer) -> None:
    model = tiny_model_factory("llama")
    folder = _save(model, tiny_tokenizer, tmp_path / "llama")
    reference = ModelSession.load(ModelSpec(source=folder, random_init=True, seed=3))
    _cap_ram(monkeypatch, model)
    sharded = ModelSession.load(ModelSpec(source=folder, random_init=True, seed=3, device="auto-shard"))
    assert set(sharded.model.hf_device_map.values()) == {"cpu", "disk"}
    torch.testing.assert_close(sharded.trace(PROMPT).resid, reference.trace(PROMPT).resid, rtol=0, atol=RESID_ATOL)


def test_auto_shard_that_fits_in_ram_stays_whole(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                 tiny_model_factory, tiny_tokenizer) -> None:
    monkeypatch.delenv("LAYERSCOPE_MAX_MEMORY", raising=False)
    folder = _save(tiny_model_factory("gpt2"), tiny_tokenizer, tmp_path / "gpt2")
    sharded = ModelSession.load(ModelSpec(source=folder, device="auto-shard"))
    assert model_facts(sharded.model).devices == ("cpu",)  # one device: accelerate adds no hooks
    assert all(p.device.type == "cpu" for p in sharded.model.parameters())
    assert sharded.trace(PROMPT).resid.shape[0] == sharded.adapter.n_layers + 1


# -- the spec and bad input ----------------------------------------------------------------------------------
def test_auto_shard_spec_round_trips_and_resolves_on_cpu() -> None:
    spec = ModelSpec.parse("gpt2,device=auto-shard")
    assert spec.device == "auto-shard" and ModelSpec.parse(spec.key()) == spec
    assert spec.resolved_device() == "auto-shard"
    if not torch.cuda.is_available():
        assert ModelSpec(device="auto-shard", dtype="auto").resolved_dtype() == "float32"


@pytest.mark.parametrize(("text", "caps"), [
    ("0:20GiB,cpu:60GiB", {0: 20 * 2**30, "cpu": 60 * 2**30}),
    (" cpu : 1.5mb ", {"cpu": 1_500_000}),
    ("1:2048", {1: 2048}),
    ("", None),
])
def test_max_memory_parses(text: str, caps) -> None:
    assert max_memory(text) == caps


@pytest.mark.parametrize("text", ["gpu0:20GiB", "cpu", "cpu:20TB", "0:20GiB;cpu:1GiB", "disk:5GiB"])
def test_bad_max_memory_is_one_line(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, text: str,
                                    tiny_model_factory, tiny_tokenizer) -> None:
    with pytest.raises(ModelLoadError, match="LAYERSCOPE_MAX_MEMORY must look like") as err:
        max_memory(text)
    assert "\n" not in str(err.value)
    folder = _save(tiny_model_factory("gpt2"), tiny_tokenizer, tmp_path / "gpt2")
    monkeypatch.setenv("LAYERSCOPE_MAX_MEMORY", text)
    with pytest.raises(ModelLoadError, match="LAYERSCOPE_MAX_MEMORY"):
        load_model(ModelSpec(source=folder, device="auto-shard"))


def test_auto_shard_without_accelerate_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = validate.importlib.util.find_spec
    monkeypatch.setattr(validate.importlib.util, "find_spec",
                        lambda name, *a: None if name == "accelerate" else real(name, *a))
    for check in (ModelSpec.parse, validate.model_source):
        with pytest.raises(ValueError, match="needs the 'accelerate' package") as err:
            check("bundled,device=auto-shard")
        assert "\n" not in str(err.value)
    with pytest.raises(ModelLoadError, match="needs the 'accelerate' package"):
        load_model(ModelSpec(device="auto-shard"))


def test_auto_shard_of_a_gguf_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr("core.model.loading._load_config", lambda *a: pytest.fail("loading began"))
    with pytest.raises(ModelLoadError, match="cannot spread a GGUF file") as err:
        load_model(ModelSpec(source=str(gguf), device="auto-shard"))
    assert "\n" not in str(err.value)


def test_loaded_named_parameters_read_offloaded_weights(split) -> None:
    """What a whole-model read (the weight fingerprint) needs: every parameter, named and ordered as
    ``named_parameters()``, with the real values also where accelerate left "meta"."""
    reference, sharded = split
    want = [(name, p.clone()) for name, p in reference.model.named_parameters()]
    for loaded, (name, value) in zip(loaded_named_parameters(reference.model), want, strict=True):
        assert loaded[0] == name
        torch.testing.assert_close(loaded[1], value, rtol=0, atol=0)  # exact: the same tensors
    got = [(n, p.clone()) for n, p in loaded_named_parameters(sharded.model)]
    assert [n for n, _ in got] == [n for n, _ in want]
    assert all(p.device.type != "meta" for _, p in got)
    for (_, g), (_, w) in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)  # exact: the saved values, read back from disk

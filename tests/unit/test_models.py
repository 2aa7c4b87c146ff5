"""Model specs and loading: parsing, random twins, local folders, readable failures, no remote code."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

import core.model.loading
from core.model.arch import supported_model_types
from core.model.loading import BUNDLED, BUNDLED_LABEL, ModelLoadError, ModelSpec, build_random_twin, load_model
from core.model.session import ModelSession

CORE_DIR = Path(core.model.loading.__file__).resolve().parents[1]  # core/
SaveModel = Callable[[str], tuple[Path, PreTrainedModel]]


# -- ModelSpec ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "source", "random_init"),
    [
        ("bundled", BUNDLED, False),
        ("", BUNDLED, False),
        ("   ", BUNDLED, False),
        ("random:bundled", BUNDLED, True),
        ("random:", BUNDLED, True),
        ("random: gpt2 ", "gpt2", True),
        ("gpt2", "gpt2", False),
        ("  HuggingFaceTB/SmolLM2-135M  ", "HuggingFaceTB/SmolLM2-135M", False),
        ("./checkpoints/run-1", "./checkpoints/run-1", False),
        ("/models/my model", "/models/my model", False),
        ("random:~/ckpt", "~/ckpt", True),
    ],
)
def test_parse(text: str, source: str, random_init: bool) -> None:
    spec = ModelSpec.parse(text)
    assert (spec.source, spec.random_init) == (source, random_init)
    assert (spec.revision, spec.dtype, spec.seed) == (None, "float32", 0)


def test_key_and_label() -> None:
    assert ModelSpec().key() == "bundled"
    assert ModelSpec.parse("random:bundled").key() == "random:bundled"
    assert ModelSpec(source="gpt2", revision="main").key() == "gpt2@main"
    assert ModelSpec(source="gpt2", random_init=True, revision="v1").key() == "random:gpt2@v1"
    for text in ("bundled", "random:bundled", "gpt2", "random:./ckpt"):
        assert ModelSpec.parse(ModelSpec.parse(text).key()) == ModelSpec.parse(text)  # round trip
    assert ModelSpec().label() == BUNDLED_LABEL
    assert ModelSpec(source="gpt2").label() == "gpt2"
    assert ModelSpec(random_init=True, seed=3).label() == f"{BUNDLED_LABEL} — random-init twin (seed 3)"
    assert ModelSpec(device="cpu").resolved_device() == "cpu"
    assert ModelSpec().resolved_device() in ("cpu", "cuda")


# -- random twins ------------------------------------------------------------------------------
def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    # exact: same computation (one seeded initialisation run twice in one process, or a save/load round trip)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_random_twin_is_deterministic_per_seed(tiny_model_factory: Callable[..., PreTrainedModel]) -> None:
    config = tiny_model_factory("llama").config
    rng_before = torch.random.get_rng_state()
    a, b = _state(build_random_twin(config, seed=1)), _state(build_random_twin(config, seed=1))
    c = _state(build_random_twin(config, seed=2))
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the global RNG is left alone
    assert _same_weights(a, b)
    assert not _same_weights(a, c)
    twin = build_random_twin(config, seed=1)
    assert twin.config._attn_implementation == "eager"


@pytest.fixture
def saved_model(tmp_path: Path, tiny_model_factory: Callable[..., PreTrainedModel],
                tiny_tokenizer: PreTrainedTokenizerFast) -> SaveModel:
    """``saved_model(model_type)`` -> (folder, model) of a tiny model + tokenizer saved with save_pretrained."""

    def save(model_type: str) -> tuple[Path, PreTrainedModel]:
        folder = tmp_path / model_type
        model = tiny_model_factory(model_type, seed=7)
        model.save_pretrained(folder)
        tiny_tokenizer.save_pretrained(folder)
        return folder, model

    return save


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_load_saved_local_folder(saved_model: SaveModel, tiny_tokenizer: PreTrainedTokenizerFast,
                                 model_type: str) -> None:
    folder, original = saved_model(model_type)
    session = ModelSession.load(ModelSpec(source=str(folder)))
    assert session.adapter.model_type == model_type
    assert session.model.config._attn_implementation == "eager"
    assert not session.model.training
    assert not any(p.requires_grad for p in session.model.parameters())
    assert _same_weights(_state(session.model), _state(original))
    prompt = "The capital of France is"
    assert session.tokenize(prompt).tolist() == tiny_tokenizer(prompt).input_ids
    trace = session.trace(prompt, capture=("attn_patterns",))
    with torch.no_grad():
        logits = original(session.tokenize(prompt)[None]).logits[0]
        lens = session.adapter.unembed(session.adapter.final_norm(trace.resid[-1]))
    torch.testing.assert_close(lens, logits, rtol=1e-5, atol=1e-5)
    assert trace.model_key == str(folder)


def test_random_twin_of_local_folder(saved_model: SaveModel) -> None:
    folder, original = saved_model("llama")
    spec = ModelSpec(source=str(folder), random_init=True, seed=5)
    a = ModelSession.load(spec)
    b = ModelSession.load(spec)
    other_seed = ModelSession.load(ModelSpec(source=str(folder), random_init=True, seed=6))
    assert _same_weights(_state(a.model), _state(b.model))
    assert not _same_weights(_state(a.model), _state(original))
    assert not _same_weights(_state(a.model), _state(other_seed.model))
    assert a.model.config.num_hidden_layers == original.config.num_hidden_layers
    assert a.trace("fox").model_key == f"random:{folder}"


# -- failures ----------------------------------------------------------------------------------
@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("model_type", ["bert", "bloom"])
def test_unsupported_model_type(tmp_path: Path, offline: None, model_type: str) -> None:
    from transformers import AutoConfig

    AutoConfig.for_model(model_type, hidden_size=32, num_attention_heads=4).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == model_type
    with pytest.raises(ModelLoadError) as info:
        load_model(ModelSpec(source=str(tmp_path)))
    message = str(info.value)
    assert f"'{model_type}' is not supported" in message
    for supported in supported_model_types():
        assert supported in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("source", ["/no/such/folder/model", "./no-such-checkpoint", "~/no-such-checkpoint-xyz"])
def test_missing_local_path(offline: None, source: str) -> None:
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="No model folder"):
        ModelSession.load(ModelSpec(source=source))
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("source", ["nobody-here/no-such-model-xyz", "no-such-model-xyz"])
def test_unknown_hub_id_offline(offline: None, source: str) -> None:
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="hub cannot be reached"):
        ModelSession.load(ModelSpec(source=source))
    assert time.monotonic() - start < 5
    assert core.model.loading.hub_reachable() is False


def test_hub_failure_is_one_readable_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the hub 'reachable', a failing lookup still becomes a ModelLoadError, not a raw exception."""
    monkeypatch.setattr(core.model.loading, "hub_reachable", lambda timeout=2.0: True)

    def fail(source: str, **kwargs: Any):
        if kwargs.get("local_files_only"):
            raise OSError("not cached")
        raise OSError("Repository Not Found for url: https://huggingface.co/x\nmore detail")

    monkeypatch.setattr(core.model.loading.AutoConfig, "from_pretrained", fail)
    with pytest.raises(ModelLoadError, match=r"Could not load model 'someone/missing' from the hub \(OSError: "
                                             r"Repository Not Found"):
        load_model(ModelSpec(source="someone/missing"))


# -- no remote code ----------------------------------------------------------------------------
def test_trust_remote_code_is_never_enabled_in_source() -> None:
    sources = {p: p.read_text() for p in CORE_DIR.rglob("*.py")}
    assert sources
    for path, text in sources.items():
        compact = text.replace(" ", "")
        assert "trust_remote_code=True" not in compact, path
        assert "trust_remote_code=trust" not in compact, path


def test_trust_remote_code_never_passed_true(saved_model: SaveModel, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = saved_model("gpt2")
    calls: list[tuple[str, dict[str, Any]]] = []
    for cls_name in ("AutoConfig", "AutoTokenizer", "AutoModelForCausalLM"):
        cls = getattr(core.model.loading, cls_name)
        real = cls.from_pretrained

        def spy(*args: Any, _real=real, _name=cls_name, **kwargs: Any):
            calls.append((_name, kwargs))
            return _real(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    ModelSession.load(ModelSpec(source=str(folder)))
    names = {name for name, _ in calls}
    assert names == {"AutoConfig", "AutoTokenizer", "AutoModelForCausalLM"}
    for name, kwargs in calls:
        assert kwargs.get("trust_remote_code") is False, (name, kwargs)
    model_kwargs = [kw for name, kw in calls if name == "AutoModelForCausalLM"]
    assert all(kw.get("attn_implementation") == "eager" for kw in model_kwargs)

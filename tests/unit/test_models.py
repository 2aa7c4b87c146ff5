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
from core import validate
from core.cli.main import build_parser
from core.cli.main import main as cli_main
from core.model.arch import supported_model_types
from core.model.loading import (
    BUNDLED,
    BUNDLED_LABEL,
    ModelLoadError,
    ModelSpec,
    attention_kernel,
    available_memory,
    build_random_twin,
    estimate_model_bytes,
    load_model,
    model_facts,
    models_to_release,
)
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
    assert ModelSpec().resolved_device() == "cpu"  # the default: what every spec was before devices existed


# -- precision and devices ----------------------------------------------------------------------
@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], None]:
    """Pretend this machine has cuda:0 and cuda:1; the argument says whether they support bfloat16."""

    def setup(bf16: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)

    return setup


@pytest.mark.parametrize(
    ("text", "dtype", "device", "key"),
    [
        ("bundled", "float32", "cpu", "bundled"),
        ("bundled,dtype=bfloat16", "bfloat16", "cpu", "bundled,dtype=bfloat16"),
        ("random:gpt2,device=cuda:1,dtype=float16", "float16", "cuda:1", "random:gpt2,dtype=float16,device=cuda:1"),
        ("./ckpt,dtype=auto,device=auto", "auto", "auto", "./ckpt,dtype=auto,device=auto"),
        ("gpt2,dtype=float32,device=cpu", "float32", "cpu", "gpt2"),  # the defaults are left out of the key
    ],
)
def test_spec_precision_round_trips(text: str, dtype: str, device: str, key: str) -> None:
    spec = ModelSpec.parse(text)
    assert (spec.dtype, spec.device, spec.key()) == (dtype, device, key)
    assert ModelSpec.parse(spec.key()) == spec


def test_old_keys_mean_float32_on_cpu() -> None:
    spec = ModelSpec.parse("random:bundled")
    assert (spec.resolved_dtype(), spec.resolved_device()) == ("float32", "cpu")
    assert spec.resolved() == spec and spec.resolved().key() == "random:bundled"  # identities unchanged


def test_auto_resolves_per_machine(no_gpu: None) -> None:
    spec = ModelSpec(dtype="auto", device="auto")
    assert spec.resolved() == ModelSpec(dtype="float32", device="cpu")
    assert spec.resolved().key() == ModelSpec().key()  # one cache entry for auto and what it means


@pytest.mark.parametrize(("bf16", "dtype"), [(True, "bfloat16"), (False, "float16")])
def test_auto_on_a_gpu(two_gpus: Callable[[bool], None], bf16: bool, dtype: str) -> None:
    two_gpus(bf16)
    assert ModelSpec(dtype="auto", device="auto").resolved() == ModelSpec(dtype=dtype, device="cuda")
    assert ModelSpec(dtype="auto", device="cpu").resolved_dtype() == "float32"
    assert ModelSpec(dtype="auto", device="cuda:1").resolved().key() == f"bundled,dtype={dtype},device=cuda:1"
    assert validate.device_name("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match=r"cuda:0\.\.cuda:1"):
        validate.device_name("cuda:2")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bundled,dtype=fp8", "Unknown dtype 'fp8'; choose from auto, float32, bfloat16, float16"),
        ("bundled,device=tpu", "Unknown device 'tpu'"),
        ("bundled,device=cuda:x", "Unknown device 'cuda:x'"),
    ],
)
def test_bad_precision_is_one_line(text: str, message: str) -> None:
    for check in (ModelSpec.parse, validate.model_source):
        with pytest.raises(ValueError, match=message) as err:
            check(text)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])  # auto-shard needs no GPU: tests/unit/test_sharding.py
def test_missing_gpu_refused_before_loading(no_gpu: None, monkeypatch: pytest.MonkeyPatch, device: str) -> None:
    monkeypatch.setattr(core.model.loading, "_resolve_source", lambda *a: pytest.fail("loading began"))
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelSpec(device=device))
    assert "\n" not in str(err.value) and ("no usable GPU" in str(err.value) or "not available" in str(err.value))
    with pytest.raises(ValueError, match="no usable GPU|not available"):
        validate.model_source(f"bundled,device={device}")


def test_cli_flags_fold_into_the_model_key() -> None:
    parser = build_parser()
    argv = ["lens", "--prompt", "x"]
    assert parser.parse_args(argv).model == "bundled"  # no flags: the key of old
    assert parser.parse_args([*argv, "--dtype", "bfloat16", "--model", "random:gpt2"]).model == \
        "random:gpt2,dtype=bfloat16"
    assert parser.parse_args([*argv, "--model", "gpt2", "--device", "cpu", "--dtype", "float16"]).model == \
        "gpt2,dtype=float16"
    subcommands = parser._subparsers._group_actions[0].choices  # name -> sub-parser
    assert len(subcommands) >= 8
    for command, sub in subcommands.items():  # every subcommand takes a model, so every one has both flags
        flags = {flag for action in sub._actions for flag in action.option_strings}
        assert {"--model", "--dtype", "--device"} <= flags, command


@pytest.mark.parametrize(("flags", "message"), [
    (["--dtype", "half"], "argument --dtype: Unknown dtype 'half'"),
    (["--device", "tpu"], "Unknown device 'tpu'"),
])
def test_cli_bad_precision_is_one_line(capsys: pytest.CaptureFixture[str], flags: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_main(["lens", "--prompt", "x", *flags])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


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
    assert twin.config._attn_implementation == attention_kernel(config)  # the loader's one kernel rule


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
    assert session.model.config._attn_implementation == attention_kernel(original.config)
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
    folder, saved = saved_model("gpt2")
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
    assert model_kwargs and all(kw.get("attn_implementation") == attention_kernel(saved.config) for kw in model_kwargs)


# -- memory ------------------------------------------------------------------------------------------------
GB = 10**9


@pytest.mark.parametrize(
    ("held", "incoming", "free", "released"),
    [
        ([], 5 * GB, 1 * GB, []),  # nothing held: nothing to release (the load itself may then fail)
        ([("a", 4 * GB)], 3 * GB, 8 * GB, []),  # both fit in free memory beside the margin
        ([("a", 4 * GB)], 3 * GB, 4 * GB, ["a"]),  # a second large model releases the first
        ([("a", 1 * GB), ("b", 1 * GB), ("c", 6 * GB)], 3 * GB, 3 * GB, ["a", "b"]),  # oldest first, only as needed
        ([("a", 1 * GB), ("b", 1 * GB)], 30 * GB, 2 * GB, ["a", "b"]),  # cannot fit: everything released
        ([("a", 2 * GB)], 3 * GB, 4 * GB + 1, ["a"]),  # one byte short of incoming + margin: released
        ([("a", 2 * GB)], 3 * GB, 5 * GB, []),  # exactly incoming + margin free: kept
    ],
)
def test_models_to_release(held: list[tuple[str, int]], incoming: int, free: int, released: list[str]) -> None:
    assert models_to_release(held, incoming, free, margin=2 * GB) == released


def test_model_facts_and_estimate(saved_model: SaveModel) -> None:
    folder, original = saved_model("llama")
    n_params = sum(p.numel() for p in original.parameters())
    facts = model_facts(original)
    assert facts.dtypes == ("float32",) and facts.devices == ("cpu",)
    assert facts.n_bytes >= 4 * n_params
    half = model_facts(original.to(torch.bfloat16))
    assert half.dtypes == ("bfloat16",) and half.n_bytes < facts.n_bytes
    assert half.describe().endswith(" GB · bfloat16 · cpu")
    params_only = 4 * n_params  # the meta-device estimate counts parameters and buffers of the fresh model
    assert estimate_model_bytes(ModelSpec(source=str(folder))) == pytest.approx(facts.n_bytes, rel=0.01)
    assert estimate_model_bytes(ModelSpec(source=str(folder), dtype="bfloat16")) < params_only
    assert estimate_model_bytes(ModelSpec(source="/no/such/folder")) is None


def test_available_memory_is_plausible() -> None:
    free = available_memory()
    assert free is not None and 10**8 < free < 2**45


def test_model_store_holds_models_by_memory(monkeypatch: pytest.MonkeyPatch, tiny_model_factory,
                                            tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    """The app's cache: a second model that does not fit beside the first releases it; one that fits does not."""
    import ui.cached as cached  # heavy: Streamlit, imported only by this test

    loads: list[str] = []

    def fake_load(spec: ModelSpec) -> ModelSession:
        loads.append(spec.key())
        return ModelSession(tiny_model_factory("gpt2"), tiny_tokenizer, spec)

    monkeypatch.setattr(cached, "_load", fake_load)
    monkeypatch.setattr(cached, "estimate_model_bytes", lambda spec: 3 * GB)
    free = {"bytes": 4 * GB}
    monkeypatch.setattr(cached, "available_memory", lambda: free["bytes"])
    store = cached.ModelStore()
    a = store.get(ModelSpec(source="a"))
    assert store.get(ModelSpec(source="a")) is a and loads == ["a"]  # held: not loaded again
    store.get(ModelSpec(source="b"))  # 3 GB do not fit in 4 GB free less the 2 GB margin: "a" goes
    assert list(store.sessions) == ["b"]
    free["bytes"] = 16 * GB
    store.get(ModelSpec(source="c", dtype="bfloat16"))  # fits beside "b": both held
    assert list(store.sessions) == ["b", "c,dtype=bfloat16"]
    monkeypatch.setattr(cached, "available_memory", lambda: None)  # unreadable: at most FALLBACK_MODELS held
    store.get(ModelSpec(source="d"))
    assert list(store.sessions) == ["c,dtype=bfloat16", "d"] and cached.FALLBACK_MODELS == 2

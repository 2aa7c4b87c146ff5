"""Checks of user input that run before any model, lens or corpus work starts.

Plain functions that raise ``ValueError`` with a one-line message a user can act on. Nothing here imports
torch, transformers or pandas at module level, so the command line answers bad input in well under a
second; model sizes come from the model's ``config.json`` (never its weights).
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from core.paths import cache_dir

BUNDLED = "bundled"
RANDOM_PREFIX = "random:"
BUNDLED_DIR = "smollm2-135m-instruct"  # the converted bundled model under cache/models/
CORPUS_SUFFIXES = (".txt", ".jsonl", ".csv")
MAX_CORPUS_BYTES = 200 * 2**20
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$", re.ASCII)
MAX_HUB_ID = 96  # the hub's longest repository id
MAX_SEED = 2**31 - 1  # the pages' bound on every seed (each RNG the analyses use takes it)
MAX_SPECIAL_TOKENS = 8


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` with its line breaks folded, so every message is a single line, and characters a terminal would act
    on (controls, a right-to-left override) escaped; with ``limit``, a longer message (one echoing a 10,000-character
    value) keeps its start and end around an ellipsis."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in " ".join(str(text).split()))
    if limit is not None and len(text) > limit:
        head = limit * 2 // 3
        text = f"{text[:head]} … {text[-(limit - head - 3):]}"
    return text


# -- sizes ---------------------------------------------------------------------------------------------------
def int_range(flag: str, value: int, lo: int, hi: int | None = None) -> int:
    """``value`` when it is an integer in lo..hi (hi None = no upper bound), else ValueError naming ``flag``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{flag} must be a whole number, not {value!r}.")
    if value < lo or (hi is not None and value > hi):
        span = f"at least {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"{flag} must be {span} (got {value}).")
    return value


def number_range(flag: str, value: float, lo: float, hi: float, lo_open: bool = False) -> float:
    """``value`` when it is a finite number in [lo, hi] (or (lo, hi] with ``lo_open``), else ValueError."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{flag} must be a finite number, not {value!r}.")
    if value > hi or value < lo or (lo_open and value == lo):
        raise ValueError(f"{flag} must lie in {'(' if lo_open else '['}{lo:g}, {hi:g}] (got {value:g}).")
    return float(value)


def choice(flag: str, value: str, options: Sequence[str], where: str = "") -> str:
    """``value`` when it is one of ``options``, else ValueError listing them."""
    if value not in options:
        raise ValueError(f"Unknown {flag} {value!r}{where}; choose from {', '.join(options)}.")
    return value


def names(flag: str, text: str, options: Sequence[str]) -> list[str]:
    """Comma-separated names, each one of ``options`` (at least one)."""
    picked = [part.strip() for part in text.split(",") if part.strip()]
    if not picked:
        raise ValueError(f"{flag} is empty; give one or more of {', '.join(options)}.")
    unknown = [name for name in picked if name not in options]
    if unknown:
        raise ValueError(f"Unknown {flag} {', '.join(unknown)}; use {', '.join(options)}.")
    return picked


def int_list(flag: str, text: str) -> list[int]:
    """``"26,27"`` -> [26, 27]; ValueError for anything that is not comma-separated whole numbers."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated whole numbers, not {text!r}.") from None


def position(what: str, value: int, *prompts: str) -> int:
    """``value`` unless no prompt of these could have that token position (negative ones count from the end).

    A tokenizer turns a text into at most one token per UTF-8 byte plus a few special tokens, so a position beyond
    that is refused before any model loads; whether it exists in the tokenized prompt is checked once the model's
    tokenizer has read it."""
    longest = min(len(p.encode("utf-8", "surrogatepass")) for p in prompts) + MAX_SPECIAL_TOKENS
    if isinstance(value, bool) or not isinstance(value, int) or not -longest <= value < longest:
        raise ValueError(f"{what} {value} does not exist: the prompt has fewer than {longest} tokens "
                         "(negative positions count from the end).")
    return value


# -- precision and devices ----------------------------------------------------------------------------------
DTYPES = ("auto", "float32", "bfloat16", "float16")
"""auto = float32 on CPU, bfloat16 on a GPU that supports it (else float16)."""
DEFAULT_DTYPE = "float32"
DEFAULT_DEVICE = "cpu"
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "auto-shard", "ndif")
"""auto = cuda when a GPU is present, else cpu; auto-shard = accelerate's device_map="auto" (blocks spread over the
GPUs, then CPU RAM, then disk under cache/offload/); ndif = the model runs on NDIF through nnsight (a hub id the
service serves; no weights here)."""
NDIF = "ndif"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|auto-shard|ndif)$")
_PRECISION_PART = re.compile(r",(dtype|device)=([^,]*)$")


def dtype_name(value: str) -> str:
    """``value`` when it is one of :data:`DTYPES`, else a one-line ValueError listing them."""
    return choice("dtype", value, DTYPES)


def device_name(value: str, check_hardware: bool = True) -> str:
    """``value`` when it names a device this machine has: auto, cpu, cuda or cuda:N (a GPU must be present).

    auto-shard (no GPU needed: without one the model spreads over CPU RAM and disk) needs the accelerate package;
    ``check_hardware=False`` checks the spelling only."""
    if not isinstance(value, str) or not _DEVICE.match(value):
        raise ValueError(f"Unknown device {value!r}; choose from {', '.join(DEVICE_CHOICES)}.")
    if value == "auto-shard" and importlib.util.find_spec("accelerate") is None:
        raise ValueError("Device 'auto-shard' needs the 'accelerate' package, which is not installed "
                         "(pip install accelerate); use auto, cpu or cuda:N.")
    if value == NDIF and importlib.util.find_spec("nnsight") is None:
        raise ValueError("Device 'ndif' needs the 'nnsight' package, which is not installed (pip install "
                         "nnsight==0.8.1).")
    if check_hardware and value.startswith("cuda"):
        _check_gpu(value)
    return value


def _check_gpu(device: str) -> None:
    """ValueError unless ``device`` (cuda or cuda:N) exists on this machine."""
    import torch  # heavy: loaded only when a GPU is asked for, so other checks stay fast

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ValueError(f"Device {device!r} asked for, but this machine has no usable GPU; use cpu or auto.")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= count:
        raise ValueError(f"Device {device!r} does not exist: this machine has GPUs cuda:0..cuda:{count - 1}.")


def split_precision(text: str) -> tuple[str, str | None, str | None]:
    """``"gpt2,dtype=bfloat16,device=cuda:0"`` -> ("gpt2", "bfloat16", "cuda:0"); parts left out are None.

    The model key (URL value, ``--model``) may end in ``,dtype=...`` and ``,device=...``; values are not
    checked here (:func:`precision` does)."""
    text, parts = (text or "").strip(), {}
    while (found := _PRECISION_PART.search(text)) is not None:
        parts.setdefault(found.group(1), found.group(2).strip())
        text = text[:found.start()].rstrip()
    return text, parts.get("dtype"), parts.get("device")


def join_precision(text: str, dtype: str | None = None, device: str | None = None) -> str:
    """The model key of ``text`` with ``dtype`` / ``device`` (None: keep ``text``'s own); defaults left out."""
    model, own_dtype, own_device = split_precision(text)
    dtype, device = dtype or own_dtype or DEFAULT_DTYPE, device or own_device or DEFAULT_DEVICE
    return (model + ("" if dtype == DEFAULT_DTYPE else f",dtype={dtype}")
            + ("" if device == DEFAULT_DEVICE else f",device={device}"))


def precision(text: str, check_hardware: bool = True) -> tuple[str, str]:
    """The (dtype, device) a model key asks for, checked (defaults float32, cpu); one-line ValueError."""
    _, dtype, device = split_precision(text)
    dtype, device = dtype_name(dtype or DEFAULT_DTYPE), device_name(device or DEFAULT_DEVICE, check_hardware)
    if device == NDIF and dtype not in (DEFAULT_DTYPE, "auto"):
        raise ValueError(f"NDIF runs each model in the precision it deploys it in; leave the precision out "
                         f"(not {dtype}) with device 'ndif'.")
    return dtype, device


# -- models --------------------------------------------------------------------------------------------------
def split_model(text: str) -> tuple[str, bool]:
    """``"random:gpt2"`` -> ("gpt2", True); blank -> ("bundled", False). The same rule as ModelSpec.parse.

    A ``,dtype=...`` / ``,device=...`` ending (:func:`split_precision`) is not part of the source."""
    text = split_precision(text)[0] or BUNDLED
    random_init = text.startswith(RANDOM_PREFIX)
    source = text[len(RANDOM_PREFIX):].strip() if random_init else text
    return source or BUNDLED, random_init


def looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~", "\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", source))


def user_path(text: str) -> Path:
    """``text`` as a path, ``~`` expanded where it names a user this machine has."""
    try:
        return Path(text).expanduser()
    except RuntimeError:  # ~someone who is not a user here: the path as typed (it then does not exist)
        return Path(text)


def path_kind(path: Path) -> str | None:
    """What is at ``path``: 'dir', 'file' or 'other' (a device such as /dev/null); None when nothing is, or when no
    file can have that name (too long, a NUL byte), so such a name gets the same message as a missing file."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return None
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def _hub_id(source: str) -> bool:
    return len(source) <= MAX_HUB_ID and bool(_HUB_ID.match(source))


def model_folder(path: Path, need_weights: bool = True) -> Path:
    """ValueError unless ``path`` is a folder with a model: config.json (and weights when ``need_weights``)."""
    if not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        hint = f" (it has {ggufs[0].name}: give that file itself)" if ggufs else ""
        raise ValueError(f"The folder {str(path)!r} holds no model: no config.json with weights "
                         f"(*.safetensors) and no .gguf file{hint}.")
    config = read_config(path / "config.json")
    if "model_type" not in config:
        raise ValueError(f"{str(path / 'config.json')!r} has no 'model_type': not a Hugging Face model config.")
    if need_weights and not any(any(path.glob(p)) for p in _WEIGHT_PATTERNS):
        raise ValueError(f"The folder {str(path)!r} holds a config.json but no weights (*.safetensors or "
                         f"pytorch_model*.bin); prefix 'random:' for an untrained twin.")
    return path


def model_source(text: str, need_weights: bool = True) -> str:
    """Check a ``--model`` / model field: 'bundled', a hub id, a model folder or a .gguf file (prefix 'random:').

    Returns the source without the prefix. Only files are looked at; hub ids are checked for their shape.
    A random twin needs no weights; ``need_weights=False`` leaves the weights to the loader. The key's dtype and
    device are checked too (:func:`precision`: a GPU must be present when one is asked for)."""
    _, device = precision(text)
    source, random_init = split_model(text)
    if device == NDIF:
        return ndif_source(source, random_init)
    if source == BUNDLED:
        return source
    path = user_path(source)
    kind = path_kind(path)
    if path.suffix.lower() == ".gguf":
        if kind != "file":
            raise ValueError(f"No such .gguf file: {source!r}.")
        gguf_file(path)
        return source
    if kind == "dir":
        model_folder(path, need_weights and not random_init)
        return source
    if kind is not None:
        raise ValueError(f"{source!r} is a file, not a model: give a model folder (config.json + weights), "
                         "a .gguf file or a hub id.")
    if looks_like_path(source):
        raise ValueError(f"No model folder at {source!r}: no such folder.")
    if not _hub_id(source):
        raise ValueError(f"{source!r} is neither a local folder nor a hub id such as 'gpt2' or "
                         "'EleutherAI/pythia-160m'.")
    return source


def gguf_file(path: Path) -> Path:
    """ValueError unless ``path`` starts with GGUF's magic bytes (its weights are read only when the model loads)."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as err:
        raise ValueError(f"{str(path)!r} cannot be read ({one_line(err)}).") from None
    if magic != b"GGUF":
        raise ValueError(f"{str(path)!r} is not a GGUF file (it does not start with the GGUF magic bytes).")
    return path


def ndif_source(source: str, random_init: bool = False) -> str:
    """``source`` when NDIF can serve it (a hub id), else a one-line ValueError saying what runs where."""
    if random_init:
        raise ValueError("A random-init twin has no weights on NDIF: run it locally (device cpu or cuda).")
    if source == BUNDLED or looks_like_path(source) or path_kind(user_path(source)) is not None:
        raise ValueError(f"NDIF runs hub models it serves (such as meta-llama/Llama-3.1-70B), not "
                         f"{'the bundled model' if source == BUNDLED else 'local files'}: run {source!r} locally.")
    if not _hub_id(source):
        raise ValueError(f"{source!r} is not a hub id such as 'meta-llama/Llama-3.1-8B' (NDIF serves hub models).")
    return source


def read_config(path: Path) -> dict:
    """A config.json as a dict; ValueError when it is not a JSON object."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not a readable JSON file ({one_line(err)}).") from None
    if not isinstance(config, dict):
        raise ValueError(f"{str(path)!r} is not a JSON object: not a model config.")
    return config


@dataclass(frozen=True)
class ModelDims:
    """Sizes from a model's config.json: blocks, residual width, MLP width (None when the config lacks it)."""

    n_layers: int
    d_model: int
    d_mlp: int | None


def _first(config: dict, keys: Iterable[str]) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def dims_from_config(config: dict) -> ModelDims | None:
    """The sizes of the supported families from their config keys (None when they cannot be read)."""
    n_layers = _first(config, ("num_hidden_layers", "n_layer", "num_layers"))
    d_model = _first(config, ("hidden_size", "n_embd", "d_model"))
    if n_layers is None or d_model is None:
        return None
    d_mlp = _first(config, ("intermediate_size", "ffn_dim", "n_inner"))
    if d_mlp is None and config.get("model_type") in ("gpt2", "gptj"):
        d_mlp = 4 * d_model  # n_inner = null means 4 * n_embd in both
    return ModelDims(n_layers, d_model, d_mlp)


def _config_path(source: str) -> Path | None:
    if source == BUNDLED:
        path = cache_dir() / "models" / BUNDLED_DIR / "config.json"
        return path if path.is_file() else None
    path = user_path(source)
    if path_kind(path) == "dir":
        return path / "config.json" if path_kind(path / "config.json") == "file" else None
    if path.suffix.lower() == ".gguf" or looks_like_path(source) or not _hub_id(source):
        return None
    from huggingface_hub import try_to_load_from_cache  # optional: the hub cache is asked only for hub ids

    cached = try_to_load_from_cache(source, "config.json")
    return Path(cached) if isinstance(cached, str) else None


def model_dims(text: str) -> ModelDims | None:
    """Sizes of the model ``text`` names, read from its config.json only; None when there is no config here
    (a .gguf file, a hub id not in the local cache, the bundled model before its first conversion)."""
    path = _config_path(split_model(text)[0])
    return dims_from_config(read_config(path)) if path is not None else None


def model_vocab(text: str) -> int | None:
    """The vocabulary size in the config.json of the model ``text`` names (None when there is none here)."""
    path = _config_path(split_model(text)[0])
    return _first(read_config(path), ("vocab_size",)) if path is not None else None


def block(flag: str, value: int, n_layers: int, first: int = 0) -> int:
    """``value`` when it names a block of the model (numbered from ``first``: 0 or 1)."""
    last = n_layers - 1 + first
    if isinstance(value, bool) or not isinstance(value, int) or not first <= value <= last:
        raise ValueError(f"{flag} {value} does not exist: this model has blocks {first}..{last}.")
    return value


def unit(flag: str, value: int, n_units: int, kind: str) -> int:
    """``value`` when it is one of ``n_units`` units (0-based), e.g. kind = 'MLP neurons'."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n_units:
        raise ValueError(f"{flag} {value} does not exist: this model has {n_units} {kind} (0..{n_units - 1}).")
    return value


# -- corpora -------------------------------------------------------------------------------------------------
def corpus_file(path: Path, max_bytes: int = MAX_CORPUS_BYTES) -> list[str]:
    """The texts of a .txt/.jsonl/.csv corpus file (parsed as text, never unpickled)."""
    from core.data import parse_user_texts  # torch-free module: the corpus parser loads only for a corpus file

    if path_kind(path) == "dir":
        raise ValueError(f"{str(path)!r} is a folder; give a {'/'.join(CORPUS_SUFFIXES)} file.")
    if path.suffix.lower() not in CORPUS_SUFFIXES:
        raise ValueError(f"{str(path)!r} is not a .txt, .jsonl or .csv file: give one of those.")
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{str(path)!r} holds {size / 2**20:.0f} MB; the limit is {max_bytes / 2**20:.0f} MB.")
    return parse_user_texts(path.read_bytes(), path.name)


def corpus(text: str, bundled: Sequence[str]) -> list[str] | None:
    """A ``--corpus``: None for a bundled corpus name, else the parsed texts of the file it names."""
    if not text.strip():
        raise ValueError(f"The corpus is empty: choose from {', '.join(bundled)}, or give a "
                         f"{'/'.join(CORPUS_SUFFIXES)} file.")
    path = user_path(text)
    kind = path_kind(path)
    if kind == "file":
        return corpus_file(path)
    if text in bundled:
        return None
    if kind is not None:
        return corpus_file(path)
    if path.suffix.lower() in CORPUS_SUFFIXES or looks_like_path(text) or "/" in text:
        raise ValueError(f"No such corpus file: {text!r}.")
    raise ValueError(f"Unknown corpus {text!r}; choose from {', '.join(bundled)}, or give a "
                     f"{'/'.join(CORPUS_SUFFIXES)} file.")


def text_folder(text: str, max_bytes: int = MAX_CORPUS_BYTES) -> Path:
    """A folder of .txt files (searched recursively, at most ``max_bytes`` in all), without reading them."""
    path = user_path(text)
    kind = path_kind(path)
    if kind is None:
        raise ValueError(f"The corpus folder {text!r} does not exist.")
    if kind != "dir":
        raise ValueError(f"{text!r} is not a folder: give a folder of .txt files.")
    files = [p for p in path.rglob("*.txt") if p.is_file()]
    if not files:
        raise ValueError(f"The folder {text!r} holds no .txt files.")
    total = sum(p.stat().st_size for p in files)
    if total > max_bytes:
        raise ValueError(f"The .txt files in {text!r} hold {total / 2**20:.0f} MB; the limit is "
                         f"{max_bytes / 2**20:.0f} MB. Use a smaller sample.")
    return path


# -- lenses --------------------------------------------------------------------------------------------------
def lens_folder(text: str) -> Path:
    """A pretrained lens folder: params.safetensors with a readable safetensors header (pickles refused)."""
    if not text.strip():
        raise ValueError("No lens folder given: name a folder with params.safetensors + config.json.")
    path = user_path(text)
    if path_kind(path) != "dir":
        raise ValueError(f"No lens folder at {text!r}.")
    params = path / "params.safetensors"
    if not params.is_file():
        if (path / "params.pt").is_file():
            raise ValueError(f"{text!r} holds a pickled lens (params.pt); Layerscope reads lenses only as "
                             "safetensors (params.safetensors + config.json), since pickles can run code.")
        raise ValueError(f"{text!r} holds no params.safetensors: not a lens folder Layerscope can read.")
    safetensors_header(params)
    return path


def safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (8-byte little-endian length, then JSON); ValueError if not one."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 2 <= length <= min(100 * 2**20, max(0, path.stat().st_size - 8)):
            raise ValueError(f"{str(path)!r} is not a safetensors file.")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"{str(path)!r} is not a safetensors file (unreadable header).") from None
    if not isinstance(header, dict):
        raise ValueError(f"{str(path)!r} is not a safetensors file.")
    return header

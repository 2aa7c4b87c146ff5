"""Disk cache for long work (corpus analyses, lens training), under ``cache/results`` only.

Keys are sha256 digests of the model identity (spec key + a fingerprint of its weights), the inputs, the
parameters and :data:`core.CORE_VERSION` (bump it when the maths changes). Values are written by
Layerscope itself; nothing a user uploads or names is ever unpickled from here.
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import lru_cache
from typing import Any, Callable, TypeVar

import diskcache
import torch

from core import CORE_VERSION
from core.model.arch import loaded_named_parameters
from core.paths import cache_dir

T = TypeVar("T")
log = logging.getLogger("layerscope")
_SIZE_LIMIT = 4 * 2**30  # 4 GiB, least recently stored entries are evicted first


@lru_cache(maxsize=1)
def results_cache() -> diskcache.Cache:
    return diskcache.Cache(str(cache_dir() / "results"), size_limit=_SIZE_LIMIT)


def weight_fingerprint(model: torch.nn.Module, sample: int = 4096) -> str:
    """Short digest of the model's weights: shapes plus a strided sample of every parameter's values."""
    digest = hashlib.sha256()
    for name, param in loaded_named_parameters(model):  # offloaded (meta) weights read with their real values
        flat = param.detach().reshape(-1)
        step = max(1, flat.numel() // sample)
        digest.update(name.encode())
        digest.update(str(tuple(param.shape)).encode())
        digest.update(flat[::step][:sample].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def stable_key(namespace: str, **parts: Any) -> str:
    """sha256 of the namespace, the JSON of ``parts`` (sorted keys) and CORE_VERSION."""
    payload = json.dumps({"ns": namespace, "v": CORE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def cached(namespace: str, compute: Callable[[], T], **parts: Any) -> T:
    """Return the stored result for these parts, computing and storing it on a miss."""
    key = stable_key(namespace, **parts)
    store = results_cache()
    try:
        hit = store.get(key, default=None)
    except Exception as err:  # a truncated or corrupted entry (killed mid-write, disk trouble): recompute it
        log.warning("Cache entry %s (%s) cannot be read (%s: %s); computing it again.", key[:12], namespace,
                    type(err).__name__, str(err)[:200])
        store.delete(key)
        hit = None
    if hit is not None:
        return hit
    value = compute()
    store.set(key, value)
    return value


def is_cached(namespace: str, **parts: Any) -> bool:
    """Whether :func:`cached` holds a result for these parts (a link reopening a view shows it without a Run)."""
    return stable_key(namespace, **parts) in results_cache()

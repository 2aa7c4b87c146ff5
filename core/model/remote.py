"""Models that run on NDIF (device "ndif"): loading one here without its weights, and the API key.

A model "on NDIF" is a hub id the service serves (``nnsight.status()`` lists them: a few dedicated deployments,
Llama-3.1-70B among them, and scheduled ones). Layerscope builds it here on the meta device through nnsight (config
and tokenizer from the hub, no weights), so the architecture record and the tokenizer work as for a local model; every
forward pass goes to NDIF as an nnsight trace (:class:`core.model.executors.NnsightExecutor`), and the logit lens is
reduced there (:func:`core.lenses.stats.remote_lens_stats`), so only its statistics come back.

The API key: :func:`api_key_scope` (the app's password field, for one browser session's requests) or the environment
variable ``NDIF_API_KEY``. It is never written to a file, a log, a cache key or a URL.
"""

from __future__ import annotations

import contextvars
import os
from contextlib import contextmanager
from typing import Iterator

from core.model.executors import NDIF_KEY_ENV, NnsightExecutor, RemoteUnavailable, import_nnsight

_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar("ndif_api_key", default=None)


@contextmanager
def api_key_scope(key: str | None) -> Iterator[None]:
    """NDIF requests made inside the block (this thread) use ``key`` (None or "": fall back to NDIF_API_KEY)."""
    token = _KEY.set((key or "").strip() or None)
    try:
        yield
    finally:
        _KEY.reset(token)


def api_key() -> str | None:
    """The key for an NDIF request now: the scope's, else the environment's; None when there is neither."""
    return _KEY.get() or (os.environ.get(NDIF_KEY_ENV, "").strip() or None)


def load_ndif(spec) -> tuple:
    """(meta-device model, tokenizer, executor) for ``spec`` (a hub id, device "ndif"): nnsight builds the model
    from the hub's config without weights; ModelLoadError (one line) when nnsight, the hub or the model is missing."""
    from core.model.loading import ModelLoadError, check_supported_source  # loading imports this module's users
    from core.validate import ndif_source

    try:
        ndif_source(spec.source, spec.random_init)
    except ValueError as err:
        raise ModelLoadError(str(err)) from None
    check_supported_source(spec)
    try:
        import_nnsight()
        from nnsight import TransformersModel

        wrapped = TransformersModel(spec.source, revision=spec.revision, task="text-generation")
    except RemoteUnavailable as err:
        raise ModelLoadError(str(err)) from None
    except Exception as err:  # noqa: BLE001 - every failure to build the meta model is one readable line
        raise ModelLoadError(f"Could not prepare '{spec.source}' for NDIF ({type(err).__name__}: "
                             f"{' '.join(str(err).split())[:200]}). NDIF models need the hub for their config "
                             "and tokenizer.") from err
    model = wrapped._module
    model.eval().requires_grad_(False)
    return model, wrapped.tokenizer, NnsightExecutor(wrapped, "ndif", api_key_getter=api_key)

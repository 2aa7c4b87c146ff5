"""One forward pass, captured: ``ModelSession.trace(prompt) -> Trace``; every pass through :meth:`ModelSession.run`.

Every forward pass of an analysis is a :class:`core.model.executors.Pass` (ids, the plain-data capture and patch
requests of :mod:`core.model.hooks`, what to return) handed to :meth:`ModelSession.run`, which the session's executor
runs: local forward hooks (the default), or an nnsight trace, here or on NDIF. Passes run inside the per-model lock, so
Streamlit sessions sharing one cached model in several threads get exactly what they would get one at a time. A Trace
is frozen and holds no reference to hooks; the session stores nothing about past traces. Models run with the SDPA
attention kernel; only a trace that captures attention patterns switches to eager, for that one pass and under the
same lock.
"""

from __future__ import annotations

import copy
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Callable, ContextManager, Iterator, Sequence

import torch
from torch import nn

from core.cache import weight_fingerprint
from core.model.arch import Adapter
from core.model.executors import LocalExecutor, Pass, PassOutput
from core.model.hooks import Capture, Captured, Patch, hooked, residual_captures
from core.model.loading import ModelSpec, eager_attention, load_model
from core.model.prompts import encode
from core.model.token_text import readable_token_texts
from core.validate import NDIF
from core.progress import Progress, no_progress

CAPTURABLE = ("attn_patterns", "head_z", "attn_out", "mlp_out", "neurons")
_TRACE_SITES = {"head_z": "attn_z", "attn_out": "attn_out", "mlp_out": "mlp_out", "neurons": "mlp_act"}
"""Trace field -> the hook site it is read from (attention patterns come from the model's own output)."""


@dataclass(frozen=True)
class Trace:
    """What one forward pass captured. Layer 0 is the embeddings, layer l the output of block l.

    resid         [layer+1, pos, d_model]  residual stream, *before* the final norm (also at layer L)
    attn_patterns [layer, head, pos, pos]  attention weights (rows sum to 1), when requested
    head_z        [layer, pos, head*d_head] per-head outputs before the output projection, when requested
    attn_out      [layer, pos, d_model]    attention's write into the residual stream, when requested
    mlp_out       [layer, pos, d_model]    MLP's write into the residual stream, when requested
    neurons       [layer, pos, d_mlp]      MLP neuron activations (input of the down projection)
    """

    input_ids: torch.Tensor  # [pos]
    tokens: tuple[str, ...]
    resid: torch.Tensor
    attn_patterns: torch.Tensor | None = None
    head_z: torch.Tensor | None = None
    attn_out: torch.Tensor | None = None
    mlp_out: torch.Tensor | None = None
    neurons: torch.Tensor | None = None
    model_key: str = ""
    cache: Any = None  # the pass's key/value cache (trace(..., keep_cache=True)): what an edited prompt continues

    @property
    def n_layers(self) -> int:
        return self.resid.shape[0] - 1

    @property
    def n_pos(self) -> int:
        return self.resid.shape[1]


def _croppable(cache: Any) -> bool:
    """True for a key/value cache that can be cut back to a prefix exactly: every layer a plain full-attention
    layer (a sliding-window layer keeps only its window, so cutting it back loses states)."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and hasattr(cache, "crop") and all(type(layer).__name__ == "DynamicLayer" for layer in layers)


class ModelSession:
    """Owns a model, its tokenizer and adapter; cached per full :class:`ModelSpec`."""

    def __init__(self, model: nn.Module, tokenizer, spec: ModelSpec | None = None, executor=None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec or ModelSpec(source=getattr(model.config, "name_or_path", "custom") or "custom")
        self.adapter = Adapter(model)
        self.executor = executor or LocalExecutor()
        self.adapter.weights_elsewhere = bool(getattr(self.executor, "remote", False))
        self.lock = threading.RLock()
        self._vocab_strings: list[str] | None = None
        self._identity: str | None = None

    @classmethod
    def load(cls, spec: ModelSpec, progress: Progress = no_progress) -> "ModelSession":
        """The model of ``spec``, loaded here -- or, for device "ndif", built without weights and run on NDIF."""
        if spec.resolved_device() == NDIF:
            from core.model.remote import load_ndif  # nnsight: imported only for models that use it

            model, tokenizer, executor = load_ndif(spec)
            return cls(model, tokenizer, spec, executor)
        model, tokenizer = load_model(spec, progress)
        return cls(model, tokenizer, spec)

    def with_executor(self, executor) -> "ModelSession":
        """A session over the same model and tokenizer whose passes run through ``executor`` (e.g. an
        :class:`core.model.executors.NnsightExecutor` over this local model: the NDIF code path, run here)."""
        return ModelSession(self.model, self.tokenizer, self.spec, executor)

    def identity(self) -> str:
        """Spec key plus a fingerprint of the weights: what disk-cache keys use for "this model" (a model run on
        NDIF has no weights here: the spec key, which names the hub id and revision, stands alone)."""
        if self._identity is None:
            mark = "ndif" if self.remote else weight_fingerprint(self.model)
            self._identity = f"{self.spec.key()}#{mark}"
        return self._identity

    @property
    def remote(self) -> bool:
        """True when the model runs elsewhere (NDIF): its weights are not on this machine."""
        return bool(getattr(self.executor, "remote", False))

    @property
    def ships_requests(self) -> bool:
        """True when passes are sent as NDIF requests (NDIF, or nnsight's local simulation of it): the Lens then
        reduces where the model runs (:func:`core.lenses.stats.remote_lens_stats`), as it must on NDIF."""
        return bool(getattr(self.executor, "ships_requests", False))

    def require_local(self, what: str) -> None:
        """ValueError (:class:`core.model.arch.WeightsElsewhere`) saying that ``what`` needs the model's weights
        here, when the model runs on NDIF."""
        self.adapter.weights_here(what)

    @property
    def device(self) -> torch.device:
        """Where input ids go: the embedding's device (a model spread over devices has blocks elsewhere)."""
        return self.adapter.embed_device

    @property
    def max_tokens(self) -> int:
        return self.adapter.context_length

    # -- tokens --------------------------------------------------------------------------------
    def vocab_strings(self) -> list[str]:
        """[vocab] the decoded text of every token id, except that a token holding only part of a character's
        UTF-8 bytes shows those bytes (" \\xe5\\x88", :mod:`core.model.token_text`) where decoding alone gives
        "�" (computed once)."""
        if self._vocab_strings is None:
            n = self.adapter.d_vocab
            known = len(self.tokenizer)
            strings = readable_token_texts(self.tokenizer,
                                           self.tokenizer.batch_decode([[i] for i in range(min(n, known))]))
            self._vocab_strings = strings + [f"<unused {i}>" for i in range(known, n)]
        return self._vocab_strings

    def tokenize(self, prompt: str) -> torch.Tensor:
        """-> [pos] token ids under the one BOS rule of :func:`core.model.prompts.encode` (the tokenizer's own special
        tokens, but no second BOS before a text that starts with the BOS token's text); ValueError for an empty
        prompt or one longer than the context."""
        if prompt is None or not prompt.strip():
            raise ValueError("The prompt is empty: type some text to analyse.")
        ids = torch.tensor(encode(self.tokenizer, prompt), dtype=torch.long)
        if ids.numel() == 0:
            raise ValueError("The prompt produced no tokens.")
        if ids.numel() > self.max_tokens:
            raise ValueError(
                f"The prompt is {ids.numel()} tokens long; this model reads at most {self.max_tokens}. "
                "Shorten it."
            )
        return ids

    def _check_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Validate raw token ids ([pos]) as :meth:`tokenize` validates text."""
        if ids.ndim != 1 or ids.numel() == 0:
            raise ValueError("Token ids must be a non-empty 1-D tensor [pos].")
        if ids.numel() > self.max_tokens:
            raise ValueError(f"{ids.numel()} tokens; this model reads at most {self.max_tokens}.")
        if int(ids.min()) < 0 or int(ids.max()) >= self.adapter.d_vocab:
            raise ValueError(f"Token ids must lie in 0..{self.adapter.d_vocab - 1}.")
        return ids

    def token_strings(self, ids: torch.Tensor) -> tuple[str, ...]:
        vocab = self.vocab_strings()
        return tuple(vocab[int(i)] for i in ids)

    # -- passes ------------------------------------------------------------------------------
    def run(self, p: Pass) -> PassOutput:
        """Run one forward pass (:class:`core.model.executors.Pass`: ids, capture and patch requests, what to return)
        with this session's executor: the one way every analysis runs the model."""
        with torch.no_grad():
            return self.executor.run(self, p)

    def hooks(self, captures: Sequence[Capture] = (), patches: Sequence[Patch] = (),
              stop_early: bool = False) -> ContextManager[Captured]:
        """``with session.hooks(captures, patches) as got: session.model(...)``: the local executor's hook context,
        for code that drives a local model itself (tests, notebooks). Analyses use :meth:`run`, which also runs on
        nnsight and NDIF.

        Takes the session's lock, registers the requests (:mod:`core.model.hooks`: plain data, 0-based blocks or
        residual layers), runs the body under ``torch.no_grad()`` and always removes the hooks. ``got`` holds the
        captured tensors once the body has run; ``stop_early`` ends the pass after the last capture.
        """
        if self.remote:
            raise ValueError("Local hooks need the model on this machine; this one runs on NDIF (use run()).")
        return hooked(self.adapter, self.lock, captures, patches, stop_early)

    # -- tracing -------------------------------------------------------------------------------
    def trace(self, prompt: str | torch.Tensor, capture: tuple[str, ...] = (), keep_cache: bool = False,
              progress: Callable[[float], None] | None = None) -> Trace:
        """Run ONE forward pass on ``prompt`` (text or [pos] ids) and return what it captured.

        ``keep_cache``: keep the pass's key/value cache on the trace (where the executor can hand it on), so an edited
        prompt continues it (:meth:`trace_edit`). ``progress(fraction)`` is called as blocks finish (local models).
        """
        unknown = set(capture) - set(CAPTURABLE)
        if unknown:
            raise ValueError(f"Unknown capture {sorted(unknown)}; choose from {CAPTURABLE}.")
        ids = self.tokenize(prompt) if isinstance(prompt, str) else self._check_ids(prompt)
        n = self.adapter.n_layers
        requests = residual_captures(range(n + 1), row=0) + tuple(
            Capture(_TRACE_SITES[name], tuple(range(n)), row=0) for name in CAPTURABLE
            if name in capture and name in _TRACE_SITES)
        keep = keep_cache and self.executor.kv_cache
        with self._block_progress(progress):
            out = self.run(Pass(ids[None], captures=requests, attentions="attn_patterns" in capture, keep_cache=keep))
        trace = self._build_trace(ids, out, capture)
        return replace(trace, cache=out.past_key_values) if keep else trace

    def trace_edit(self, base: Trace, prompt: str | torch.Tensor,
                   progress: Callable[[float], None] | None = None) -> tuple[Trace, int]:
        """The residual trace of an edited prompt, continuing ``base``'s key/value cache over the tokens both share
        -> (trace, n shared). Positions before the first changed token keep ``base``'s residuals (a causal model
        computes them from the same tokens); only the rest of the prompt runs. Without a cache on ``base`` (or an
        executor that cannot hand one on, or a cache that cannot be cut back) the whole prompt runs: the same
        numbers within float32 rounding. The result keeps its own cache, so it can be edited in turn."""
        ids = self.tokenize(prompt) if isinstance(prompt, str) else self._check_ids(prompt)
        n = min(base.input_ids.numel(), ids.numel())
        differs = (base.input_ids[:n] != ids[:n].cpu()).nonzero()
        shared = int(differs[0, 0]) if differs.numel() else n
        shared = min(shared, ids.numel() - 1)  # at least the last token runs: the pass needs one
        cache = base.cache
        if shared == 0 or not self.executor.kv_cache or not _croppable(cache):
            return self.trace(ids, keep_cache=True, progress=progress), 0
        cache = copy.deepcopy(cache)  # the base trace keeps its own: it may be edited again
        cache.crop(shared - cache.get_seq_length())  # transformers 5: a negative count removes that many tokens
        n = self.adapter.n_layers
        with self._block_progress(progress):
            out = self.run(Pass(ids[None, shared:], captures=residual_captures(range(n + 1), row=0),
                                past_key_values=cache, keep_cache=True))
        tail = out.captured.residual(range(n + 1))  # [layer+1, pos - shared, d_model]
        resid = torch.cat([base.resid[:, :shared], tail.to(base.resid.dtype)], dim=1)
        trace = Trace(input_ids=ids.cpu(), tokens=self.token_strings(ids), resid=resid, model_key=self.spec.key(),
                      cache=out.past_key_values)
        return trace, shared

    @contextmanager
    def _block_progress(self, progress: Callable[[float], None] | None) -> Iterator[None]:
        """Call ``progress(done / blocks)`` after each block of the passes in the body (local models only)."""
        if progress is None or self.remote:
            yield
            return
        blocks = self.adapter.blocks
        def done(i: int) -> Callable[..., None]:
            def hook(*_: Any) -> None:  # returns None: a forward hook's return value would replace the block's output
                progress((i + 1) / len(blocks))
            return hook

        handles = [block.register_forward_hook(done(i)) for i, block in enumerate(blocks)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def attention_weights(self) -> ContextManager[None]:
        """``with session.lock, session.attention_weights(): ...``: the body's passes run with the eager attention
        kernel, which returns attention weights (SDPA, the kernel models load with, returns none); the model's own
        kernel is restored afterwards. Hold the session lock around it: the kernel is a setting of the shared model,
        so no other thread's pass may run while it is switched."""
        return eager_attention(self.model)

    def _build_trace(self, ids: torch.Tensor, out: PassOutput, capture: tuple[str, ...]) -> Trace:
        n = self.adapter.n_layers
        got = out.captured
        resid = got.residual(range(n + 1))  # [layer+1, pos, d_model]

        def stacked(name: str) -> torch.Tensor | None:
            return got.stack(_TRACE_SITES[name], range(n)) if name in capture else None  # [layer, pos, d]

        patterns = None
        if "attn_patterns" in capture:
            patterns = torch.stack([a[0] for a in out.attentions])  # [layer, head, pos, pos]
        return Trace(
            input_ids=ids.cpu(),
            tokens=self.token_strings(ids),
            resid=resid,
            attn_patterns=patterns,
            head_z=stacked("head_z"),
            attn_out=stacked("attn_out"),
            mlp_out=stacked("mlp_out"),
            neurons=stacked("neurons"),
            model_key=self.spec.key(),
        )

    # -- helpers for analyses ------------------------------------------------------------------
    def head_outputs(self, trace: Trace, layer: int) -> torch.Tensor:
        """[pos, head, d_model]: each head's write into the residual stream at ``layer`` (no bias)."""
        if trace.head_z is None:
            raise ValueError("This trace was made without capture=('head_z',).")
        adapter = self.adapter
        z = trace.head_z[layer].reshape(trace.n_pos, adapter.n_heads, adapter.d_head)  # [pos, head, d_head]
        weight = adapter.head_out_weight(layer).detach().float().cpu()  # [head, d_head, d_model]
        return torch.einsum("phd,hdm->phm", z, weight)

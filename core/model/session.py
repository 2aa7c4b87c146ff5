"""One forward pass, captured: ``ModelSession.trace(prompt) -> Trace``.

Hooks are registered inside a per-model lock and always removed, so Streamlit sessions sharing one
cached model in several threads get exactly what they would get one at a time. A Trace is frozen and
holds no reference to hooks; the session stores nothing about past traces.
"""

from __future__ import annotations

import inspect
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from core.model.arch import Adapter
from core.model.loading import ModelSpec, load_model
from core.progress import Progress, no_progress

CAPTURABLE = ("attn_patterns", "head_z", "attn_out", "mlp_out", "neurons")


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

    @property
    def n_layers(self) -> int:
        return self.resid.shape[0] - 1

    @property
    def n_pos(self) -> int:
        return self.resid.shape[1]


@dataclass
class _Capture:
    """Per-call scratch space the hooks write into (never shared between calls)."""

    embeddings: torch.Tensor | None = None
    blocks: dict[int, torch.Tensor] = field(default_factory=dict)
    head_z: dict[int, torch.Tensor] = field(default_factory=dict)
    attn_out: dict[int, torch.Tensor] = field(default_factory=dict)
    mlp_out: dict[int, torch.Tensor] = field(default_factory=dict)
    neurons: dict[int, torch.Tensor] = field(default_factory=dict)


def _first_tensor(value) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


class ModelSession:
    """Owns a model, its tokenizer and adapter; cached per full :class:`ModelSpec`."""

    def __init__(self, model: nn.Module, tokenizer, spec: ModelSpec | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec or ModelSpec(source=getattr(model.config, "name_or_path", "custom") or "custom")
        self.adapter = Adapter(model)
        self.lock = threading.RLock()
        self._vocab_strings: list[str] | None = None
        self._identity: str | None = None

    @classmethod
    def load(cls, spec: ModelSpec, progress: Progress = no_progress) -> "ModelSession":
        model, tokenizer = load_model(spec, progress)
        return cls(model, tokenizer, spec)

    def identity(self) -> str:
        """Spec key plus a fingerprint of the weights: what disk-cache keys use for "this model"."""
        if self._identity is None:
            from core.cache import weight_fingerprint

            self._identity = f"{self.spec.key()}#{weight_fingerprint(self.model)}"
        return self._identity

    @property
    def _skip_logits(self) -> dict[str, int]:
        """Ask the model for the last position's logits only, where it can: a trace never reads them,
        and [pos, vocab] float32 logits are 400 MB at 2048 tokens for a 49k vocabulary."""
        return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(self.model.forward).parameters else {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_tokens(self) -> int:
        return self.adapter.context_length

    # -- tokens --------------------------------------------------------------------------------
    def vocab_strings(self) -> list[str]:
        """[vocab] the decoded text of every token id (computed once)."""
        if self._vocab_strings is None:
            n = self.adapter.d_vocab
            known = len(self.tokenizer)
            strings = self.tokenizer.batch_decode([[i] for i in range(min(n, known))])
            self._vocab_strings = strings + [f"<unused {i}>" for i in range(known, n)]
        return self._vocab_strings

    def tokenize(self, prompt: str) -> torch.Tensor:
        """-> [pos] token ids; ValueError for an empty prompt or one longer than the context."""
        if prompt is None or not prompt.strip():
            raise ValueError("The prompt is empty: type some text to analyse.")
        ids = self.tokenizer(prompt, return_tensors="pt").input_ids[0]
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

    # -- tracing -------------------------------------------------------------------------------
    def trace(self, prompt: str | torch.Tensor, capture: tuple[str, ...] = ()) -> Trace:
        """Run ONE forward pass on ``prompt`` (text or [pos] ids) and return what it captured."""
        unknown = set(capture) - set(CAPTURABLE)
        if unknown:
            raise ValueError(f"Unknown capture {sorted(unknown)}; choose from {CAPTURABLE}.")
        ids = self.tokenize(prompt) if isinstance(prompt, str) else self._check_ids(prompt)
        cap = _Capture()
        with self.lock, torch.no_grad(), self._hooks(cap, capture, ids.numel()):
            out = self.model(ids[None].to(self.device), output_attentions="attn_patterns" in capture,
                             **self._skip_logits)
        return self._build_trace(ids, cap, capture, out)

    def _build_trace(self, ids: torch.Tensor, cap: _Capture, capture: tuple[str, ...], out) -> Trace:
        n = self.adapter.n_layers
        assert cap.embeddings is not None and len(cap.blocks) == n, "hooks did not fire on every block"
        resid = torch.stack([cap.embeddings] + [cap.blocks[i] for i in range(n)])  # [layer+1, pos, d_model]

        def stacked(store: dict[int, torch.Tensor], name: str) -> torch.Tensor | None:
            return torch.stack([store[i] for i in range(n)]) if name in capture else None

        patterns = None
        if "attn_patterns" in capture:
            patterns = torch.stack([a[0].float().cpu() for a in out.attentions])  # [layer, head, pos, pos]
        return Trace(
            input_ids=ids.cpu(),
            tokens=self.token_strings(ids),
            resid=resid,
            attn_patterns=patterns,
            head_z=stacked(cap.head_z, "head_z"),
            attn_out=stacked(cap.attn_out, "attn_out"),
            mlp_out=stacked(cap.mlp_out, "mlp_out"),
            neurons=stacked(cap.neurons, "neurons"),
            model_key=self.spec.key(),
        )

    @contextmanager
    def _hooks(self, cap: _Capture, capture: tuple[str, ...], n_pos: int) -> Iterator[None]:
        """Register the capture hooks; remove them however the pass ends."""
        handles = []
        adapter = self.adapter

        def keep(store: dict[int, torch.Tensor], layer: int, tensor: torch.Tensor) -> None:
            # [batch, pos, d] or, as in OPT's MLP, flattened [batch*pos, d] -> [pos, d]
            store[layer] = tensor.reshape(-1, n_pos, tensor.shape[-1])[0].detach().float().cpu().clone()

        def on_embed(_module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            cap.embeddings = hidden[0].detach().float().cpu().clone()

        try:
            handles.append(adapter.blocks[0].register_forward_pre_hook(on_embed, with_kwargs=True))
            for layer, block in enumerate(adapter.blocks):
                handles.append(block.register_forward_hook(
                    lambda _m, _i, o, layer=layer: keep(cap.blocks, layer, _first_tensor(o))))
                if "head_z" in capture:
                    handles.append(adapter.attn_out(layer).register_forward_pre_hook(
                        lambda _m, args, layer=layer: keep(cap.head_z, layer, args[0])))
                if "attn_out" in capture:
                    handles.append(adapter.attn_out(layer).register_forward_hook(
                        lambda _m, _i, o, layer=layer: keep(cap.attn_out, layer, _first_tensor(o))))
                if "mlp_out" in capture:
                    handles.append(adapter.mlp_out(layer).register_forward_hook(
                        lambda _m, _i, o, layer=layer: keep(cap.mlp_out, layer, _first_tensor(o))))
                if "neurons" in capture:
                    handles.append(adapter.neurons(layer).register_forward_pre_hook(
                        lambda _m, args, layer=layer: keep(cap.neurons, layer, args[0])))
            yield
        finally:
            for handle in handles:
                handle.remove()

    # -- helpers for analyses ------------------------------------------------------------------
    def head_outputs(self, trace: Trace, layer: int) -> torch.Tensor:
        """[pos, head, d_model]: each head's write into the residual stream at ``layer`` (no bias)."""
        if trace.head_z is None:
            raise ValueError("This trace was made without capture=('head_z',).")
        adapter = self.adapter
        z = trace.head_z[layer].reshape(trace.n_pos, adapter.n_heads, adapter.d_head)  # [pos, head, d_head]
        weight = adapter.head_out_weight(layer).detach().float().cpu()  # [head, d_head, d_model]
        return torch.einsum("phd,hdm->phm", z, weight)

"""One forward pass as data (:class:`Pass`), and the two executors that run it: local hooks, or an nnsight trace.

Every analysis asks for its forward passes through :meth:`core.model.session.ModelSession.run`: the input ids (and
mask, positions), the capture and patch requests of :mod:`core.model.hooks` (plain data), whether the pass may stop
after its last capture, and whether the last position's logits or the attention weights are wanted. The session's
executor runs it:

* :class:`LocalExecutor` (the default): PyTorch forward hooks on the model in this process.
* :class:`NnsightExecutor`: the same requests inside an ``nnsight`` trace -- on a model in this process, or on NDIF
  (the National Deep Inference Fabric), where the model runs on the service's GPUs and only what the trace saves comes
  back. The trace body is ordinary Python that nnsight ships to the server as source; the tensor work in it is the
  torch-only functions of :mod:`core.model.ops` (what a patch writes, what a capture keeps) and
  :mod:`core.lenses.reduce` (lens statistics), sent by value (:func:`register_remote_code`), so a patch or a
  reduction means the same thing whichever executor ran it.

Modes of the nnsight executor: ``"here"`` runs the trace directly; ``"simulate"`` serialises the request exactly as
for NDIF, deserialises it with Layerscope's modules hidden (as on the server, nnsight's local simulation) and runs it
here -- what the tests use, with the bytes each way measured; ``"ndif"`` sends it to NDIF.
"""

from __future__ import annotations

import inspect
import io
import logging
import sys
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from core.lenses import reduce as lens_reduce
from core.model import ops
from core.model.hooks import (Capture, Captured, Patch, execution_order, hooked, keep_spec, patch_spec, plan)

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Pass:
    """One forward pass, as data.

    input_ids       [batch, pos] token ids
    attention_mask  [batch, pos] 1 for real tokens (padded batches), or None
    position_ids    [batch, pos] explicit positions (right-padded batches), or None; passed where the model takes them
    captures, patches  the requests of :mod:`core.model.hooks`
    stop_early      end the pass once every capture is recorded (then no logits)
    logits          return the last position's logits [batch, vocab] (float32, where the unembedding ran)
    attentions      return every block's attention weights [batch, head, pos, pos] (float32, CPU)
    past_key_values a key/value cache of a prefix the ids continue   } local executor only
    keep_cache      return the pass's key/value cache                 } (``executor.kv_cache``)
    start_block     run only blocks start_block.. (0-based) from ``resid``; the blocks before it do not run and
                    their key/value cache entries are neither read nor written    } local executor, where
    resid           [batch, pos, d_model] the residual stream entering block      } :func:`starts_at_block`
                    ``start_block``, given instead of embedding ``input_ids`` (which then only give the shape)
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None
    captures: tuple[Capture, ...] = ()
    patches: tuple[Patch, ...] = ()
    stop_early: bool = False
    logits: bool = False
    attentions: bool = False
    past_key_values: Any = None
    keep_cache: bool = False
    start_block: int = 0
    resid: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.input_ids.ndim != 2:
            raise ValueError(f"A pass takes [batch, pos] ids; got shape {tuple(self.input_ids.shape)}.")
        if self.resid is not None and (self.resid.ndim != 3 or self.resid.shape[:2] != self.input_ids.shape):
            raise ValueError(f"A pass's resid is [batch, pos, d_model] like its ids {tuple(self.input_ids.shape)}; "
                             f"got shape {tuple(self.resid.shape)}.")
        if self.start_block and self.resid is None:
            raise ValueError("A pass that starts at a later block needs the residual stream entering it (resid).")
        object.__setattr__(self, "captures", tuple(self.captures))
        object.__setattr__(self, "patches", tuple(self.patches))


@dataclass
class PassOutput:
    """What a pass returned: the captures, and the logits / attention weights when asked for (None when the pass
    stopped early or they were not asked for)."""

    captured: Captured
    logits: torch.Tensor | None = None  # [batch, vocab]
    attentions: tuple[torch.Tensor, ...] | None = None  # per block [batch, head, pos, pos]
    past_key_values: Any = None  # the pass's key/value cache (keep_cache)


def forward_kwargs(model: nn.Module, p: Pass) -> dict:
    """Keywords of the model call for ``p``: mask and positions where the model takes them, only the last
    position's logits where it can (a pass reads no other), attention weights when asked for."""
    accepted = inspect.signature(model.forward).parameters
    kwargs: dict = {}
    if p.attention_mask is not None:
        kwargs["attention_mask"] = p.attention_mask
    if p.position_ids is not None and "position_ids" in accepted:
        kwargs["position_ids"] = p.position_ids
    if "logits_to_keep" in accepted:
        kwargs["logits_to_keep"] = 1
    if p.attentions:
        kwargs["output_attentions"] = True
    if p.past_key_values is not None or p.keep_cache:
        kwargs.update(past_key_values=p.past_key_values, use_cache=True)
    elif "use_cache" in accepted:
        kwargs["use_cache"] = False
    return kwargs


def _on(kwargs: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


# -- starting a pass at a later block ------------------------------------------------------------------------------
START_BLOCK_TYPES: dict[str, str] = {
    "llama": "loops over its ModuleList (sliced to num_hidden_layers); attention keys the cache by its layer_idx",
    "mistral": "as llama; one mask (causal or sliding) for every layer",
    "qwen2": "as llama, but the mask is config.layer_types[i] by loop index: all layer types must be equal",
    "qwen3": "as qwen2",
    "smollm3": "as qwen2; NoPE is config.no_rope_layers[layer_idx], read inside the attention by its own index",
    "gpt_neox": "loops over its ModuleList; emb_dropout (identity in eval) on inputs_embeds; cache by layer_idx",
    "gptj": "loops over its ModuleList (the loop index is unused); drop (identity in eval); cache by layer_idx",
}
"""``config.model_type`` -> why a forward pass of that model can start at block s: the model is called with
``inputs_embeds`` = the residual entering block s and its block ModuleList replaced, for the call, by blocks s..
(the same modules). This holds where (checked in transformers 5.23's modeling code) the model adds nothing to
``inputs_embeds`` (no learned position embedding, projection or scale: not GPT-2, OPT, Gemma), the forward iterates
its ModuleList without indexing per-layer config by the loop index (or every index means the same), each
attention reads and writes the key/value cache by its own ``layer_idx``, and every sub-block module keeps tokens
[batch, pos, d] (the hooks' shape hook sits on block 0, which does not run). Other model types are refused."""


def starts_at_block(session: Any) -> bool:
    """True when ``session`` can run a :class:`Pass` with ``start_block`` / ``resid`` (:data:`START_BLOCK_TYPES`):
    the local executor, a model in eval mode of a listed type without position embedding or input projection, and
    per-layer attention types all equal."""
    if getattr(session.executor, "name", None) != "local":
        return False
    adapter, model = session.adapter, session.model
    if adapter.model_type not in START_BLOCK_TYPES or model.training:
        return False
    if adapter.arch.pos_embed is not None or adapter.arch.embed_proj is not None:
        return False
    layer_types = getattr(model.config, "layer_types", None)
    return not layer_types or len(set(layer_types)) == 1


@contextmanager
def _contiguous_unembedding(session: Any) -> Iterator[None]:
    """Within the body, the unembedding reads a contiguous copy of its input when it is not contiguous. The model
    slices the last position (``logits_to_keep=1``: a [batch, 1, d] view with the whole prompt's stride), and
    torch's linear layer on that view unembeds row by row, streaming the [vocab, d] weight once per row: 10x slower
    than one product at batch 64. Same values up to float rounding, so only passes that start from ``resid`` use it
    (the others stay bit for bit equal to an nnsight trace of the same pass)."""
    def pre_hook(_module, args):
        if args and isinstance(args[0], torch.Tensor) and not args[0].is_contiguous():
            return (args[0].contiguous(), *args[1:])
        return None

    handle = session.adapter.unembed_module.register_forward_pre_hook(pre_hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _blocks_from(session: Any, start: int) -> Iterator[None]:
    """Within the body, the model's block ModuleList holds blocks ``start``.. only (the same modules, no copy); the
    full list is put back on exit, also when the body raises. Call under the session's lock."""
    if not start:
        yield
        return
    model, path = session.model, session.adapter.arch.blocks
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    full = getattr(parent, name)
    if not 0 <= start <= len(full):
        raise ValueError(f"Block {start} (0-based) does not exist: this model has blocks 0..{len(full) - 1}.")
    setattr(parent, name, nn.ModuleList(list(full)[start:]))
    try:
        yield
    finally:
        setattr(parent, name, full)


class LocalExecutor:
    """Runs passes with forward hooks on the model in this process (:func:`core.model.hooks.hooked`)."""

    name = "local"
    remote = False
    ships_requests = False
    kv_cache = True  # a prefix's key/value cache can be handed to the next pass

    def run(self, session: Any, p: Pass) -> PassOutput:
        kwargs = _on(forward_kwargs(session.model, p), session.device)
        if p.resid is not None:
            if not starts_at_block(session):
                raise ValueError(f"A {session.adapter.model_type} model cannot start a pass at a later block "
                                 "(see START_BLOCK_TYPES); run the whole prompt.")
            dtype = session.model.get_input_embeddings().weight.dtype  # what the embedding would give
            args, inputs = (), {"inputs_embeds": p.resid.to(session.device, dtype)}
        else:
            args, inputs = (p.input_ids.to(session.device),), {}
        contiguous = p.logits and p.resid is not None
        with session.lock, session.attention_weights() if p.attentions else nullcontext(), \
                _blocks_from(session, p.start_block), \
                _contiguous_unembedding(session) if contiguous else nullcontext(), \
                hooked(session.adapter, session.lock, p.captures, p.patches, p.stop_early) as got:
            out = session.model(*args, **inputs, **kwargs)
            return PassOutput(got, _last_logits(out) if p.logits else None,
                              _attentions(out) if p.attentions else None,
                              getattr(out, "past_key_values", None) if p.keep_cache else None)
        return PassOutput(got)  # reached only when the pass stopped early (the hook context swallowed the stop)


def _last_logits(out) -> torch.Tensor:
    return out.logits[:, -1].float()  # [batch, vocab]


def _attentions(out) -> tuple[torch.Tensor, ...]:
    if getattr(out, "attentions", None) is None or any(a is None for a in out.attentions):
        raise ValueError("This model's attention kernel returned no attention weights.")
    return tuple(a.float().cpu() for a in out.attentions)  # per block [batch, head, pos, pos]


# -- nnsight -----------------------------------------------------------------------------------------------------
MODES = ("here", "simulate", "ndif")
NDIF_KEY_ENV = "NDIF_API_KEY"
_import_lock = threading.Lock()


class RemoteUnavailable(ValueError):
    """NDIF could not run a request (no key, no network, a refusal); the message is one line saying what to do."""


def import_nnsight():
    """nnsight, imported on first use. nnsight mounts ``.save()`` on every Python object when imported; Layerscope
    calls ``nnsight.save(value)`` instead, so when this import is the first, the mount is undone (objects that
    answer ``hasattr(x, "save")`` would otherwise change meaning for pandas, Altair, PIL, ...)."""
    with _import_lock:
        first = "nnsight" not in sys.modules
        try:
            import nnsight
        except ImportError as err:
            raise RemoteUnavailable("The nnsight package is not installed (pip install nnsight==0.8.1).") from err
        if first:
            try:
                from nnsight._c import unmount
                if unmount is not None:
                    unmount("save")
            except Exception:  # noqa: BLE001 - no C extension: nothing was mounted
                pass
            nnsight.CONFIG.APP.REMOTE_LOGGING = False  # our progress, not nnsight's terminal spinner
        return nnsight


def register_remote_code() -> None:
    """Ship the torch-only modules a trace body calls by value with every request (NDIF has no Layerscope)."""
    nnsight = import_nnsight()
    for module in (ops, lens_reduce):
        nnsight.register(module)


@dataclass
class Traffic:
    """Bytes of the last nnsight request: what was sent (the serialised trace) and what came back (the saved
    values, as the server serialises them: ``torch.save``, then zstd when compression is on)."""

    request_bytes: int = 0
    result_bytes: int = 0
    result_raw_bytes: int = 0


def _result_bytes(values: dict) -> tuple[int, int]:
    """(bytes as NDIF returns them: torch.save + zstd level 6 when available, raw torch.save bytes)."""
    buffer = io.BytesIO()
    torch.save(values, buffer)
    raw = buffer.getvalue()
    try:
        import zstandard
    except ImportError:  # pragma: no cover - zstandard comes with nnsight
        return len(raw), len(raw)
    return len(zstandard.ZstdCompressor(level=6).compress(raw)), len(raw)


@dataclass
class NnsightExecutor:
    """Runs passes inside an nnsight trace over ``wrapped`` (an nnsight model around the session's model).

    ``mode``: "here" (a plain nnsight trace in this process), "simulate" (serialised and deserialised as for NDIF,
    then run here) or "ndif" (sent to NDIF with the key given by :meth:`api_key`). ``traffic`` holds the bytes of
    the last request.
    """

    wrapped: Any
    mode: str = "here"
    api_key_getter: Any = None
    traffic: Traffic = field(default_factory=Traffic)
    name: str = "nnsight"
    kv_cache = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Unknown nnsight mode {self.mode!r}; choose from {', '.join(MODES)}.")
        self.nnsight = import_nnsight()
        if self.mode != "here":
            register_remote_code()
        root = self.wrapped._module
        self._paths = {id(m): name for name, m in root.named_modules()}

    @property
    def remote(self) -> bool:
        """The model runs on NDIF: its weights are not here."""
        return self.mode == "ndif"

    @property
    def ships_requests(self) -> bool:
        """Requests are serialised as for NDIF (NDIF itself, or its local simulation): analyses then reduce next to
        the model (:meth:`logit_lens`) as they would on NDIF."""
        return self.mode != "here"

    def envoy(self, module: nn.Module) -> Any:
        """The nnsight envoy of one of the model's modules."""
        envoy = self.wrapped
        path = self._paths[id(module)]
        for part in path.split(".") if path else ():
            envoy = envoy[int(part)] if part.isdigit() else getattr(envoy, part)
        return envoy

    def _trace_kwargs(self) -> dict:
        if self.mode == "here":
            return {}
        if self.mode == "simulate":
            return {"backend": _simulation_backend(self)}
        return {"backend": _ndif_backend(self)}

    def run(self, session: Any, p: Pass) -> PassOutput:
        if p.past_key_values is not None or p.keep_cache:
            raise ValueError("A key/value cache cannot cross an nnsight trace; run the whole prompt.")
        if p.resid is not None or p.start_block:
            raise ValueError("An nnsight trace cannot start at a later block; run the whole prompt.")
        if p.attentions and self.mode == "ndif":
            raise ValueError("Attention weights are not available on NDIF (its models run the fused attention "
                             "kernel, which returns none); trace attention on a local model.")
        slots = execution_order(plan(session.adapter, p.captures, p.patches))
        d_head = session.adapter.d_head if any(q.head is not None for q in p.patches) else 0
        pending = [i for i, s in enumerate(slots) if s.capture is not None]
        stop_at = pending[-1] if p.stop_early and pending else -1
        steps = [(self.envoy(s.module), s.reads == "input", (s.site, s.block),
                  None if s.capture is None else keep_spec(s.capture),
                  [patch_spec(q, d_head) for q in s.patches], i == stop_at) for i, s in enumerate(slots)]
        batch_pos = (int(p.input_ids.shape[0]), int(p.input_ids.shape[1]))
        kwargs = _on(forward_kwargs(session.model, p), session.device)
        with session.lock, session.attention_weights() if p.attentions and self.mode != "ndif" else nullcontext():
            kept, logits, attentions = self._trace(p.input_ids.to(session.device), kwargs, steps, batch_pos,
                                                   p.logits and stop_at < 0, p.attentions)
        got = Captured()
        got._store.update(kept)
        got.stopped = stop_at >= 0
        return PassOutput(got, logits, attentions)

    def _trace(self, ids: torch.Tensor, kwargs: dict, steps: list, batch_pos: tuple[int, int], want_logits: bool,
               want_attentions: bool) -> tuple[dict, torch.Tensor | None, tuple | None]:
        """The nnsight trace of one pass. The body below is what runs on the model's machine (NDIF's, in mode
        "ndif"): it visits each slot in execution order, writes the patches, keeps the captures."""
        nnsight, model = self.nnsight, self.wrapped
        first_tensor, with_first, write_patches, keep = ops.first_tensor, ops.with_first, ops.write_patches, ops.keep
        with _remote_errors(self), model.trace(ids, **kwargs, **self._trace_kwargs()) as tracer:
            kept = nnsight.save(dict())
            outputs = nnsight.save(list())
            for envoy, reads_input, key, keep_as, specs, stop_here in steps:
                value = envoy.input if reads_input else envoy.output
                hidden = first_tensor(value)
                if specs:
                    hidden = write_patches(hidden, specs, batch_pos)
                    if reads_input:
                        envoy.input = hidden
                    else:
                        envoy.output = with_first(value, hidden)
                if keep_as is not None:
                    kept[key] = keep(hidden, keep_as, batch_pos)
                if stop_here:
                    tracer.stop()
            if want_logits or want_attentions:
                out = model.output
                outputs.append(out.logits[:, -1].float() if want_logits else None)
                outputs.append(tuple(a.float().cpu() for a in out.attentions) if want_attentions else None)
        self._measure({"kept": kept, "outputs": outputs})
        logits = outputs[0] if outputs else None
        attentions = outputs[1] if len(outputs) > 1 else None
        return dict(kept), logits, attentions

    def _measure(self, saved: dict) -> None:
        if self.mode == "simulate":
            self.traffic.result_bytes, self.traffic.result_raw_bytes = _result_bytes(saved)

    # -- the logit lens, reduced where the model runs --------------------------------------------------------------
    def logit_lens(self, session: Any, ids: torch.Tensor, layers: Sequence[int], top_k: int,
                   targets: Sequence[int] | None) -> dict[str, torch.Tensor]:
        """[pos] ids -> the logit lens's statistics (:func:`core.lenses.reduce.logit_lens_statistics`), computed
        inside the trace, on the model's machine: only top-k ids and probabilities, ranks, entropy and KL of the
        layers asked for come back, never residuals or logits."""
        adapter = session.adapter
        block_envoys = [self.envoy(b) for b in adapter.blocks]
        chain = [self.envoy(m) for m in (adapter.final_norm_module, adapter.final_proj, adapter.unembed_module)
                 if m is not None]
        next_ids = torch.cat([ids[1:], torch.tensor([-1])])  # [pos]
        plan_args = (list(layers), int(top_k), None if targets is None else [int(t) for t in targets], next_ids,
                     lens_reduce.POS_TILE, lens_reduce.CALL_MB)
        nnsight, model = self.nnsight, self.wrapped
        statistics, first_tensor = lens_reduce.logit_lens_statistics, ops.first_tensor
        kwargs = _on(forward_kwargs(session.model, Pass(ids[None])), session.device)
        with session.lock, _remote_errors(self), \
                model.trace(ids[None].to(session.device), **kwargs, **self._trace_kwargs()) as tracer:
            states = [first_tensor(block_envoys[0].input)[0]]  # residual layer 0: the embeddings [pos, d_model]
            for envoy in block_envoys:
                states.append(first_tensor(envoy.output)[0])  # layer l: block l's output [pos, d_model]
            result = nnsight.save(statistics(states, chain, *plan_args))
            tracer.stop()  # the model's own final norm and unembedding: the statistics' last row already is them
        self._measure(dict(result))
        return dict(result)


def _simulation_backend(executor: NnsightExecutor):
    from nnsight.intervention.backends.local import LocalSimulationBackend
    from nnsight.schema.request import RequestModel

    class MeasuredSimulation(LocalSimulationBackend):
        """nnsight's local simulation of an NDIF request, with the request's bytes recorded."""

        def __call__(self, tracer):
            executor.traffic.request_bytes = len(RequestModel.serialize(tracer, compress=True))
            return super().__call__(tracer)

    return MeasuredSimulation(executor.wrapped)


def _ndif_backend(executor: NnsightExecutor):
    from nnsight.intervention.backends.remote import RemoteBackend

    key = executor.api_key_getter() if executor.api_key_getter else None
    if not key:
        raise RemoteUnavailable(f"No NDIF API key: set {NDIF_KEY_ENV} or paste one in the sidebar "
                                "(free at https://login.ndif.us).")

    class MeasuredRemote(RemoteBackend):
        """nnsight's NDIF backend, with the bytes each way recorded."""

        def _serialize(self, tracer):
            blob = super()._serialize(tracer)
            executor.traffic.request_bytes = len(blob)
            return blob

        def finalize(self, content: bytes):
            executor.traffic.result_bytes = len(content)
            return super().finalize(content)

    wrapped = executor.wrapped
    return MeasuredRemote(wrapped.to_model_key(), api_key=key, env=wrapped._remoteable_get_env(), blocking=True)


class _remote_errors:
    """Turn a failure to reach or use NDIF into one :class:`RemoteUnavailable` line (mode "ndif" only); an error in
    Layerscope's own code still raises as itself."""

    def __init__(self, executor: NnsightExecutor) -> None:
        self.executor = executor

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or self.executor.mode != "ndif" or isinstance(exc, RemoteUnavailable):
            return False
        message = remote_error_message(exc)
        if message is None:
            return False
        raise RemoteUnavailable(message) from exc


def remote_error_message(exc: BaseException) -> str | None:
    """One line for a failure of the NDIF round trip (network, refusal, server error); None for anything else."""
    name = type(exc).__name__
    text = " ".join(str(exc).split())[:240]
    if name == "RemoteError":
        return f"NDIF refused or failed the request: {text or 'no reason given'}."
    network = (OSError, ConnectionError, TimeoutError)
    if isinstance(exc, network) or name.startswith(("WebSocket", "Connect", "HTTP", "Timeout")) \
            or type(exc).__module__.split(".")[0] in ("httpx", "httpcore", "websocket"):
        return (f"NDIF cannot be reached from here ({name}: {text or 'no detail'}). Check the network, or run the "
                "model locally.")
    return None

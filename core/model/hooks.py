"""The one hook mechanism: capture and patch requests as plain data, and the local executor that runs them.

A request names a **site** (a tensor of the forward pass), the **block** it belongs to and, for a patch, what to
write there. Requests hold no module, hook or closure (a patch's value may be a tensor), so another executor can
run the same list later (nnsight, remotely); :func:`hooked` runs them with forward hooks on a local model.

Block indices are **0-based** (``blocks[b]``, b = 0..L-1), the indexing of hooks and weights. Requests about the
residual stream can be made by **residual layer** instead (:mod:`core.layers`: 0 = embeddings, l = the stream after
block l) with :func:`residual_site`, :func:`residual_captures`, :func:`residual_patch` and
:meth:`Captured.residual`:

    residual layer 0      = site "resid_pre",  block 0      (the input of the first block: the embeddings)
    residual layer l >= 1 = site "resid_post", block l - 1  (the output of block l, before the final norm)

Sites (each tensor is [batch, pos, ...]; a module that flattens tokens, like OPT's fc1/fc2, is viewed back):

    resid_pre   [batch, pos, d_model]      the residual entering block b (the block's input ``hidden_states``)
    resid_post  [batch, pos, d_model]      block b's output hidden state (= what block b+1 reads)
    attn_in     [batch, pos, d_model]      the attention module's input: the normed residual the attention reads
    attn_z      [batch, pos, head*d_head]  per-head outputs, the input of the attention output projection
    attn_out    [batch, pos, d_model]      the attention's write into the residual stream (that projection's output)
    mlp_pre     [batch, pos, d_mlp]        the MLP input projection's output: W_in x + b, or W_gate x when gated
    mlp_act     [batch, pos, d_mlp]        the neuron activations, the input of the MLP's down projection
    mlp_out     [batch, pos, d_model]      the MLP's write into the residual stream

Positions index the positions of *this* forward pass's input (with a key/value cache, the new tokens only);
negative positions count from the end. Rows index the batch. On one site, patches are applied first (in request
order) and captures then record the patched tensor: a capture returns what the rest of the model read. A body
that runs several forward passes applies the patches to each and keeps the last pass's captures.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

import torch
from torch import nn

from core.layers import block_of_layer
from core.model import ops

Reads = Literal["input", "output"]


@dataclass(frozen=True)
class Site:
    """Where a site's tensor is read: the ``reads`` of the block itself (part None) or of a record part."""

    part: str | None  # an Architecture field naming a module inside the block; None = the block
    reads: Reads


SITES: dict[str, Site] = {
    "resid_pre": Site(None, "input"),
    "resid_post": Site(None, "output"),
    "attn_in": Site("attn", "input"),
    "attn_z": Site("attn_out", "input"),
    "attn_out": Site("attn_out", "output"),
    "mlp_pre": Site("mlp_in", "output"),
    "mlp_act": Site("mlp_down", "input"),
    "mlp_out": Site("mlp_out", "output"),
}


def _check_site(site: str) -> None:
    if site not in SITES:
        raise ValueError(f"Unknown hook site {site!r}; choose from {', '.join(SITES)}.")


def _check_index(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"A hook request's {name} must be an int; got {value!r}.")


@dataclass(frozen=True)
class Capture:
    """Record ``site`` of every block in ``blocks`` (0-based) during the pass.

    ``row`` None keeps every batch row, an int that row only (the batch dimension goes); ``position`` None keeps
    every position, an int that position only (the pos dimension goes). Recorded tensors are detached float32
    copies on the CPU: [batch, pos, d], [pos, d], [batch, d] or [d].
    """

    site: str
    blocks: tuple[int, ...]
    position: int | None = None
    row: int | None = None

    def __post_init__(self) -> None:
        _check_site(self.site)
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        for name in ("position", "row"):
            if getattr(self, name) is not None:
                _check_index(name, getattr(self, name))


@dataclass(frozen=True, eq=False)
class Patch:
    """Overwrite ``site`` of block ``block`` (0-based) with ``value`` before the model reads it.

    The slot written is ``tensor[rows, position, features]``: ``rows`` None = every batch row, else those rows;
    ``position`` None = every position, else that one; ``head`` None = every feature, else head ``head``'s slice
    ``[head*d_head, (head+1)*d_head)`` (site "attn_z" only). ``value`` (a float, or a tensor cast to the model's
    dtype and device) must broadcast to the slot, e.g. [len(rows), d_model] for one position of several rows.
    Compared by identity (a tensor value has no single truth value).
    """

    site: str
    block: int
    value: torch.Tensor | float
    position: int | None = None
    rows: tuple[int, ...] | None = None
    head: int | None = None

    def __post_init__(self) -> None:
        _check_site(self.site)
        _check_index("block", self.block)
        if not isinstance(self.value, (torch.Tensor, float, int)) or isinstance(self.value, bool):
            raise ValueError(f"A patch value is a tensor or a number; got {type(self.value).__name__}.")
        if self.rows is not None:
            object.__setattr__(self, "rows", tuple(int(r) for r in self.rows))
        if self.position is not None:
            _check_index("position", self.position)
        if self.head is not None and self.site != "attn_z":
            raise ValueError("A patch's head applies to site 'attn_z' (the per-head outputs) only.")


# -- residual layers -> sites ----------------------------------------------------------------------------------
def residual_site(layer: int) -> tuple[str, int]:
    """Residual layer l (0 = embeddings, l = after block l) -> (site, 0-based block) holding it."""
    return ("resid_pre", 0) if int(layer) == 0 else ("resid_post", block_of_layer(layer))


def residual_captures(layers: Iterable[int], position: int | None = None,
                      row: int | None = None) -> tuple[Capture, ...]:
    """Captures of the residual stream at these residual layers (at most two requests: embeddings, block outputs)."""
    sites: dict[str, list[int]] = {}
    for layer in layers:
        site, block = residual_site(layer)
        sites.setdefault(site, []).append(block)
    return tuple(Capture(site, tuple(blocks), position, row) for site, blocks in sites.items())


def residual_patch(layer: int, value: torch.Tensor | float, position: int | None = None,
                   rows: Sequence[int] | None = None) -> Patch:
    """Overwrite residual layer ``layer``: the input of block 0 for layer 0, else the output of block ``layer``."""
    site, block = residual_site(layer)
    return Patch(site, block, value, position, None if rows is None else tuple(rows))


# -- the result holder ------------------------------------------------------------------------------------------
class Captured:
    """What one hooked pass recorded, by (site, 0-based block). ``stopped``: the pass ended early (stop_early)."""

    def __init__(self) -> None:
        self._store: dict[tuple[str, int], torch.Tensor] = {}
        self.stopped = False

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._store

    def get(self, site: str, block: int) -> torch.Tensor:
        """The tensor recorded at ``site`` of block ``block``; ValueError when that hook never fired."""
        if (site, block) not in self._store:
            raise ValueError(f"Nothing was captured at {site} of block {block}: was it requested, and did the "
                             "forward pass reach it?")
        return self._store[(site, block)]

    def stack(self, site: str, blocks: Iterable[int]) -> torch.Tensor:
        """[block, ...] the recorded tensors of these blocks, stacked."""
        return torch.stack([self.get(site, b) for b in blocks])

    def residual(self, layers: Iterable[int]) -> torch.Tensor:
        """[layer, ...] the residual stream at these residual layers (0 = embeddings), stacked."""
        return torch.stack([self.get(*residual_site(layer)) for layer in layers])


# -- the local executor -------------------------------------------------------------------------------------------
class _Stop(Exception):
    """Raised by a hook once every capture is recorded (stop_early); caught by :func:`hooked`."""


@dataclass
class Slot:
    """Everything requested at one module's input or output."""

    module: nn.Module
    reads: Reads
    block: int
    site: str
    capture: Capture | None = None  # at most one: a second would overwrite the first's result
    patches: list[Patch] = field(default_factory=list)


def _site_module(adapter: Any, site: str, block: int) -> nn.Module:
    n_layers = len(adapter.blocks)
    if not 0 <= block < n_layers:
        raise ValueError(f"Block {block} (0-based) does not exist: this model has blocks 0..{n_layers - 1}.")
    part = SITES[site].part
    if part is None:
        return adapter.blocks[block]
    if not hasattr(adapter, "block_part"):
        raise ValueError(f"Site {site!r} is not available for this model: only resid_pre / resid_post are.")
    return adapter.block_part(part, block)


def plan(adapter: Any, captures: Sequence[Capture], patches: Sequence[Patch]) -> list[Slot]:
    """Group the requests by (site, block): one hook per slot, in first-request order."""
    slots: dict[tuple[str, int], Slot] = {}

    def slot(site: str, block: int) -> Slot:
        if (site, block) not in slots:
            slots[(site, block)] = Slot(_site_module(adapter, site, block), SITES[site].reads, block, site)
        return slots[(site, block)]

    for patch in patches:
        slot(patch.site, patch.block).patches.append(patch)
    for capture in captures:
        for block in capture.blocks:
            target = slot(capture.site, block)
            if target.capture is not None:
                raise ValueError(f"{capture.site} of block {block} is captured twice: ask for it once.")
            target.capture = capture
    return list(slots.values())


SITE_ORDER = {"resid_pre": 0, "attn_in": 1, "attn_z": 2, "attn_out": 3, "mlp_pre": 4, "mlp_act": 5, "mlp_out": 6,
              "resid_post": 7}
"""The order in which a block's sites are reached during its forward pass (every supported architecture runs the
attention before the MLP, also the parallel ones): an executor that must visit sites in execution order (nnsight)
sorts by (block, this)."""


def patch_spec(patch: Patch, d_head: int) -> tuple:
    """The plain form of ``patch`` that :func:`core.model.ops.write_patches` writes (rows, position, feature slice,
    value): what every executor hands to the one definition of a patch."""
    lo, hi = (0, None) if patch.head is None else (patch.head * d_head, (patch.head + 1) * d_head)
    return (patch.rows, patch.position, lo, hi, patch.value)


def keep_spec(capture: Capture) -> tuple:
    """The plain form of what ``capture`` keeps (row, position): see :func:`core.model.ops.keep`."""
    return (capture.row, capture.position)


def execution_order(slots: Sequence[Slot]) -> list[Slot]:
    """``slots`` in the order the forward pass reaches them: by block, then :data:`SITE_ORDER`."""
    return sorted(slots, key=lambda s: (s.block, SITE_ORDER[s.site]))


class _Run:
    """Per-pass state the hooks share: the [batch, pos] shape, the holder, what is still to be captured."""

    def __init__(self, got: Captured, slots: list[Slot], d_head: Callable[[], int], stop_early: bool) -> None:
        self.got = got
        self.batch_pos: tuple[int, int] | None = None
        self.pending = {(s.site, s.block) for s in slots if s.capture is not None}
        self.d_head = d_head
        self.stop_early = stop_early and bool(self.pending)

    def record(self, capture: Capture, slot: Slot, tensor: torch.Tensor) -> None:
        """Keep the requested row / position of ``tensor``; stop when all are kept."""
        self.got._store[(slot.site, slot.block)] = ops.keep(tensor, keep_spec(capture), self.batch_pos)
        self.pending.discard((slot.site, slot.block))
        if self.stop_early and not self.pending:
            raise _Stop

    def visit(self, slot: Slot, tensor: torch.Tensor) -> torch.Tensor | None:
        """Patch, then record; -> the replacement tensor, or None when nothing was patched."""
        new = None
        if slot.patches:
            d_head = self.d_head() if any(p.head is not None for p in slot.patches) else 0
            new = ops.write_patches(tensor, [patch_spec(p, d_head) for p in slot.patches], self.batch_pos)
        if slot.capture is not None:
            self.record(slot.capture, slot, tensor if new is None else new)
        return new


def _hidden_in(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _input_hook(run: _Run, slot: Slot):
    def hook(_module, args, kwargs):
        new = run.visit(slot, _hidden_in(args, kwargs))
        if new is None:
            return None
        return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})
    return hook


def _output_hook(run: _Run, slot: Slot):
    def hook(_module, _args, output):
        several = isinstance(output, (tuple, list))
        new = run.visit(slot, output[0] if several else output)
        if new is None:
            return None
        return (new, *output[1:]) if several else new
    return hook


def _shape_hook(run: _Run):
    def hook(_module, args, kwargs):
        run.batch_pos = tuple(_hidden_in(args, kwargs).shape[:2])  # type: ignore[assignment]
    return hook


@contextmanager
def hooked(adapter: Any, lock: threading.RLock, captures: Sequence[Capture] = (), patches: Sequence[Patch] = (),
           stop_early: bool = False) -> Iterator[Captured]:
    """Run the body's forward pass(es) with these requests; yield the holder the captures fill.

    ``adapter`` has ``blocks`` (and ``block_part`` for sites inside a block). Takes ``lock`` for the whole body,
    runs it under ``torch.no_grad()``, and ALWAYS removes the hooks, also when the body raises. With
    ``stop_early`` the pass is cut short once every capture is recorded: the forward call then does not return
    (the rest of the body is skipped) and ``Captured.stopped`` is True. ValueError for a block or site the
    model does not have.
    """
    slots = plan(adapter, captures, patches)
    got = Captured()
    run = _Run(got, slots, lambda: int(adapter.d_head), stop_early)
    with lock, torch.no_grad():
        handles = []
        try:
            if any(SITES[s.site].part is not None for s in slots):  # sub-block sites may flatten tokens
                handles.append(adapter.blocks[0].register_forward_pre_hook(_shape_hook(run), with_kwargs=True))
            for slot in slots:
                if slot.reads == "input":
                    handles.append(slot.module.register_forward_pre_hook(_input_hook(run, slot), with_kwargs=True))
                else:
                    handles.append(slot.module.register_forward_hook(_output_hook(run, slot)))
            yield got
        except _Stop:
            got.stopped = True
        finally:
            for handle in handles:
                handle.remove()

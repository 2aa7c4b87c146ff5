"""What a capture keeps and what a patch writes, in torch alone: the one definition both executors run.

The local executor (:mod:`core.model.hooks`, forward hooks) calls these on the tensors its hooks see; the nnsight
executor (:mod:`core.model.executors`) calls them inside an nnsight trace, which may run on NDIF's machines. So this
module imports nothing but torch and takes plain values (ints, tuples, tensors), never Layerscope objects: nnsight
ships its functions by value with a remote request (:func:`core.model.executors.register_remote_code`), and the
server only needs torch to run them.

A *patch spec* is the plain form of a :class:`core.model.hooks.Patch`: ``(rows, position, lo, hi, value)`` with
``rows`` None or a tuple of batch rows, ``position`` None or an int, ``lo:hi`` the feature slice (``0, None`` = all;
a head's ``h*d_head, (h+1)*d_head``) and ``value`` a tensor or a number. A *keep spec* is ``(row, position)``
(each None = keep that whole dimension).
"""

from __future__ import annotations

import torch

PatchSpec = tuple  # (rows: tuple[int, ...] | None, position: int | None, lo: int, hi: int | None, value)
KeepSpec = tuple  # (row: int | None, position: int | None)


def as_bpd(tensor: torch.Tensor, batch_pos: tuple[int, int] | None) -> torch.Tensor:
    """[batch*pos, d] (a module that flattens tokens, like OPT's fc1/fc2) -> [batch, pos, d]; [batch, pos, ...]
    unchanged."""
    if tensor.ndim == 2 and batch_pos is not None:
        return tensor.reshape(batch_pos[0], batch_pos[1], tensor.shape[-1])
    return tensor


def write_patches(tensor: torch.Tensor, specs: list, batch_pos: tuple[int, int] | None) -> torch.Tensor:
    """The tensor with every patch spec written into its slot, in order: one copy, the input untouched, the
    result in the input's shape."""
    out = as_bpd(tensor, batch_pos).clone()  # [batch, pos, d]
    for rows, position, lo, hi, value in specs:
        row_index = slice(None) if rows is None else torch.tensor(rows, device=out.device)
        pos_index = slice(None) if position is None else position
        if isinstance(value, torch.Tensor):
            value = value.to(out.device, out.dtype)
        out[row_index, pos_index, lo:hi] = value
    return out.reshape(tensor.shape)


def keep(tensor: torch.Tensor, spec: tuple, batch_pos: tuple[int, int] | None) -> torch.Tensor:
    """What a capture keeps of ``tensor``: its row and / or position, as a detached float32 CPU copy:
    [batch, pos, d], [pos, d], [batch, d] or [d]."""
    row, position = spec
    hidden = as_bpd(tensor, batch_pos)  # [batch, pos, d]
    kept = hidden if row is None else hidden[row]  # [batch, pos, d] or [pos, d]
    if position is not None:
        kept = kept[..., position, :]  # [batch, d] or [d]
    return kept.detach().float().cpu().clone()


def first_tensor(value):
    """A module's output or input as one tensor: the first element of a tuple or list, else the value."""
    return value[0] if isinstance(value, (tuple, list)) else value


def with_first(value, tensor: torch.Tensor):
    """``value`` (a tuple / list, or a tensor) with its first tensor replaced by ``tensor``."""
    if isinstance(value, (tuple, list)):
        return type(value)([tensor, *value[1:]]) if isinstance(value, list) else (tensor, *value[1:])
    return tensor

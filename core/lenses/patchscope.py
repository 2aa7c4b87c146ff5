"""Patchscopes: a layer's state patched into a target prompt, read at its last token."""

from __future__ import annotations

import bisect
import copy
import math
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from core.model import ops
from core.model.arch import Adapter
from core.model.executors import Pass
from core.model.hooks import residual_patch

IDENTITY_PROMPT = "cat -> cat\n1135 -> 1135\nhello -> hello\n?"
QUESTION_PROMPT = "?"

FORWARD_MB = 256
"""Memory of one patched forward, per row: the last target position's logits [vocab] (the model's and the float32
copy), the row's copy of the prefix's key/value cache and its activations (the whole target prompt's where no
cache is handed on). As many rows per forward as fit; at least one."""


class Patchscope:
    """Patch a source residual into a target prompt at the same layer, last target position.

    For source layer l (0 = embeddings) the vector replaces the target's residual after block l (the input of
    block 0 for l = 0) at the last target position; the remaining blocks run and the model's own output at that
    position is the reading. Every (layer, position) pair of a call is one batch row, and the rows go through as
    few forwards as :data:`FORWARD_MB` allows.

    The target prompt's prefix (every token but the last) is encoded once into a key/value cache, kept here; a
    patched forward then runs only the last target token, each row continuing its own copy of that cache, and a
    row patched at layer l only through blocks l+1..L (the earlier ones could only compute what the patch
    overwrites). Where the executor cannot hand a cache on (nnsight, NDIF: ``executor.kv_cache`` False) or the
    model's cache cannot be repeated over rows, every row runs the whole target prompt through every block
    instead. Either way the numbers are the one-forward-per-position readings' up to float rounding (other
    product shapes). A one-token target prompt ("?") has no prefix: one-token forwards through every block.
    """

    batches_layers = True  # one call reads every layer of a few positions (core.lenses.stats calls it that way)

    def __init__(self, session, target_prompt: str, name: str, sink: bool = False) -> None:
        self.session = session
        self.name = name
        self.target_prompt = target_prompt
        ids = session.tokenizer(target_prompt, return_tensors="pt").input_ids[0]
        if ids.numel() == 0:
            raise ValueError("The patchscope's target prompt is empty.")
        self.sink_id = sink_token(session.tokenizer, ids) if sink else None
        if self.sink_id is not None:  # TransformerLens's BOS, as the logitscope seed ran it
            ids = torch.cat([torch.tensor([self.sink_id]), ids])
        self.target_ids = ids  # [target_pos]
        self._prefix: tuple[tuple, Any] | None = None  # (what it was encoded for, batch-1 key/value cache or None)

    @property
    def adapter(self) -> Adapter:
        return self.session.adapter

    def logits(self, resid: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        """[layer, pos, d_model] source residuals of ``layers`` -> [layer, pos, vocab] float32 readings."""
        n_layer, n_pos, d_model = resid.shape
        row_layers = [int(layer) for layer in layers for _ in range(n_pos)]  # rows layer-major
        return self.read_rows(resid.reshape(n_layer * n_pos, d_model), row_layers).reshape(n_layer, n_pos, -1)

    def patch_positions(self, vectors: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        """[layer, d_model] source vectors (one position) -> [layer, vocab] logits at the last target position
        (vectors past ``len(layers)`` are not read)."""
        return self.read_rows(vectors[:len(layers)], [int(layer) for layer in layers])

    @torch.no_grad()
    def read_rows(self, vectors: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        """[row, d_model] source vectors, one layer per row -> [row, vocab] float32 readings.

        The rows go in ceil(rows / R) forwards of near-equal size, R = :meth:`rows_per_forward`: the split is a
        function of the row count, the model and the target prompt alone."""
        session = self.session
        n_rows = len(layers)
        if vectors.shape[0] != n_rows:
            raise ValueError(f"{vectors.shape[0]} source vectors for {n_rows} layers.")
        if n_rows == 0:
            return torch.zeros(0, self.adapter.d_vocab)
        with session.lock:  # the prefix's cache and the passes continuing it, with no other pass between
            past = self.prefix_cache()
            n_forwards = math.ceil(n_rows / self.rows_per_forward(past))
            bounds = [round(k * n_rows / n_forwards) for k in range(n_forwards + 1)]
            parts = [self._forward(vectors[a:b], layers[a:b], past) for a, b in zip(bounds, bounds[1:])]
        return torch.cat(parts)

    def prefix_cache(self) -> Any:
        """The batch-1 key/value cache of the target prompt's prefix, encoded once (again only when the prefix or
        the model's device or dtype changed); None when there is no prefix, the executor cannot hand a cache on or
        the model's cache cannot be repeated over rows (then every row runs the whole target prompt)."""
        session = self.session
        prefix = self.target_ids[:-1]
        if prefix.numel() == 0 or not getattr(session.executor, "kv_cache", False):
            return None
        key = (tuple(prefix.tolist()), str(session.device), session.model.dtype, id(session.model))
        if self._prefix is None or self._prefix[0] != key:
            past = session.run(Pass(prefix.to(session.device)[None], keep_cache=True)).past_key_values
            self._prefix = (key, past if hasattr(past, "batch_repeat_interleave") else None)
        return self._prefix[1]

    def rows_per_forward(self, past: Any = None) -> int:
        """R: the rows of one patched forward that fit :data:`FORWARD_MB` (at least 1). Per row: the logits
        [vocab] in the model's dtype and float32, its copy of the prefix's cache ``past`` (:meth:`prefix_cache`)
        and its activations, over the last target token (with ``past``) or the whole target prompt."""
        adapter = self.adapter
        item = self.session.model.dtype.itemsize
        tokens = 1 if past is not None else self.target_ids.numel()  # positions each row runs
        cache = sum(t.nbytes for t in _cache_tensors(past))  # the row's copy of the prefix's cache
        activations = tokens * item * (4 * adapter.d_model + 2 * adapter.d_mlp)
        row_bytes = (4 + item) * adapter.d_vocab + cache + activations
        return max(1, int(FORWARD_MB * 2**20 // row_bytes))

    def _forward(self, vectors: torch.Tensor, layers: Sequence[int], past: Any) -> torch.Tensor:
        """One patched forward: [row, d_model] vectors, one layer per row -> [row, vocab] float32.

        With the prefix's cache the rows go sorted by layer and ``blocks[b]`` (0-based) computes only the rows
        patched at layers <= b (:func:`_later_blocks_only`): a row patched at layer l runs blocks l+1..L."""
        session = self.session
        n_rows = len(layers)
        order = sorted(range(n_rows), key=lambda row: int(layers[row]))  # rows by layer
        layers = [int(layers[row]) for row in order]
        vectors = vectors[order].to(session.device, session.model.dtype)
        rows_by_layer: dict[int, list[int]] = {}
        for row, layer in enumerate(layers):
            rows_by_layer.setdefault(layer, []).append(row)
        # residual layer l (0 = embeddings) of the rows that read layer l, at the last target position
        patches = [residual_patch(layer, vectors[rows], position=-1, rows=rows)
                   for layer, rows in rows_by_layer.items()]
        tokens = self.target_ids[-1:] if past is not None else self.target_ids  # the last token, or the whole prompt
        ids = tokens.to(session.device)[None].expand(n_rows, -1)  # [row, tokens]
        repeated, skipping = None, nullcontext()
        if past is not None:
            repeated = copy.deepcopy(past)  # repeating and the forward both grow a cache in place
            blocks = self.adapter.blocks
            cache_layers = getattr(repeated, "layers", ())
            if len(cache_layers) == len(blocks) and all(hasattr(c, "batch_repeat_interleave") for c in cache_layers):
                active = [max(1, bisect.bisect_right(layers, block)) for block in range(len(blocks))]
                for cache_layer, rows in zip(cache_layers, active):
                    _repeat_rows(cache_layer, rows)
                skipping = _later_blocks_only(blocks, active)
            else:
                repeated.batch_repeat_interleave(n_rows)
        with skipping:
            logits = session.run(Pass(ids, patches=patches, logits=True, past_key_values=repeated)).logits
        return logits[torch.tensor(order, device=logits.device).argsort()]  # [row, vocab] in the given row order


@contextmanager
def _later_blocks_only(blocks: Sequence[nn.Module], active: Sequence[int]) -> Iterator[None]:
    """Within the body, ``blocks[b]`` (0-based) computes only the first ``active[b]`` rows of its batch; the others
    pass through unchanged. For rows sorted by patch layer, ``active[b]`` = the rows patched at layers <= b: a row
    patched at layer l (the output of ``blocks[l-1]``) enters ``blocks[l]`` with its patch, and whatever the
    blocks before made of it is overwritten before any block reads it. Every tensor argument of a block that has
    the batch's rows (mask, positions) is cut with them; the cache must hold ``active[b]`` rows in its layer b.
    The blocks' own ``forward`` is restored on leaving, also when the body raises."""
    saved = []
    try:
        for block, rows in zip(blocks, active):
            saved.append((block, block.__dict__.get("forward")))
            block.forward = _first_rows(block.forward, rows)
        yield
    finally:
        for block, own in saved:
            if own is None:
                del block.forward
            else:
                block.forward = own


def _first_rows(forward: Callable, rows: int) -> Callable:
    """``forward`` run on the first ``rows`` rows of its batch, the others returned as they came in."""

    def run(*args, **kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]  # [row, pos, d_model]
        n_rows = hidden.shape[0]
        if rows >= n_rows:
            return forward(*args, **kwargs)

        def cut(value):  # one new token per row: no other argument has n_rows > 1 entries first
            if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == n_rows:
                return value[:rows]
            return tuple(cut(v) for v in value) if type(value) is tuple else value  # e.g. rotary (cos, sin)

        out = forward(*(cut(a) for a in args), **{k: cut(v) for k, v in kwargs.items()})
        full = hidden.clone()
        full[:rows] = ops.first_tensor(out)
        return ops.with_first(out, full)

    return run


def _repeat_rows(cache_layer: Any, rows: int) -> None:
    """One layer of a batch-1 cache repeated over ``rows`` rows: views of the one row where the layer only ever
    concatenates onto its keys and values (the dynamic layers: their update copies them once anyway), else a copy
    per row (``batch_repeat_interleave``)."""
    if type(cache_layer) in (DynamicLayer, DynamicSlidingWindowLayer) and cache_layer.is_initialized:
        cache_layer.keys = cache_layer.keys.expand(rows, *cache_layer.keys.shape[1:])
        cache_layer.values = cache_layer.values.expand(rows, *cache_layer.values.shape[1:])
    else:
        cache_layer.batch_repeat_interleave(rows)


def _cache_tensors(past: Any) -> list[torch.Tensor]:
    """The key and value tensors a cache holds (its ``layers``' keys and values; none when it has no such)."""
    out = []
    for layer in getattr(past, "layers", ()):
        out += [t for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
                if isinstance(t, torch.Tensor)]
    return out


def sink_token(tokenizer, ids: torch.Tensor) -> int | None:
    """The token TransformerLens puts first (its ``prepend_bos``): the tokenizer's BOS, else its EOS (GPT-2's
    <|endoftext|> is both); None when the tokenizer already starts ``ids`` with it, or has neither."""
    sink = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if sink is None or (ids.numel() and int(ids[0]) == sink):
        return None
    return int(sink)


def identity_patchscope(session, target_prompt: str = IDENTITY_PROMPT) -> Patchscope:
    """Token-identity patchscope (Ghandeharioun et al. 2024)."""
    return Patchscope(session, target_prompt, "identity")


def question_patchscope(session, target_prompt: str = QUESTION_PROMPT) -> Patchscope:
    """The "?" patchscope ("logitscope", patrickhyw) as its seed ran it: the target prompt "?" after a sink token.
    The seed runs through TransformerLens, which puts a BOS first, so its target is [BOS, "?"]
    (RESEARCH.md §3a, §3e); we put the tokenizer's BOS (else EOS) first where the tokenizer adds none."""
    return Patchscope(session, target_prompt, "question", sink=True)


def question_bare_patchscope(session, target_prompt: str = QUESTION_PROMPT) -> Patchscope:
    """The "?" patchscope on the bare target prompt: "?" alone, as the tokenizer encodes it (no sink token where the
    tokenizer adds none) -- the variant Layerscope ran before it matched the seed, kept for comparison."""
    return Patchscope(session, target_prompt, "question_bare")

"""Activation patching: which (layer, position) activations of a clean run restore its prediction in a corrupted one.

Two prompts that tokenise to the same length, e.g. clean "The Eiffel Tower is in the city of" and corrupted "The
Colosseum is in the city of": :func:`patching_grid` runs the corrupted prompt once per cell with one activation
replaced by the clean run's -- the residual stream at layer l (0 = embeddings, l = after block l), or the attention
or MLP output of block l -- and reads a metric of the last position's logits (:class:`PatchMetric`: the logit
difference of two tokens, a token's probability, log-probability or rank). The effect of a cell is
``(patched - corrupted) / (clean - corrupted)``: 0 = the patch changes nothing, 1 = it restores the clean value.

Many cells run in one forward pass, one cell per batch row (the batch size comes from a memory budget). A patch at
position p leaves every position before p as in the corrupted run (the model is causal), so a batch whose cells all
sit at positions >= p0 continues the corrupted run's key/value cache of the first p0 tokens and runs only the rest.
Likewise a patch at residual layer l (or in block l + 1) leaves blocks 1..l as in the corrupted run: where the model
can start a pass at a later block (:func:`core.model.executors.starts_at_block`: the local executor, rotary models
whose embeddings go straight into block 1), a batch of cells at layers >= l0 starts at block l0 + 1 from the
corrupted run's residual at layer l0, and never runs the blocks below. The grid is then cut into tiles of
consecutive layers x consecutive positions (:func:`_plan_tiles`: the tile shapes that minimise the work, blocks
run x positions run x rows, plus a per-pass overhead). :func:`patch_cells` is the plain reference: one full forward
pass per cell.

:func:`patch_lens` reads a patched run with the lens: the target prompt with its residual at one (layer, position)
replaced by a source prompt's residual at another, every layer x position of the result read like the Lens page,
next to the unpatched run. Only the *cone* of the target cell (itself, and every later layer at its position and
after) can change.

No Streamlit here: the Lens page (``ui/views/lens_patching.py``), ``python -m core patch`` and the snippets of
:func:`grid_snippet` / :func:`patch_lens_snippet` call these functions and print the same frames.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from core.analyses.lens import LensResult, resolve_target, run_lens
from core.analyses.params import DEFAULT_TOP_K, MAX_TOP_K
from core.layers import block_of_layer
from core.lenses.base import Lens
from core.model.executors import Pass, starts_at_block
from core.model.hooks import Capture, Captured, Patch, residual_captures, residual_patch
from core.model.session import ModelSession, Trace, _croppable

METRIC_KINDS = ("logit_diff", "prob", "logprob", "rank")
"""logit_diff = logit(token) - logit(other) at the last position; prob / logprob of the token; rank (1 = top)."""
METRIC_LABELS = {"logit_diff": "logit difference", "prob": "probability", "logprob": "log-probability",
                 "rank": "rank"}
PATCH_SITES = ("resid", "attn_out", "mlp_out")
"""resid = the residual stream at layer l (0..L); attn_out / mlp_out = block l's attention / MLP output (1..L)."""
SITE_LABELS = {"resid": "residual stream", "attn_out": "attention output", "mlp_out": "MLP output"}
GRID_COLUMNS = ["layer", "position", "token", "clean_token", "value", "effect"]
DEFAULT_BUDGET_BYTES = 512 * 2**20
MAX_BATCH = 64
PASS_BLOCK_TOKENS = 32
"""Tile planning: the fixed cost of running one block once in a pass, in token-block units (the time of one token
through one block): measured on the bundled SmolLM2-135M on one CPU thread, about 2 ms against 65 us a token-block
(the block's weights streamed, Python per module)."""
PASS_TOKENS = 160
"""Tile planning: the fixed cost of one pass in token-blocks (about 10 ms: the unembedding's weights streamed, the
mask, the cache copy)."""
SAME_VALUE_RTOL = 1e-6
"""Clean and corrupted values closer than this (relative, at least 1e-6 absolute) leave the effect undefined."""
CHANGED_PROB = 1e-4
"""Patch lens: a cell whose target probability moves by more than this counts as changed."""

Fraction = Callable[[float], None]


# -- the metric ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PatchMetric:
    """What is read from the last position's logits: ``kind`` of :data:`METRIC_KINDS` about token ``token_id``
    (and, for ``logit_diff``, minus the logit of ``other_id``). ``token`` / ``other`` are display texts."""

    kind: str
    token_id: int
    other_id: int | None = None
    token: str = ""
    other: str = ""

    def __post_init__(self) -> None:
        if self.kind not in METRIC_KINDS:
            raise ValueError(f"Unknown metric {self.kind!r}; choose one of {', '.join(METRIC_KINDS)}.")
        if self.kind == "logit_diff" and self.other_id is None:
            raise ValueError("The logit difference needs a second token: give the other token (e.g. ' Rome').")
        if self.kind == "logit_diff" and self.other_id == self.token_id:
            raise ValueError("The logit difference compares two different tokens; the token and the other token "
                             "are the same: pick another.")

    def label(self) -> str:
        """E.g. "logit(' Paris') − logit(' Rome')", "p(' Paris')", "rank of ' Paris'"."""
        token = repr(self.token) if self.token else f"#{self.token_id}"
        other = repr(self.other) if self.other else f"#{self.other_id}"
        return {"logit_diff": f"logit({token}) − logit({other})", "prob": f"p({token})",
                "logprob": f"log p({token})", "rank": f"rank of {token}"}[self.kind]


def _single_token(session: ModelSession, text: str | None, what: str) -> tuple[int, str]:
    if text is None or text == "":
        raise ValueError(f"The {what} is empty: type one token such as ' Paris' (mind the leading space).")
    ids = session.tokenizer(text, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"The {what} {text!r} produced no tokens: type one token such as ' Paris'.")
    pieces = [session.vocab_strings()[i] for i in ids]
    if len(ids) > 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens ({', '.join(repr(p) for p in pieces)}): the metric needs a "
                         f"single token; use one of them, e.g. {pieces[0]!r}.")
    return int(ids[0]), pieces[0]


def resolve_metric(session: ModelSession, kind: str, token_text: str, other_text: str | None = None) -> PatchMetric:
    """Typed token(s) -> a :class:`PatchMetric`; each must be one token of this model's vocabulary."""
    if kind not in METRIC_KINDS:
        raise ValueError(f"Unknown metric {kind!r}; choose one of {', '.join(METRIC_KINDS)}.")
    token_id, token = _single_token(session, token_text, "metric token")
    other_id, other = (None, "")
    if kind == "logit_diff":
        if other_text is None or other_text == "":
            raise ValueError("The logit difference needs a second token: give the other token (e.g. ' Rome').")
        other_id, other = _single_token(session, other_text, "other token")
    return PatchMetric(kind, token_id, other_id, token, other)


def metric_value(logits: torch.Tensor, metric: PatchMetric) -> torch.Tensor:
    """[batch, vocab] last-position logits -> [batch] float32 values of ``metric``."""
    logits = logits.float()
    target = logits[:, metric.token_id]
    if metric.kind == "logit_diff":
        return target - logits[:, metric.other_id]
    if metric.kind == "rank":
        return 1.0 + (logits > target[:, None]).sum(dim=-1).float()
    logprob = target - torch.logsumexp(logits, dim=-1)
    return logprob if metric.kind == "logprob" else logprob.exp()


def default_metric(session: ModelSession, kind: str, clean_prompt: str, corrupt_prompt: str,
                   token_text: str | None = None, other_text: str | None = None) -> tuple[PatchMetric, str]:
    """(metric, note): ``kind`` about the typed token(s), an empty one replaced by its default: the token = the clean
    run's final top-1, the other token = the corrupted run's (its second choice when both predict the same, said in
    the note). Defaults are token ids, so a token that no text round-trips (a byte piece) still works."""
    if kind not in METRIC_KINDS:
        raise ValueError(f"Unknown metric {kind!r}; choose one of {', '.join(METRIC_KINDS)}.")
    token = _single_token(session, token_text, "metric token") if token_text else None
    other = _single_token(session, other_text, "other token") if other_text and kind == "logit_diff" else None
    note = ""
    if token is None or (kind == "logit_diff" and other is None):
        clean_ids, corrupt_ids = check_pair(session, clean_prompt, corrupt_prompt)
        logits = session.run(Pass(torch.stack([clean_ids, corrupt_ids]), logits=True)).logits  # [2, vocab]
        vocab = session.vocab_strings()
        if token is None:
            top = int(logits[0].argmax())
            token = (top, vocab[top])
        if kind == "logit_diff" and other is None:
            order = [int(i) for i in logits[1].topk(2).indices]
            pick = order[0] if order[0] != token[0] else order[1]
            other = (pick, vocab[pick])
            if pick != order[0]:
                note = (f"The corrupted run also predicts {token[1]!r}: the other token is its second choice, "
                        f"{other[1]!r}.")
    return PatchMetric(kind, token[0], other[0] if kind == "logit_diff" else None, token[1],
                       other[1] if kind == "logit_diff" else ""), note


# -- input checks ----------------------------------------------------------------------------------------------
def check_pair(session: ModelSession, clean_prompt: str, corrupt_prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (clean ids [pos], corrupted ids [pos]); ValueError when either is empty or too long, or when they differ
    in length (patching pairs positions one to one). Identical prompts are allowed (every patch then does nothing)."""
    ids = []
    for name, prompt in (("clean", clean_prompt), ("corrupted", corrupt_prompt)):
        if prompt is None or not prompt.strip():
            raise ValueError(f"The {name} prompt is empty: type the text to run.")
        try:
            ids.append(session.tokenize(prompt))
        except ValueError as err:
            raise ValueError(f"The {name} prompt: {err}") from None
    clean, corrupt = ids
    if clean.numel() != corrupt.numel():
        raise ValueError(f"The clean prompt is {clean.numel()} tokens and the corrupted prompt {corrupt.numel()}: "
                         "patching pairs positions one to one, so edit them until they match token for token "
                         "(e.g. swap a word for one of the same token length).")
    return clean, corrupt


def site_layers(site: str, n_layers: int) -> list[int]:
    """The layers a site has: residual layers 0..L, or blocks 1..L for the attention / MLP outputs."""
    if site not in PATCH_SITES:
        raise ValueError(f"Unknown patching site {site!r}; choose one of {', '.join(PATCH_SITES)}.")
    return list(range(0 if site == "resid" else 1, n_layers + 1))


def _check_layers(site: str, layers: Sequence[int] | None, n_layers: int) -> list[int]:
    allowed = site_layers(site, n_layers)
    if layers is None:
        return allowed
    chosen = sorted({int(layer) for layer in layers})
    if not chosen:
        raise ValueError("No layers chosen: pick at least one layer to patch.")
    bad = [layer for layer in chosen if layer not in allowed]
    if bad:
        what = ("residual layers 0..{0} (0 = embeddings, l = after block l)" if site == "resid"
                else "blocks 1..{0} (block l writes layer l)").format(n_layers)
        raise ValueError(f"Layer {bad[0]} does not exist for the {SITE_LABELS[site]}: this model has {what}.")
    return chosen


def _position(value: int, n_pos: int, what: str) -> int:
    pos = int(value)
    if not -n_pos <= pos < n_pos:
        raise ValueError(f"The {what} position {pos} does not exist: the prompt has positions 0..{n_pos - 1} "
                         "(negative ones count from the end).")
    return pos % n_pos


def _check_positions(positions: Sequence[int] | None, n_pos: int) -> list[int]:
    if positions is None:
        return list(range(n_pos))
    chosen = sorted({_position(p, n_pos, "patched") for p in positions})
    if not chosen:
        raise ValueError("No positions chosen: pick at least one position to patch.")
    return chosen


def _check_metric(session: ModelSession, metric: PatchMetric) -> None:
    vocab = session.adapter.d_vocab
    for token_id in (metric.token_id, metric.other_id):
        if token_id is not None and not 0 <= int(token_id) < vocab:
            raise ValueError(f"Token id {token_id} is outside this model's vocabulary (0..{vocab - 1}): "
                             "resolve the metric with this model (resolve_metric).")


# -- sites ---------------------------------------------------------------------------------------------------------
def _clean_captures(site: str, layers: list[int]) -> tuple[Capture, ...]:
    if site == "resid":
        return residual_captures(layers, row=0)
    return (Capture(site, tuple(block_of_layer(layer) for layer in layers), row=0),)


def _clean_values(got: Captured, site: str, layers: list[int]) -> torch.Tensor:
    """[layer, pos, d_model] the clean activations at ``layers``."""
    if site == "resid":
        return got.residual(layers)
    return got.stack(site, [block_of_layer(layer) for layer in layers])


def _patch(site: str, layer: int, value: torch.Tensor, position: int, rows: tuple[int, ...]) -> Patch:
    if site == "resid":
        return residual_patch(layer, value, position, rows)
    return Patch(site, block_of_layer(layer), value, position, rows)


def row_bytes(session: ModelSession, n_pos: int) -> int:
    """Rough bytes one batch row of a patched pass holds at once: a block's activations (d_model and d_mlp wide),
    its attention scores, the row's key/value cache over every block, and the last position's logits."""
    a = session.adapter
    itemsize = max(4, next(session.model.parameters()).element_size())
    floats = (n_pos * (8 * a.d_model + 3 * a.d_mlp) + a.n_heads * n_pos * n_pos
              + 2 * a.n_layers * n_pos * a.d_model + 3 * a.d_vocab)
    return itemsize * floats


def batch_size_for(session: ModelSession, n_pos: int, budget_bytes: int = DEFAULT_BUDGET_BYTES,
                   cap: int = MAX_BATCH) -> int:
    """Rows per patched pass: what fits ``budget_bytes`` (:func:`row_bytes`), at least 1, at most ``cap``."""
    return int(max(1, min(cap, int(budget_bytes) // max(1, row_bytes(session, n_pos)))))


# -- the grid ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PatchingResult:
    """A patching grid: ``frame`` has one row per (layer, position) with GRID_COLUMNS (token = the corrupted prompt's
    token there, clean_token = the clean prompt's, value = the metric of the patched run, effect = (value -
    corrupt_value) / (clean_value - corrupt_value), NaN when undefined). ``skips_blocks``: the batched passes
    started at the first block a batch's patches can change (the blocks below were not run)."""

    frame: pd.DataFrame
    clean_value: float
    corrupt_value: float
    site: str
    metric: PatchMetric
    n_passes: int
    batch_size: int
    tokens: tuple[str, ...] = ()
    clean_tokens: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    skips_blocks: bool = False


def _prepare(session: ModelSession, clean_prompt: str, corrupt_prompt: str, metric: PatchMetric, site: str,
             layers: Sequence[int] | None, positions: Sequence[int] | None):
    if site not in PATCH_SITES:
        raise ValueError(f"Unknown patching site {site!r}; choose one of {', '.join(PATCH_SITES)}.")
    if not isinstance(metric, PatchMetric):
        raise ValueError("The metric must be a PatchMetric: build it with resolve_metric(session, kind, token).")
    clean_ids, corrupt_ids = check_pair(session, clean_prompt, corrupt_prompt)
    layers = _check_layers(site, layers, session.adapter.n_layers)
    positions = _check_positions(positions, corrupt_ids.numel())
    _check_metric(session, metric)
    return clean_ids, corrupt_ids, layers, positions


def _clean_run(session: ModelSession, clean_ids: torch.Tensor, site: str, layers: list[int],
               metric: PatchMetric) -> tuple[torch.Tensor, float]:
    out = session.run(Pass(clean_ids[None], captures=_clean_captures(site, layers), logits=True))
    return _clean_values(out.captured, site, layers), float(metric_value(out.logits, metric)[0])


def patch_cells(session: ModelSession, clean_prompt: str, corrupt_prompt: str, metric: PatchMetric,
                site: str = "resid", cells: Sequence[tuple[int, int]] = (),
                progress: Fraction | None = None) -> np.ndarray:
    """The reference: one full forward pass of the corrupted prompt per (layer, position) cell, the clean activation
    written at that cell -> [cell] float64 metric values, in the order of ``cells``."""
    layers = sorted({int(layer) for layer, _ in cells}) or None
    clean_ids, corrupt_ids, layers, _ = _prepare(session, clean_prompt, corrupt_prompt, metric, site, layers,
                                                 [p for _, p in cells] or None)
    clean_acts, _ = _clean_run(session, clean_ids, site, layers, metric)
    index = {layer: i for i, layer in enumerate(layers)}
    values = np.empty(len(cells))
    for k, (layer, pos) in enumerate(cells):
        pos = _position(pos, corrupt_ids.numel(), "patched")
        patch = _patch(site, int(layer), clean_acts[index[int(layer)], pos], pos, (0,))
        out = session.run(Pass(corrupt_ids[None], patches=(patch,), logits=True))
        values[k] = float(metric_value(out.logits, metric)[0])
        if progress is not None:
            progress((k + 1) / len(cells))
    return values


def patching_grid(session: ModelSession, clean_prompt: str, corrupt_prompt: str, metric: PatchMetric,
                  site: str = "resid", layers: Sequence[int] | None = None, positions: Sequence[int] | None = None,
                  budget_bytes: int = DEFAULT_BUDGET_BYTES, progress: Fraction | None = None,
                  batch_size: int | None = None, single: bool = False) -> PatchingResult:
    """Patch ``site`` from the clean run into the corrupted run at every (layer, position) of ``layers`` x
    ``positions`` (default: all), one cell per batch row; read ``metric`` at the last position.

    ``batch_size`` overrides the one :func:`batch_size_for` derives from ``budget_bytes``; ``single`` runs
    :func:`patch_cells` instead (one full pass per cell: the reference the batched grid is tested against).
    ``progress(fraction)`` is called after each pass. Every input is checked before the first pass.
    """
    clean_ids, corrupt_ids, layers, positions = _prepare(session, clean_prompt, corrupt_prompt, metric, site,
                                                         layers, positions)
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise ValueError(f"The batch size must be 1 or more; got {batch_size!r}.")
    n_pos = corrupt_ids.numel()
    cells = [(layer, pos) for pos in positions for layer in layers]  # by position: a batch shares its prefix
    notes: list[str] = []
    if torch.equal(clean_ids, corrupt_ids):
        notes.append("The clean and corrupted prompts are the same tokens: no patch can change anything.")
    skips = False
    if single:
        values = patch_cells(session, clean_prompt, corrupt_prompt, metric, site, cells, progress)
        out = session.run(Pass(torch.stack([clean_ids, corrupt_ids]), logits=True))
        clean_value, corrupt_value = (float(v) for v in metric_value(out.logits, metric))
        n_passes, rows = len(cells) + 2, 1
    else:
        rows = int(batch_size) if batch_size is not None else batch_size_for(session, n_pos, budget_bytes)
        # before the first token where the prompts differ, both runs hold the same activations (a causal model reads
        # the same tokens there): a patch there writes what is already there, so those cells are the corrupted value
        # and run no pass
        differs = (clean_ids != corrupt_ids).nonzero()
        shared = int(differs[0, 0]) if differs.numel() else n_pos
        run_positions = [p for p in positions if p >= shared]
        run_cells = [(layer, pos) for layer, pos in cells if pos >= shared]
        clean_acts, clean_value = _clean_run(session, clean_ids, site, layers, metric)
        keep = bool(getattr(session.executor, "kv_cache", False))
        skips = starts_at_block(session)
        if skips:  # tiles of layers x positions, each pass from its first block on
            batches = _plan_tiles(site, layers, run_positions, rows, n_pos, session.adapter.n_layers) \
                if run_positions else []
            starts = sorted({_start_block(site, batch[0][0]) for batch in batches})
            captures = residual_captures(starts, row=0)
        else:  # by position: a batch shares its prefix
            batches = [run_cells[start:start + rows] for start in range(0, len(run_cells), rows)]
            starts, captures = [], ()
        corrupt = session.run(Pass(corrupt_ids[None], captures=captures, logits=True, keep_cache=keep))
        corrupt_value = float(metric_value(corrupt.logits, metric)[0])
        cache = corrupt.past_key_values if keep and _croppable(corrupt.past_key_values) else None
        resid = dict(zip(starts, corrupt.captured.residual(starts))) if starts else {}  # start -> [pos, d_model]
        index = {layer: i for i, layer in enumerate(layers)}
        got: dict[tuple[int, int], float] = {}
        for done, batch in enumerate(batches):
            if skips:
                batch_values = _skipping_pass(session, corrupt_ids, cache, batch, clean_acts, index, site, metric,
                                              resid)
            else:
                batch_values = _patched_pass(session, corrupt_ids, cache, batch, clean_acts, index, site, metric)
            got.update(zip(batch, batch_values))
            if progress is not None:
                progress((done + 1) / len(batches))
        values = np.array([got.get(cell, corrupt_value) for cell in cells], dtype=np.float64)
        n_passes = len(batches) + 2
    return _result(session, clean_ids, corrupt_ids, cells, values, clean_value, corrupt_value, site, metric,
                   n_passes, rows, notes, skips)


def _start_block(site: str, layer: int) -> int:
    """The first block (0-based) a patch of ``site`` at ``layer`` can change: block l + 1 (1-based) for residual
    layer l, block l itself for its attention / MLP output. Equal to the residual layer that block reads."""
    return int(layer) if site == "resid" else block_of_layer(layer)


def _plan_tiles(site: str, layers: list[int], positions: list[int], rows: int, n_pos: int,
                n_layers: int) -> list[list[tuple[int, int]]]:
    """The cells ``layers`` x ``positions`` cut into batches of at most ``rows`` cells: the layers into chunks of
    consecutive layers, each chunk's positions into tiles of a consecutive positions (a x the chunk's layers <=
    ``rows``); each tile's cells ordered by layer then position.

    A tile whose first layer starts at block s0 (:func:`_start_block`) and whose first position is p0 runs
    (n_layers - s0) blocks over (n_pos - p0) positions in each of its rows, plus a fixed cost per block run and per
    pass (:data:`PASS_BLOCK_TOKENS`, :data:`PASS_TOKENS`). Given a layer chunk, that cost is exact for every a;
    the chunks are chosen by dynamic programming over the layers (cheapest total; ties: fewer passes)."""
    tilings = {}  # a -> (sum over position tiles of positions x positions run, number of tiles)
    for a in range(1, min(rows, len(positions)) + 1):
        chunks = [positions[i:i + a] for i in range(0, len(positions), a)]
        tilings[a] = (sum(len(chunk) * (n_pos - chunk[0]) for chunk in chunks), len(chunks))
    # best[i]: (cost, passes, b, a) of the cheapest plan for layers[i:], its first chunk b layers x a positions
    best: list[tuple[float, int, int, int]] = [(0.0, 0, 0, 0)] * (len(layers) + 1)
    for i in reversed(range(len(layers))):
        run = n_layers - _start_block(site, layers[i])  # blocks every pass of this chunk runs
        options = []
        for b in range(1, min(rows, len(layers) - i) + 1):
            rest_cost, rest_passes = best[i + b][:2]
            for a in range(1, min(rows // b, len(positions)) + 1):
                work, tiles = tilings[a]
                cost = b * run * work + (PASS_BLOCK_TOKENS * run + PASS_TOKENS) * tiles + rest_cost
                options.append((cost, tiles + rest_passes, b, a))
        best[i] = min(options)
    batches, i = [], 0
    while i < len(layers):
        _, _, b, a = best[i]
        batches += [[(layer, pos) for layer in layers[i:i + b] for pos in positions[j:j + a]]
                    for j in range(0, len(positions), a)]
        i += b
    return batches


def _prefix_cache(cache, start: int, n_pos: int, n_rows: int):
    """A copy of the corrupted run's cache cut back to its first ``start`` tokens, one copy per row (None at 0)."""
    if start == 0:
        return None
    past = copy.deepcopy(cache)  # a pass extends its cache: every batch starts from its own copy
    past.crop(start - n_pos)  # keep the first ``start`` tokens
    past.batch_repeat_interleave(n_rows)
    return past


def _skipping_pass(session: ModelSession, corrupt_ids: torch.Tensor, cache, batch: list[tuple[int, int]],
                   clean_acts: torch.Tensor, index: dict[int, int], site: str, metric: PatchMetric,
                   resid: dict[int, torch.Tensor]) -> np.ndarray:
    """One tile: row r = the corrupted prompt with cell batch[r] patched, run from block s0 (the tile's first
    :func:`_start_block`) on the corrupted residual entering it, at positions >= p0 when there is a cache. A
    residual cell at layer s0 is written into that input; every other cell is patched by a hook in a block that
    runs (blocks >= s0)."""
    n_pos = corrupt_ids.numel()
    start = min(pos for _, pos in batch) if cache is not None else 0
    s0 = min(_start_block(site, layer) for layer, _ in batch)
    inputs = resid[s0][start:].expand(len(batch), -1, -1).clone()  # [row, pos, d_model]
    patches = []
    for row, (layer, pos) in enumerate(batch):
        value = clean_acts[index[layer], pos]
        if site == "resid" and layer == s0:
            inputs[row, pos - start] = value
        else:
            patches.append(_patch(site, layer, value, pos - start, (row,)))
    ids = corrupt_ids[start:][None].expand(len(batch), -1)
    out = session.run(Pass(ids, patches=tuple(patches), logits=True,
                           past_key_values=_prefix_cache(cache, start, n_pos, len(batch)),
                           start_block=s0, resid=inputs))
    return metric_value(out.logits, metric).double().cpu().numpy()


def _patched_pass(session: ModelSession, corrupt_ids: torch.Tensor, cache, chunk: list[tuple[int, int]],
                  clean_acts: torch.Tensor, index: dict[int, int], site: str, metric: PatchMetric) -> np.ndarray:
    """One batch: row r = the corrupted prompt with cell chunk[r] patched. With a key/value cache, the rows continue
    the corrupted run after its first p0 tokens (p0 = the chunk's first position: nothing before it changes)."""
    n_pos = corrupt_ids.numel()
    start = min(pos for _, pos in chunk) if cache is not None else 0
    ids = corrupt_ids[start:][None].expand(len(chunk), -1)
    patches = tuple(_patch(site, layer, clean_acts[index[layer], pos], pos - start, (row,))
                    for row, (layer, pos) in enumerate(chunk))
    out = session.run(Pass(ids, patches=patches, logits=True,
                           past_key_values=_prefix_cache(cache, start, n_pos, len(chunk))))
    return metric_value(out.logits, metric).double().cpu().numpy()


def _same(clean: float, corrupt: float) -> bool:
    return abs(clean - corrupt) <= SAME_VALUE_RTOL * max(1.0, abs(clean), abs(corrupt))


def _result(session: ModelSession, clean_ids, corrupt_ids, cells, values, clean_value, corrupt_value, site, metric,
            n_passes, rows, notes, skips: bool = False) -> PatchingResult:
    tokens, clean_tokens = session.token_strings(corrupt_ids), session.token_strings(clean_ids)
    if _same(clean_value, corrupt_value):
        notes.append(f"The clean and corrupted runs give the same {METRIC_LABELS[metric.kind]} ({clean_value:.4g}): "
                     "the effect, normalised by their difference, is undefined (NaN); read the raw values.")
        effect = np.full(len(cells), np.nan)
    else:
        effect = (values - corrupt_value) / (clean_value - corrupt_value)
    frame = pd.DataFrame({
        "layer": np.array([c[0] for c in cells], dtype=np.int64),
        "position": np.array([c[1] for c in cells], dtype=np.int64),
        "token": [tokens[c[1]] for c in cells],
        "clean_token": [clean_tokens[c[1]] for c in cells],
        "value": values.astype(float),
        "effect": effect.astype(float),
    }).sort_values(["layer", "position"], kind="stable").reset_index(drop=True)
    return PatchingResult(frame=frame, clean_value=clean_value, corrupt_value=corrupt_value, site=site, metric=metric,
                          n_passes=n_passes, batch_size=rows, tokens=tokens, clean_tokens=clean_tokens,
                          notes=tuple(notes), skips_blocks=skips)


# -- the patch lens -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PatchLensResult:
    """The target prompt under the lens with one residual cell replaced by the source prompt's, next to the
    unpatched run. ``frame``: the lens frame of the patched run (core.analyses.lens.LENS_COLUMNS) plus top1_unpatched,
    target_prob_unpatched, delta_target_prob, in_cone (the patch can reach the cell) and changed."""

    frame: pd.DataFrame
    patched: LensResult
    unpatched: LensResult
    source_cell: tuple[int, int]
    target_cell: tuple[int, int]
    source_tokens: tuple[str, ...]
    tokens: tuple[str, ...]
    notes: tuple[str, ...] = ()


def _check_cell(cell: Sequence[int], n_layers: int, n_pos: int, what: str) -> tuple[int, int]:
    try:
        layer, pos = (int(x) for x in cell)
    except (TypeError, ValueError):
        raise ValueError(f"The {what} cell must be (layer, position), e.g. (3, 5); got {cell!r}.") from None
    if not 0 <= layer <= n_layers:
        raise ValueError(f"The {what} layer {layer} does not exist: residual layers are 0..{n_layers} (0 = "
                         "embeddings, l = after block l).")
    return layer, _position(pos, n_pos, what)


def in_cone(layer: np.ndarray | int, position: np.ndarray | int, target_cell: tuple[int, int]):
    """True where a patch of the residual at ``target_cell`` can have an effect: the cell itself, and every later
    layer at its position and after (a causal model's later positions read it through attention)."""
    lt, pt = target_cell
    layer, position = np.asarray(layer), np.asarray(position)
    return ((layer == lt) & (position == pt)) | ((layer > lt) & (position >= pt))


def _residual_run(session: ModelSession, ids: torch.Tensor, patches: tuple[Patch, ...] = ()) -> tuple[Trace, int]:
    """One pass of ``ids`` (with ``patches``) -> (its residual trace, its final top-1 at the last position)."""
    n = session.adapter.n_layers
    out = session.run(Pass(ids[None], captures=residual_captures(range(n + 1), row=0), patches=patches, logits=True))
    trace = Trace(input_ids=ids.cpu(), tokens=session.token_strings(ids), resid=out.captured.residual(range(n + 1)),
                  model_key=session.spec.key())
    return trace, int(out.logits[0].argmax())


def patch_lens(session: ModelSession, source_prompt: str, target_prompt: str, source_cell: tuple[int, int],
               target_cell: tuple[int, int], lens: Lens | None = None, top_k: int = DEFAULT_TOP_K,
               targets: list[str] | None = None, layers: list[int] | None = None) -> PatchLensResult:
    """Run ``target_prompt`` with its residual at ``target_cell`` (layer, position) replaced by ``source_prompt``'s
    residual at ``source_cell`` (both residual layers; the prompts may differ in length, the cells in layer and
    position) and read every layer x position of the patched run with ``lens`` (default: logit lens), next to the
    unpatched run. Targets: the typed ``targets``, else the unpatched run's final top-1 at the last position (one
    target for both runs, so the Δ probabilities compare like with like)."""
    if not 1 <= int(top_k) <= MAX_TOP_K:
        raise ValueError(f"Top-k must be between 1 and {MAX_TOP_K}.")
    for name, prompt in (("source", source_prompt), ("target", target_prompt)):
        if prompt is None or not prompt.strip():
            raise ValueError(f"The {name} prompt is empty: type the text to run.")
    source_ids, target_ids = session.tokenize(source_prompt), session.tokenize(target_prompt)
    n = session.adapter.n_layers
    source_cell = _check_cell(source_cell, n, source_ids.numel(), "source")
    target_cell = _check_cell(target_cell, n, target_ids.numel(), "target")
    if layers is not None:
        _check_layers("resid", layers, n)
    for text in targets or []:
        resolve_target(session, text)  # a bad target fails before any pass
    ls, ps = source_cell
    lt, pt = target_cell
    src = session.run(Pass(source_ids[None], captures=residual_captures([ls], position=ps, row=0), stop_early=True))
    value = src.captured.residual([ls])[0]  # [d_model]
    base_trace, base_top = _residual_run(session, target_ids)
    patched_trace, _ = _residual_run(session, target_ids, (residual_patch(lt, value, pt),))
    ids = None if targets else [base_top]
    kwargs = dict(lens=lens, top_k=top_k, targets=targets or None, target_ids=ids, layers=layers)
    patched = run_lens(session, target_prompt, trace=patched_trace, **kwargs)
    unpatched = run_lens(session, target_prompt, trace=base_trace, **kwargs)
    frame = patched.frame.copy()
    base = unpatched.frame
    frame["top1_unpatched"] = base.top_tokens.str[0].to_numpy()
    frame["target_prob_unpatched"] = base.target_prob.to_numpy()
    frame["delta_target_prob"] = frame.target_prob - frame.target_prob_unpatched
    frame["in_cone"] = in_cone(frame.layer.to_numpy(), frame.position.to_numpy(), target_cell)
    frame["changed"] = ((frame.top_tokens.str[0] != frame.top1_unpatched)
                        | (frame.delta_target_prob.abs() > CHANGED_PROB))
    notes = list(patched.notes)
    if not targets:
        notes.append(f"Target: the unpatched run's final top-1 at the last position, "
                     f"{session.vocab_strings()[base_top]!r}, in both runs.")
    return PatchLensResult(frame=frame, patched=patched, unpatched=unpatched, source_cell=source_cell,
                           target_cell=target_cell, source_tokens=session.token_strings(source_ids),
                           tokens=patched_trace.tokens, notes=tuple(notes))


# -- code snippets ----------------------------------------------------------------------------------------------------
_LOAD = ("from core.model.loading import ModelSpec\n"
         "from core.model.session import ModelSession\n")


def grid_snippet(model: str, clean_prompt: str, corrupt_prompt: str, kind: str, token: str,
                 other: str | None = None, site: str = "resid", layers: Sequence[int] | None = None,
                 positions: Sequence[int] | None = None) -> str:
    """Python that reproduces a patching grid with the core API (the model loaded as ``python -m core`` does)."""
    extra = "".join(f", {name}={list(map(int, value))!r}" for name, value in (("layers", layers),
                                                                              ("positions", positions))
                    if value is not None)
    other_arg = f", {other!r}" if kind == "logit_diff" else ""
    return (f"from core.analyses.patching import patching_grid, resolve_metric\n{_LOAD}\n"
            f"session = ModelSession.load(ModelSpec.parse({model!r}).resolved())\n"
            f"metric = resolve_metric(session, {kind!r}, {token!r}{other_arg})\n"
            f"result = patching_grid(session, {clean_prompt!r}, {corrupt_prompt!r}, metric, site={site!r}{extra})\n"
            "print(result.frame)\n")


def patch_lens_snippet(model: str, source_prompt: str, target_prompt: str, source_cell: tuple[int, int],
                       target_cell: tuple[int, int], top_k: int = DEFAULT_TOP_K,
                       targets: Sequence[str] | None = None) -> str:
    """Python that reproduces a patch lens (logit lens) with the core API."""
    target_arg = f", targets={list(targets)!r}" if targets else ""
    return (f"from core.analyses.patching import patch_lens\n{_LOAD}\n"
            f"session = ModelSession.load(ModelSpec.parse({model!r}).resolved())\n"
            f"result = patch_lens(session, {source_prompt!r}, {target_prompt!r}, "
            f"source_cell={tuple(map(int, source_cell))!r}, target_cell={tuple(map(int, target_cell))!r}, "
            f"top_k={int(top_k)}{target_arg})\n"
            "print(result.frame)\n")


def effect_is_defined(result: PatchingResult) -> bool:
    """False when the clean and corrupted values coincide (every effect is NaN)."""
    return not _same(result.clean_value, result.corrupt_value) and not math.isnan(result.clean_value)

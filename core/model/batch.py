"""Batched traces for corpus analyses: ``trace_batch(session, texts or ids) -> one Trace per text, in input order``.

Texts are sorted by length (so little is padded), grouped into batches under a token budget, right-padded and
run with an attention mask: each text's real tokens sit at positions 0..len-1 with position ids 0..len-1, exactly
where a one-at-a-time pass puts them, for learned absolute positions (GPT-2, OPT) and rotary models alike. Causal
attention never lets a real position read a later (padded) one, so padding changes nothing but the shapes of the
products: the results equal the one-at-a-time pass within float32 rounding. Captures are requests of the one
hook mechanism, run by :meth:`ModelSession.run` (every batch row at once; local hooks or nnsight) and each Trace keeps only its text's real
positions, so padding never enters a statistic.

Batch size rule: a batch holds at most ``token_budget`` padded tokens (rows x longest row), at least one text.
The default budget comes from a memory budget for the captured float32 tensors
(:func:`token_budget`: ``memory_bytes / (4 bytes x captured floats per token)``), capped at
:data:`MAX_BATCH_TOKENS` (:data:`MAX_CPU_BATCH_TOKENS` on the CPU) so the pass's own activations stay small too.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from core.model.executors import Pass
from core.model.hooks import Capture, residual_captures
from core.model.session import _TRACE_SITES, CAPTURABLE, ModelSession, Trace
from core.progress import Progress, no_progress

CAPTURE_MEMORY_BYTES = 1 << 30
"""Default memory budget of one batch's captured float32 tensors (1 GiB)."""
MAX_BATCH_TOKENS = 8192
"""At most this many padded tokens per batch on an accelerator, whatever the memory budget allows."""
MAX_CPU_BATCH_TOKENS = 1024
"""The cap on the CPU: measured on the bundled model (2 cores, 128-token texts), a forward pass costs about the
same per text at 4 rows as at 64, while 64-row captures (hundreds of MB of copies) made the pass 1.6x slower."""
BATCHABLE = tuple(name for name in CAPTURABLE if name != "attn_patterns")
"""What :func:`trace_batch` can capture; attention patterns need the one-text :meth:`ModelSession.trace`."""


def captured_floats_per_token(session: ModelSession, capture: Sequence[str] = ()) -> int:
    """How many float32 values one token's captures hold: the residual of every layer plus each requested site."""
    adapter, n = session.adapter, session.adapter.n_layers
    widths = {"head_z": adapter.n_heads * adapter.d_head, "attn_out": adapter.d_model,
              "mlp_out": adapter.d_model, "neurons": adapter.d_mlp}
    return (n + 1) * adapter.d_model + sum(n * widths[name] for name in capture)


def token_budget(session: ModelSession, capture: Sequence[str] = (),
                 memory_bytes: int = CAPTURE_MEMORY_BYTES) -> int:
    """Padded tokens per batch that keep its float32 captures under ``memory_bytes`` (at most MAX_BATCH_TOKENS)."""
    per_token = 4 * captured_floats_per_token(session, capture)
    return max(1, min(_max_tokens(session), memory_bytes // per_token))


def _max_tokens(session: ModelSession) -> int:
    """The padded-token cap of one batch on this session's device (:data:`MAX_CPU_BATCH_TOKENS` on the CPU)."""
    return MAX_CPU_BATCH_TOKENS if session.device.type == "cpu" else MAX_BATCH_TOKENS


def plan_batches(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Text indices grouped into batches: longest first, each batch's rows x longest row <= ``budget``.

    A text longer than the budget gets a batch of its own. Sorting by length keeps the padding small.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: ties keep their input order
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def pad_right(seqs: Sequence[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[pos_i] id tensors -> (input_ids, attention_mask, position_ids), each [batch, pos], padded on the right.

    Position ids run 0..pos-1 in every row: a text's real tokens get 0..len-1, the padding continues the count
    (it stays inside the context because the longest row fits).
    """
    width = max(int(s.numel()) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # [batch, pos]
    mask = torch.zeros((len(seqs), width), dtype=torch.long)  # [batch, pos]
    for row, seq in enumerate(seqs):
        ids[row, : seq.numel()] = seq
        mask[row, : seq.numel()] = 1
    positions = torch.arange(width).expand(len(seqs), width).clone()  # [batch, pos]
    return ids, mask, positions


def _pad_id(session: ModelSession) -> int:
    """A valid token id to pad with (its value never matters: padded positions are masked and dropped)."""
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(session.tokenizer, name, None)
        if isinstance(value, int) and 0 <= value < session.adapter.d_vocab:
            return value
    return 0


def _as_ids(session: ModelSession, prompt: str | torch.Tensor) -> torch.Tensor:
    return session.tokenize(prompt) if isinstance(prompt, str) else session._check_ids(prompt)


def _run_batch(session: ModelSession, seqs: list[torch.Tensor], capture: tuple[str, ...]) -> list[Trace]:
    """One padded forward pass over ``seqs`` -> their Traces (real positions only)."""
    n = session.adapter.n_layers
    ids, mask, positions = pad_right(seqs, _pad_id(session))
    sites = [name for name in BATCHABLE if name in capture]
    requests = residual_captures(range(n + 1)) + tuple(Capture(_TRACE_SITES[name], tuple(range(n)))
                                                       for name in sites)
    got = session.run(Pass(ids, mask, positions, captures=requests)).captured
    resid = got.residual(range(n + 1))  # [layer+1, batch, pos, d_model]
    extra = {name: got.stack(_TRACE_SITES[name], range(n)) for name in sites}  # [layer, batch, pos, d]
    traces = []
    for row, seq in enumerate(seqs):
        length = int(seq.numel())
        traces.append(Trace(
            input_ids=seq.cpu(), tokens=session.token_strings(seq), resid=resid[:, row, :length].clone(),
            model_key=session.spec.key(),
            **{name: tensor[:, row, :length].clone() for name, tensor in extra.items()},
        ))
    return traces


def iter_traces(session: ModelSession, prompts: Sequence[str | torch.Tensor], capture: tuple[str, ...] = (),
                budget: int | None = None, progress: Progress = no_progress) -> Iterator[tuple[int, Trace]]:
    """(input index, Trace) for every prompt, batch by batch (longest first): a caller that reduces each Trace
    as it comes holds one batch of captures at a time, never the whole corpus's.

    ``capture`` names Trace fields as in :meth:`ModelSession.trace` (attention patterns excepted); ``budget``
    is the padded tokens per batch (default :func:`token_budget`). ValueError, before any pass, for an unknown
    capture or a bad prompt (the same checks as :meth:`ModelSession.trace`).
    """
    unknown = set(capture) - set(BATCHABLE)
    if unknown:
        raise ValueError(f"Batched traces cannot capture {sorted(unknown)}; choose from {BATCHABLE} "
                         "(attention patterns: trace one text at a time).")
    seqs = [_as_ids(session, p) for p in prompts]
    return _iter_batches(session, seqs, capture, budget or token_budget(session, capture), progress)


def _iter_batches(session: ModelSession, seqs: list[torch.Tensor], capture: tuple[str, ...], budget: int,
                  progress: Progress) -> Iterator[tuple[int, Trace]]:
    done = 0
    for batch in plan_batches([int(s.numel()) for s in seqs], budget):
        yield from zip(batch, _run_batch(session, [seqs[i] for i in batch], capture))
        done += len(batch)
        progress(done / len(seqs), f"Traced {done}/{len(seqs)} texts")


def trace_batch(session: ModelSession, prompts: Sequence[str | torch.Tensor], capture: tuple[str, ...] = (),
                budget: int | None = None, progress: Progress = no_progress) -> list[Trace]:
    """One :class:`Trace` per prompt, in input order (:func:`iter_traces`, all kept: for a few texts)."""
    out: list[Trace | None] = [None] * len(prompts)
    for index, trace in iter_traces(session, prompts, capture, budget, progress):
        out[index] = trace
    return out  # type: ignore[return-value]  # every slot is filled: the batches partition the indices


def last_residuals(session: ModelSession, prompts: Sequence[str | torch.Tensor],
                   progress: Progress = no_progress) -> list[torch.Tensor]:
    """[layer+1, 1, d_model] per prompt, in input order: the residual stream at its last position (what a
    next-token readout reads), from batched passes; only that position of each batch is kept."""
    out: list[torch.Tensor | None] = [None] * len(prompts)
    for index, trace in iter_traces(session, prompts, progress=progress):
        out[index] = trace.resid[:, -1:].clone()  # [layer+1, 1, d_model]
    return out  # type: ignore[return-value]  # every slot is filled: the batches partition the indices


def iter_site_captures(session: ModelSession, seqs: Sequence[torch.Tensor], site: str, blocks: Sequence[int],
                       memory_bytes: int = CAPTURE_MEMORY_BYTES) -> Iterator[tuple[int, dict[int, torch.Tensor]]]:
    """(input index, {0-based block: [pos_i, d] the hook site's tensor at that text's real positions}) for every
    [pos_i] id sequence, batch by batch (longest first): one hook site of a few blocks, each pass cut short
    after its last requested block. The budget rule as :func:`token_budget`, for ``len(blocks)`` captures of
    the site's width (d_mlp is the widest site)."""
    blocks = tuple(sorted(set(int(b) for b in blocks)))
    per_token = 4 * max(1, len(blocks)) * max(session.adapter.d_mlp, session.adapter.d_model)
    budget = max(1, min(_max_tokens(session), memory_bytes // per_token))
    checked = [session._check_ids(s) for s in seqs]
    for batch in plan_batches([int(s.numel()) for s in checked], budget):
        rows = [checked[i] for i in batch]
        ids, mask, positions = pad_right(rows, _pad_id(session))
        got = session.run(Pass(ids, mask, positions, captures=(Capture(site, blocks),), stop_early=True)).captured
        for row, (index, seq) in enumerate(zip(batch, rows)):
            yield index, {b: got.get(site, b)[row, : seq.numel()] for b in blocks}  # [pos_i, d] views

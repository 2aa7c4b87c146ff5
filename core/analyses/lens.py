"""The Lens analysis: per layer x position top-k, target ranks, entropy and KL, as tidy frames.

The same frames feed the Lens page's charts and tables, its downloads and ``python -m core lens``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from core.analyses.params import DEFAULT_TOP_K, MAX_TOP_K
from core.lenses.base import Lens
from core.lenses.logit import LogitLens
from core.lenses.stats import LensStats, lens_stats, remote_lens_stats
from core.model.session import ModelSession, Trace

LENS_COLUMNS = ["layer", "position", "token", "top_tokens", "top_probs", "target", "target_rank",
                "target_prob", "entropy", "kl_to_final"]


@dataclass(frozen=True)
class TargetChoice:
    """A user-typed target resolved to one token id; ``note`` explains any choice made for the user."""

    text: str
    token_id: int
    token: str
    note: str = ""


def resolve_target(session: ModelSession, text: str) -> TargetChoice:
    """Turn typed text into one token id. Several tokens -> the first, with a note saying so."""
    if text is None or text == "":
        raise ValueError("The target is empty: type a token such as ' Paris' (mind the leading space).")
    ids = session.tokenizer(text, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"The target {text!r} produced no tokens.")
    pieces = [session.vocab_strings()[i] for i in ids]
    note = ""
    if len(ids) > 1:
        note = (f"{text!r} is {len(ids)} tokens ({', '.join(repr(p) for p in pieces)}); "
                f"using the first, {pieces[0]!r}.")
    return TargetChoice(text=text, token_id=int(ids[0]), token=pieces[0], note=note)


@dataclass(frozen=True)
class LensResult:
    """One prompt under one lens: the trace's tokens, the raw statistics and the tidy frame."""

    tokens: tuple[str, ...]
    stats: LensStats
    frame: pd.DataFrame  # one row per (layer, position); columns LENS_COLUMNS
    targets: pd.DataFrame  # one row per (layer, position, target)
    notes: tuple[str, ...] = ()


def run_lens(session: ModelSession, prompt: str, lens: Lens | None = None, top_k: int = DEFAULT_TOP_K,
             targets: list[str] | None = None, layers: list[int] | None = None,
             trace: Trace | None = None, target_ids: list[int] | None = None,
             positions: list[int] | None = None) -> LensResult:
    """Trace ``prompt`` once and reduce it under ``lens`` (default: logit lens) at ``layers`` x ``positions``
    (default: all of both; a page computes what it shows first).

    Targets are typed strings (``targets``, each resolved to one token) and/or token ids (``target_ids``);
    with neither, each position's target is the model's final top-1 there.
    """
    if not 1 <= int(top_k) <= MAX_TOP_K:
        raise ValueError(f"Top-k must be between 1 and {MAX_TOP_K}.")
    choices = [resolve_target(session, t) for t in (targets or [])]
    ids = [c.token_id for c in choices] + [int(i) for i in (target_ids or [])] or None
    if session.ships_requests:  # on NDIF: the logit lens, reduced next to the model; only statistics come back
        if lens is not None and lens.name != "logit":
            raise ValueError(f"On NDIF only the logit lens runs (reduced where the model runs); the "
                             f"{lens.name} lens needs the model's weights here.")
        input_ids = session.tokenize(prompt)
        tokens = session.token_strings(input_ids)
        stats = remote_lens_stats(session, input_ids, top_k=top_k, targets=ids, layers=layers)
        if positions is not None:
            stats = select_positions(stats, positions)
    else:
        trace = trace or session.trace(prompt)
        tokens = trace.tokens
        stats = lens_stats(session, trace, lens or LogitLens(session.adapter), top_k=top_k, targets=ids,
                           layers=layers, positions=positions)
    vocab = session.vocab_strings()
    return LensResult(
        tokens=tokens,
        stats=stats,
        frame=lens_frame(stats, tokens, vocab),
        targets=targets_frame(stats, tokens, vocab),
        notes=tuple(c.note for c in choices if c.note),
    )


_POSITION_FIELDS = ("top_ids", "top_probs", "entropy", "kl_to_final", "target_rank", "target_prob", "next_token_ce")
"""LensStats arrays with a position axis (axis 1); target_ids has it first."""


def select_positions(stats: LensStats, positions: list[int]) -> LensStats:
    """``stats`` at ``positions`` only (each must be among those computed)."""
    cols = [stats.position_column(int(p)) for p in sorted({int(p) for p in positions})]
    return replace(stats, positions=stats.positions[cols], target_ids=stats.target_ids[cols],
                   **{name: getattr(stats, name)[:, cols] for name in _POSITION_FIELDS})


def join_positions(parts: list[LensStats]) -> LensStats:
    """Statistics of the same lens, layers and top-k at disjoint positions -> one, in position order."""
    parts = [p for p in parts if p.positions.size]
    order = np.argsort(np.concatenate([p.positions for p in parts]), kind="stable")
    first = parts[0]
    return replace(first, positions=np.concatenate([p.positions for p in parts])[order],
                   target_ids=np.concatenate([p.target_ids for p in parts])[order],
                   **{name: np.concatenate([getattr(p, name) for p in parts], axis=1)[:, order]
                      for name in _POSITION_FIELDS})


def run_lens_edit(session: ModelSession, base_trace: Trace, base: LensResult, trace: Trace, lens: Lens | None = None,
                  top_k: int = DEFAULT_TOP_K, targets: list[str] | None = None, layers: list[int] | None = None,
                  target_ids: list[int] | None = None, positions: list[int] | None = None,
                  ) -> tuple[LensResult, int]:
    """What-if: the lens on an edited prompt's ``trace`` (made by :meth:`ModelSession.trace_edit` from ``base_trace``)
    under the same request as ``base`` (the base trace's result) -> (its result, n positions reused from ``base``).

    Statistics of the positions whose token and next token are shared with the base prompt, where ``base`` holds them,
    are taken from ``base``: a causal model computes them from the same tokens, so with the same lens, top-k, layers
    and targets (typed, or each position's final top-1) they are the same numbers. Only the other positions are
    computed. ``base`` must come from :func:`run_lens` with that request.
    """
    n = min(base_trace.n_pos, trace.n_pos)
    differs = (base_trace.input_ids[:n] != trace.input_ids[:n]).nonzero()
    shared = int(differs[0, 0]) if differs.numel() else n  # tokens before the first difference
    wanted = list(range(trace.n_pos)) if positions is None else sorted({int(p) for p in positions})
    have = set(base.stats.positions.tolist())
    # a position's statistics read its own tokens and the next one (next-token cross-entropy): reusable while both
    # are shared
    reused = [p for p in wanted if p + 1 < shared and p in have]
    fresh = [p for p in wanted if p + 1 >= shared or p not in have]
    result = run_lens(session, "", lens=lens, top_k=top_k, targets=targets, layers=layers, trace=trace,
                      target_ids=target_ids, positions=fresh) if fresh else None
    if not reused:
        return result, 0
    stats = join_positions([select_positions(base.stats, reused)] + ([result.stats] if result is not None else []))
    vocab = session.vocab_strings()
    return LensResult(tokens=trace.tokens, stats=stats, frame=lens_frame(stats, trace.tokens, vocab),
                      targets=targets_frame(stats, trace.tokens, vocab),
                      notes=result.notes if result is not None else base.notes), len(reused)


def deleted_tokens(tokens_a: tuple[str, ...], tokens_b: tuple[str, ...]) -> list[tuple[int, str]]:
    """(position in A, token) of A's tokens that have no counterpart in B (:func:`align_positions`)."""
    paired = {a for a, _ in align_positions(tokens_a, tokens_b)}
    return [(p, t) for p, t in enumerate(tokens_a) if p not in paired]


def lens_frame(stats: LensStats, tokens: tuple[str, ...], vocab: list[str]) -> pd.DataFrame:
    """One row per (layer, position), with the *first* target's rank and probability."""
    n_layer, n_pos, _ = stats.top_ids.shape
    layer = np.repeat(stats.layers, n_pos)
    position = np.tile(stats.positions, n_layer)
    top_ids = stats.top_ids.reshape(n_layer * n_pos, -1)
    top_probs = stats.top_probs.reshape(n_layer * n_pos, -1)
    target_ids = np.tile(stats.target_ids[:, 0], n_layer)
    return pd.DataFrame({
        "layer": layer,
        "position": position,
        "token": [tokens[p] for p in position],
        "top_tokens": [[vocab[i] for i in row] for row in top_ids],
        "top_probs": [[round(float(p), 6) for p in row] for row in top_probs],
        "target": [vocab[i] for i in target_ids],
        "target_rank": stats.target_rank[..., 0].reshape(-1),
        "target_prob": stats.target_prob[..., 0].reshape(-1).astype(float),
        "entropy": stats.entropy.reshape(-1).astype(float),
        "kl_to_final": stats.kl_to_final.reshape(-1).astype(float),
    })


def targets_frame(stats: LensStats, tokens: tuple[str, ...], vocab: list[str]) -> pd.DataFrame:
    """One row per (layer, position, target): rank and probability of every target."""
    n_layer, n_pos, n_t = stats.target_rank.shape
    grid = np.stack(np.meshgrid(np.arange(n_layer), np.arange(n_pos), np.arange(n_t), indexing="ij"), -1)
    li, ci, ti = grid.reshape(-1, 3).T
    pi = stats.positions[ci]
    return pd.DataFrame({
        "layer": stats.layers[li],
        "position": pi,
        "token": [tokens[p] for p in pi],
        "target": [vocab[stats.target_ids[c, t]] for c, t in zip(ci, ti)],
        "target_rank": stats.target_rank[li, ci, ti],
        "target_prob": stats.target_prob[li, ci, ti].astype(float),
    })


def align_positions(tokens_a: tuple[str, ...], tokens_b: tuple[str, ...]) -> list[tuple[int, int]]:
    """Pairs (pos_a, pos_b) of positions that correspond between two tokenised prompts.

    Equal runs pair up; replaced runs of equal length pair one to one; the last positions (where the
    next token is predicted) always pair.
    """
    pairs: list[tuple[int, int]] = []
    matcher = difflib.SequenceMatcher(a=list(tokens_a), b=list(tokens_b), autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal" or (op == "replace" and a1 - a0 == b1 - b0):
            pairs.extend(zip(range(a0, a1), range(b0, b1)))
    last = (len(tokens_a) - 1, len(tokens_b) - 1)
    if last not in pairs:
        pairs = [p for p in pairs if p[0] != last[0] and p[1] != last[1]] + [last]
    return pairs


def compare_frames(a: LensResult, b: LensResult) -> pd.DataFrame:
    """What changed from prompt A to prompt B at each layer and every position of B that ``b`` holds.

    Columns: layer, position_a, position_b, token_a, token_b, top1_a, top1_b, top1_changed, status,
    target_prob_a, target_prob_b, delta_target_prob, delta_entropy, delta_kl_to_final.
    Positions of B pair with A's by :func:`align_positions`; a position of B without a partner in A (inserted, or part
    of a rewritten run of another length) keeps its row with status "inserted", no A values (NaN, position_a -1) and
    no deltas; paired rows are "same" or "changed" (top-1). Both results must use the same targets (the default final
    top-1 targets are per prompt) and hold A's partners of B's positions.
    """
    partner = {pb: pa for pa, pb in align_positions(a.tokens, b.tokens)}
    keep = ["layer", "position", "token", "top_tokens", "target_prob", "entropy", "kl_to_final"]
    fb = b.frame[keep].rename(columns=lambda c: c if c == "layer" else f"{c}_b")
    fb["position_a"] = fb.position_b.map(lambda p: partner.get(int(p), -1)).astype(int)
    fa = a.frame[keep].rename(columns=lambda c: c if c == "layer" else f"{c}_a")
    out = fb.merge(fa, on=["layer", "position_a"], how="left")
    missing = (out.position_a >= 0) & out.token_a.isna()
    if missing.any():
        raise ValueError("The base result lacks positions paired with the edited prompt's: compute A at the partners "
                         "of B's positions.")
    inserted = out.position_a < 0
    out["top1_b"] = out.pop("top_tokens_b").str[0]
    out["top1_a"] = out.pop("top_tokens_a").map(lambda t: t[0] if isinstance(t, list) else None)
    out["top1_changed"] = (~inserted) & (out.top1_a != out.top1_b)
    out["status"] = np.where(inserted, "inserted", np.where(out.top1_changed, "changed", "same"))
    out["delta_target_prob"] = out.target_prob_b - out.target_prob_a
    out["delta_entropy"] = out.pop("entropy_b") - out.pop("entropy_a")
    out["delta_kl_to_final"] = out.pop("kl_to_final_b") - out.pop("kl_to_final_a")
    cols = ["layer", "position_a", "position_b", "token_a", "token_b", "top1_a", "top1_b", "top1_changed", "status",
            "target_prob_a", "target_prob_b", "delta_target_prob", "delta_entropy", "delta_kl_to_final"]
    return out[cols].sort_values(["layer", "position_b"]).reset_index(drop=True)


def first_layer_reaching(frame: pd.DataFrame, position: int, rank: int = 1) -> int | None:
    """Earliest layer at which the target's rank is <= ``rank`` (None if never)."""
    sub = frame[(frame.position == position) & (frame.target_rank <= rank)]
    return int(sub.layer.min()) if len(sub) else None


def settling_layer(frame: pd.DataFrame, position: int, rank: int = 1) -> int | None:
    """Earliest layer from which the target stays at rank <= ``rank`` through the last layer."""
    sub = frame[frame.position == position].sort_values("layer")
    ok = (sub.target_rank <= rank).to_numpy()
    if not ok.size or not ok[-1]:
        return None
    bad = np.flatnonzero(~ok)
    return int(sub.layer.iloc[bad[-1] + 1]) if bad.size else int(sub.layer.iloc[0])


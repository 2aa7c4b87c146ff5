"""Attention -> MLP, part 1b: max-activating prompts from a corpus scan, trimmed to the shortest suffix
keeping > 0.8 of the activation."""

from __future__ import annotations

import hashlib
from collections.abc import Generator
from dataclasses import dataclass

import pandas as pd
import torch

from core.analyses.attention_mlp.params import TRIM_KEEP, ScanParams  # torch-free settings (the CLI reads them)
from core.analyses.attention_mlp.passes import content_ids, model_input, neuron_acts
from core.layers import block_of_layer, layer_of_block
from core.model.batch import iter_site_captures
from core.model.session import ModelSession
from core.progress import Progress, no_progress

VERIFY_PROBES = 3  # extra probes checking the binary search's monotonicity assumption
DEFAULT_REJECT = frozenset({" SolidGoldMagikarp", " TheNitromeFan", " davidjl", " petertodd", " RandomRedditor"})


def corpus_windows(session: ModelSession, texts: list[str], window: int) -> list[list[int]]:
    """Each text's tokens (no special tokens) cut into consecutive windows of at most ``window`` tokens."""
    if window < 2:
        raise ValueError("The window must hold at least 2 tokens.")
    out = []
    for text in texts:
        ids = content_ids(session, text)
        out.extend(ids[i:i + window] for i in range(0, len(ids), window) if len(ids[i:i + window]) >= 2)
    if not out:
        raise ValueError("The corpus produced no windows of at least 2 tokens.")
    return out


def corpus_hash(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", errors="replace") + b"\x00")
    return digest.hexdigest()[:16]


def scan_top_windows(session: ModelSession, windows: list[list[int]], neurons: pd.DataFrame, top: int,
                     progress: Progress = no_progress) -> pd.DataFrame:
    """All chosen neurons at once, the windows in padded batches -> [neuron x top] rows: block (1-based), neuron,
    activation, window, position (content index of the max position in that window; one entry per window).

    ``groups`` and the passes index blocks from 0 (``b``); the rows carry the frame's 1-based ``block``."""
    groups = {block_of_layer(block): torch.tensor(sorted(frame.neuron.unique()))
              for block, frame in neurons.groupby("block")}
    peaks = window_peaks(session, windows, groups, lambda f, m: progress(0.9 * f, m))
    best = {b: (torch.full((len(idx), 0), float("-inf")), torch.zeros((len(idx), 0), dtype=torch.long))
            for b, idx in groups.items()}
    positions = {b: torch.zeros((len(idx), 0), dtype=torch.long) for b, idx in groups.items()}
    for w in range(len(windows)):  # in window order, as the peaks were once read one window at a time
        for b, idx in groups.items():
            peak_values, peak_positions = peaks[b][0][w], peaks[b][1][w]  # [n], [n]
            vals = torch.cat([best[b][0], peak_values[:, None]], dim=1)
            wins = torch.cat([best[b][1], torch.full((len(idx), 1), w)], dim=1)
            pos = torch.cat([positions[b], peak_positions[:, None]], dim=1)
            keep = vals.topk(min(top, vals.shape[1]), dim=1).indices
            best[b] = (vals.gather(1, keep), wins.gather(1, keep))
            positions[b] = pos.gather(1, keep)
    progress(1.0, f"scanned {len(windows)} windows")
    rows = []
    for b, idx in groups.items():
        for i, neuron in enumerate(idx.tolist()):
            for k in range(best[b][0].shape[1]):
                rows.append({"block": layer_of_block(b), "neuron": neuron, "activation": float(best[b][0][i, k]),
                             "window": int(best[b][1][i, k]), "position": int(positions[b][i, k])})
    return pd.DataFrame(rows)


def window_peaks(session: ModelSession, windows: list[list[int]], groups: dict[int, torch.Tensor],
                 progress: Progress = no_progress) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """0-based block -> ([window, n] each chosen neuron's max activation over the window's content positions,
    [window, n] the content position of that max), from batched passes (:mod:`core.model.batch`)."""
    inputs = [model_input(session, ids) for ids in windows]  # ([pos] BOS + content ids, BOS length)
    values = {b: torch.zeros((len(windows), len(idx))) for b, idx in groups.items()}
    where = {b: torch.zeros((len(windows), len(idx)), dtype=torch.long) for b, idx in groups.items()}
    for done, (w, acts) in enumerate(iter_site_captures(session, [full for full, _ in inputs], "mlp_act",
                                                        list(groups)), 1):
        offset = inputs[w][1]
        for b, idx in groups.items():
            peak = acts[b][offset:, idx].max(dim=0)  # [n] over content positions
            values[b][w], where[b][w] = peak.values, peak.indices
        if done % 10 == 0 or done == len(windows):
            progress(done / len(windows), f"scanning window {done}/{len(windows)}")
    return {b: (values[b], where[b]) for b in groups}


@dataclass(frozen=True)
class Trim:
    """The shortest kept suffix ``ids[start:]`` of a prompt truncated at its max-activating token."""

    start: int
    activation: float  # at the last token of the kept suffix
    original: float  # at the last token of the untrimmed prompt
    method: str  # "binary", "linear" (asked for, or a verification probe contradicted monotonicity), "none" (not
    # positive: left whole), "too long" (no suffix of at most max_tokens keeps enough: left whole, to be dropped)
    passes: int


TRIM_VERSION = "2"  # 2: the search stays within the last max_tokens tokens; the original is the scan's activation


def trim_prompt(session: ModelSession, ids: list[int], block_index: int, neuron: int, keep: float = TRIM_KEEP,
                method: str = "binary", checks: int = VERIFY_PROBES, max_tokens: int | None = None,
                original: float | None = None) -> Trim:
    """[pos] content ids ending at the max-activating token -> the shortest suffix whose activation at its
    last token is > keep x the original, for ``neuron`` of 0-based block ``block_index``.

    ``method="linear"`` scans suffixes shortest first (exact by definition). ``"binary"`` searches the start
    assuming longer suffixes keep more, then verifies that assumption with ``checks`` extra probes spread
    over the shorter suffixes; if any of them also passes, it falls back to the linear scan.

    ``max_tokens``: a prompt whose kept suffix is longer is dropped afterwards (RESEARCH.md §5a.3), so the search
    only looks at the last ``max_tokens`` starts: when the ``max_tokens``-token suffix does not keep enough (and
    the verification probes agree), the prompt comes back whole as "too long". For every prompt that is kept this
    is the same suffix the uncapped search finds (the linear scan's exactly; the binary search's wherever its
    monotonicity assumption holds), at a fraction of the work: the uncapped search probes suffixes up to the
    window's length (1,024 tokens at the paper's settings). ``original``: the activation of the untrimmed prompt
    when the caller has it (the corpus scan read it in the same causal context); otherwise one more pass reads it.

    One pass per probe; :func:`trim_prompts` trims many prompts of one neuron with their probes batched."""
    steps = _trim_steps(len(ids), keep, method, checks, max_tokens, original)
    value = None  # the first send must be None (it starts the search)
    while True:
        try:
            start = steps.send(value)
        except StopIteration as done:
            return done.value
        value = float(neuron_acts(session, ids[start:], [block_index])[block_index][-1, neuron])


def trim_prompts(session: ModelSession, prompts: list[tuple[list[int], float | None]], block_index: int,
                 neuron: int, keep: float = TRIM_KEEP, method: str = "binary", checks: int = VERIFY_PROBES,
                 max_tokens: int | None = None) -> list[Trim]:
    """:func:`trim_prompt` for each (ids, original) of one neuron, the searches in lockstep: each round's probes
    (one per unfinished prompt) go through one batched pass (:func:`core.model.batch.iter_site_captures`, cut
    short after the neuron's block). The same searches as one at a time; the activations agree up to the
    kernels' rounding (a padded batch against a single sequence)."""
    searches = [_trim_steps(len(ids), keep, method, checks, max_tokens, original) for ids, original in prompts]
    out: list[Trim | None] = [None] * len(prompts)
    pending = {}
    for i, search in enumerate(searches):
        try:
            pending[i] = next(search)
        except StopIteration as done:  # settled without a pass (a given original that is not positive)
            out[i] = done.value
    while pending:
        order = list(pending)
        seqs = [model_input(session, prompts[i][0][pending[i]:])[0] for i in order]
        values = [0.0] * len(order)
        for k, got in iter_site_captures(session, seqs, "mlp_act", [block_index]):
            values[k] = float(got[block_index][-1, neuron])
        following = {}
        for i, value in zip(order, values):
            try:
                following[i] = searches[i].send(value)
            except StopIteration as done:
                out[i] = done.value
        pending = following
    return out  # type: ignore[return-value]  # every search ends with its Trim


def _trim_steps(n: int, keep: float, method: str, checks: int, max_tokens: int | None,
                original: float | None) -> Generator[int, float, Trim]:
    """The search of :func:`trim_prompt` for an n-token prompt: yields each suffix start it needs, is sent that
    suffix's activation at its last token, and returns the :class:`Trim`."""
    if not 0 < keep < 1:
        raise ValueError("The kept fraction must lie strictly between 0 and 1.")
    if method not in ("binary", "linear"):
        raise ValueError("The trimming method is 'binary' or 'linear'.")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError("The length cap needs at least 1 token.")
    probes: dict[int, float] = {}

    def act(start: int) -> Generator[int, float, float]:
        if start not in probes:
            probes[start] = yield start
        return probes[start]

    original = (yield from act(0)) if original is None else float(original)
    if original <= 0:  # nothing positive to keep: leave the prompt whole
        return Trim(0, original, original, "none", len(probes))
    threshold = keep * original
    floor = n - max_tokens if max_tokens is not None and n > max_tokens else 0  # the longest suffix that may be kept

    def contradicted(shorter: range) -> Generator[int, float, bool]:
        """Does any probe spread over ``shorter`` (shortest first) keep enough, against the monotone reading?"""
        step = max(1, len(shorter) // checks) if checks else len(shorter) + 1
        for start in list(shorter)[::-1][::step][:checks]:
            if (yield from act(start)) > threshold:
                return True
        return False

    if method == "binary":
        if floor and not (yield from act(floor)) > threshold:  # monotone: no suffix within the cap keeps enough
            if not (yield from contradicted(range(floor + 1, n))):
                return Trim(0, original, original, "too long", len(probes))
        else:
            lo, hi = floor, n  # act(lo) > threshold; the empty suffix (hi = n) is not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if (yield from act(mid)) > threshold else (lo, mid)
            if not (yield from contradicted(range(lo + 2, n))):  # lo + 1 = hi was probed by the search
                return Trim(lo, probes.get(lo, original), original, "binary", len(probes))  # lo = 0: the whole
    for start in range(n - 1, floor - 1, -1):  # shortest first, within the cap: exact
        if (yield from act(start)) > threshold:
            return Trim(start, probes[start], original, "linear", len(probes))
    if floor:
        return Trim(0, original, original, "too long", len(probes))
    # only when the caller's original differs from this pass's reading of the whole prompt (float rounding)
    return Trim(0, (yield from act(0)), original, "linear", len(probes))


def trimmed_rows(session: ModelSession, windows: list[list[int]], tops: pd.DataFrame,
                  neurons: pd.DataFrame, params: ScanParams, progress: Progress) -> list[dict]:
    """Each top window of each neuron trimmed (:func:`trim_prompts`: one neuron's prompts batched together)."""
    vocab = session.vocab_strings()
    tokens = {(r.block, r.neuron): (r.token_id, r.token) for r in neurons.itertuples()}
    rows, total, done = [], max(1, len(tops)), 0
    ordered = tops.sort_values(["block", "neuron", "activation"], ascending=[True, True, False])
    for (block, neuron), group in ordered.groupby(["block", "neuron"], sort=False):
        progress(done / total, f"trimming prompts {done + 1}-{done + len(group)} of {total} (block {block}, "
                               f"neuron {neuron})")
        tops_of = list(group.itertuples())
        ids_of = [windows[top.window][:top.position + 1] for top in tops_of]
        trims = trim_prompts(session, [(ids, top.activation) for ids, top in zip(ids_of, tops_of)],
                             block_of_layer(int(block)), int(neuron), params.keep, params.trim,
                             max_tokens=params.max_tokens)
        token_id, token = tokens[(block, neuron)]
        for top, ids, trim in zip(tops_of, ids_of, trims):
            kept = ids[trim.start:]
            rows.append({"block": top.block, "neuron": top.neuron, "token_id": token_id, "token": token,
                         "activation": trim.original, "trimmed_activation": trim.activation,
                         "kept_fraction": trim.activation / trim.original if trim.original else float("nan"),
                         "n_tokens": len(kept), "window": top.window, "position": top.position,
                         "start": trim.start, "trim_method": trim.method, "ids": list(kept),
                         "text": "".join(vocab[i] for i in kept), "last_token": vocab[kept[-1]]})
        done += len(group)
    return rows


def select_prompts(rows: list[dict], params: ScanParams) -> pd.DataFrame:
    """Drop prompts longer than ``max_tokens`` after trimming or not positive, and repeated trimmed texts;
    keep the first ``top`` per neuron (highest activation first)."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame[(frame.n_tokens <= params.max_tokens) & (frame.activation > 0)]
    frame = frame.drop_duplicates(subset=["block", "neuron", "text"])  # repeated passages would weigh twice
    frame = frame.groupby(["block", "neuron"], group_keys=False).head(params.top).copy()
    frame["prompt"] = frame.groupby(["block", "neuron"]).cumcount()
    return frame.reset_index(drop=True)


def compute_prompts(session: ModelSession, neurons: pd.DataFrame, texts: list[str], params: ScanParams,
                    progress: Progress = no_progress) -> pd.DataFrame:
    """Tidy [neuron x prompt] table of trimmed max-activating prompts (no cache; the cached form is
    :func:`core.analyses.attention_mlp.pipeline.max_activating_prompts`)."""
    if neurons.empty:
        raise ValueError("No neurons to scan: choose other blocks or a larger count.")
    windows = corpus_windows(session, texts, params.window)
    tops = scan_top_windows(session, windows, neurons, params.top,
                            lambda f, m: progress(0.7 * f, m))
    rows = trimmed_rows(session, windows, tops, neurons, params, lambda f, m: progress(0.7 + 0.3 * f, m))
    progress(1.0, "done")
    return select_prompts(rows, params)

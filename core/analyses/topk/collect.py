"""Top-k order: what one forward pass per text yields, collected once and cached per text.

For each text (bundled Wikipedia evaluation split, truncated to ``max_tokens`` and counted when it is):
one trace (texts not yet cached run in padded batches, :mod:`core.model.batch`); the logit lens's top-k ids
and probabilities at every block output (chunked over layers, never [layer, pos, vocab] at once; the last
layer's top-k is the model's own output's top-k); the cosine between consecutive pre-norm block outputs.
Residuals are not stored: probes re-trace.
"""

from __future__ import annotations

import hashlib
import random
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from core.analyses.topk.params import DEFAULT_K, DEFAULT_MAX_TOKENS, TopkParams, check_params
from core.analyses.topk.saturation import saturation_layers, slot_match_from_top_ids
from core.cache import cached, results_cache, stable_key
from core.data import evaluation_texts, wikipedia_paragraphs
from core.layers import layers_of_block_array
from core.lenses.stats import logit_lens_top_k
from core.model.batch import iter_traces
from core.model.session import ModelSession, Trace
from core.progress import Progress, no_progress

VERSION = "1"  # of the per-text records (bump when what is collected changes)
_text_locks: dict[tuple, threading.Lock] = {}
_text_locks_guard = threading.Lock()


@dataclass(frozen=True)
class TextRecord:
    """One text's lens readout, indexed by block b = 0..L-1 (the lens after block b+1 = residual layer b+1).

    input_ids [pos]; top_ids [layer, pos, k] (best first); top_probs [layer, pos, k];
    cosine [layer, pos] cos(block output l0, the residual before block l0+1) (l0 = 0 compares with the
    embeddings); first_pos = 1 when position 0 is a BOS token (excluded from the analyses)."""

    input_ids: np.ndarray
    top_ids: np.ndarray
    top_probs: np.ndarray
    cosine: np.ndarray
    n_tokens_original: int
    first_pos: int

    @property
    def truncated(self) -> bool:
        return self.n_tokens_original > len(self.input_ids)

    @property
    def n_layers(self) -> int:
        return self.top_ids.shape[0]

    def saturation(self) -> np.ndarray:
        """[pos, k] saturation layers of the analysed positions (BOS excluded), as 0-based block indices."""
        return saturation_layers(slot_match_from_top_ids(self.top_ids))[self.first_pos:]


@lru_cache(maxsize=4)
def _pool() -> tuple[str, ...]:
    return tuple(dict.fromkeys(evaluation_texts(wikipedia_paragraphs())))  # unique, in corpus order


def topk_texts(n: int, seed: int, offset: int = 0) -> list[str]:
    """Texts ``offset .. offset+n-1`` of a seeded shuffle of the bundled Wikipedia evaluation split (so
    different offsets give disjoint texts)."""
    if n < 1:
        raise ValueError("Use at least one text (n >= 1).")
    pool = list(_pool())
    if offset + n > len(pool):
        raise ValueError(f"Only {len(pool)} evaluation paragraphs are bundled; ask for at most "
                         f"{len(pool) - offset} texts here.")
    order = random.Random(seed).sample(pool, len(pool))
    return order[offset:offset + n]


def text_ids(session: ModelSession, text: str, max_tokens: int) -> tuple[torch.Tensor, int]:
    """-> ([pos] ids truncated to max_tokens and the model's context, the untruncated length)."""
    ids = session.tokenizer(text, return_tensors="pt").input_ids[0]
    if ids.numel() < 2:
        raise ValueError("A text must have at least two tokens.")
    return ids[:min(max_tokens, session.max_tokens)], int(ids.numel())


def lens_top_k(session: ModelSession, trace: Trace, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Logit lens on every block output -> (top_ids [layer, pos, k], top_probs [layer, pos, k]): one
    [tile, vocab] product at a time (:func:`core.lenses.stats.logit_lens_top_k`)."""
    ids, probs = logit_lens_top_k(session.adapter, trace.resid[1:], k, with_probs=True)
    return ids, probs


def consecutive_cosine(resid: torch.Tensor) -> np.ndarray:
    """[layer+1, pos, d_model] pre-norm residuals -> [layer, pos]: cos(resid[l0+1], resid[l0])."""
    a, b = resid[1:].double(), resid[:-1].double()
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-12)
    return cos.float().numpy()


def _bos_offset(session: ModelSession, ids: torch.Tensor) -> int:
    bos = getattr(session.tokenizer, "bos_token_id", None)
    added = session.tokenizer("a", add_special_tokens=True).input_ids
    return int(bos is not None and len(added) > 0 and added[0] == bos and int(ids[0]) == bos)


def compute_record(session: ModelSession, text: str, k: int, max_tokens: int) -> TextRecord:
    ids, n_original = text_ids(session, text, max_tokens)
    return record_from_trace(session, session.trace(ids), n_original, k)


def record_from_trace(session: ModelSession, trace: Trace, n_original: int, k: int) -> TextRecord:
    """One text's :class:`TextRecord` from its trace (one-at-a-time or batched: the same reductions)."""
    ids = trace.input_ids
    top_ids, top_probs = lens_top_k(session, trace, k)
    return TextRecord(input_ids=ids.numpy(), top_ids=top_ids.astype(np.int32), top_probs=top_probs,
                      cosine=consecutive_cosine(trace.resid), n_tokens_original=n_original,
                      first_pos=_bos_offset(session, ids))


def _record_parts(session: ModelSession, text: str, k: int, max_tokens: int) -> dict:
    """The disk-cache key parts of one text's record."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return {"model": session.identity(), "text": digest, "k": k, "max_tokens": max_tokens, "version": VERSION}


def collect_text(session: ModelSession, text: str, k: int = DEFAULT_K,
                 max_tokens: int = DEFAULT_MAX_TOKENS) -> TextRecord:
    """:func:`compute_record`, disk-cached per (model, text, k, max_tokens)."""

    check_params(k, max_tokens)
    parts = _record_parts(session, text, k, max_tokens)
    with _text_lock(tuple(parts.values())):  # sections running at once in the app share one computation
        return cached("topk-text", lambda: compute_record(session, text, k, max_tokens), **parts)


def _text_lock(key: tuple) -> threading.Lock:
    with _text_locks_guard:
        return _text_locks.setdefault(key, threading.Lock())


def collect(session: ModelSession, texts: list[str], k: int = DEFAULT_K, max_tokens: int = DEFAULT_MAX_TOKENS,
            progress: Progress = no_progress, label: str = "") -> list[TextRecord]:
    """One :class:`TextRecord` per text, with progress: cached records are read, the others computed from
    padded batched passes (:func:`core.model.batch.iter_traces`) and stored, under the texts' locks (taken in
    key order, so sections collecting overlapping texts at once share the work and never deadlock)."""
    check_params(k, max_tokens)
    parts = [_record_parts(session, text, k, max_tokens) for text in texts]
    keys = [stable_key("topk-text", **p) for p in parts]
    store = results_cache()
    found: dict[str, TextRecord] = {}
    missing = sorted({key: tuple(p.values()) for key, p in zip(keys, parts) if store.get(key) is None}.items())
    with ExitStack() as stack:
        for _key, lock_key in missing:
            stack.enter_context(_text_lock(lock_key))
        for key in keys:  # re-read under the locks: another section may have just stored them
            hit = store.get(key, default=None)
            if hit is not None:
                found[key] = hit
        todo = {key: text for key, text in zip(keys, texts) if key not in found}
        if todo:
            found.update(_compute_records(session, todo, k, max_tokens, progress, label))
    progress(1.0, f"{label}{len(texts)} texts read")
    return [found[key] for key in keys]


def _compute_records(session: ModelSession, todo: dict[str, str], k: int, max_tokens: int, progress: Progress,
                     label: str) -> dict[str, TextRecord]:
    """cache key -> the record of its text, from batched traces; each record is stored as it is made."""
    store, keys = results_cache(), list(todo)
    inputs = [text_ids(session, todo[key], max_tokens) for key in keys]  # ([pos] ids, untruncated length)
    out: dict[str, TextRecord] = {}
    for i, trace in iter_traces(session, [ids for ids, _n in inputs]):
        out[keys[i]] = record_from_trace(session, trace, inputs[i][1], k)
        store.set(keys[i], out[keys[i]])
        progress(len(out) / (len(keys) + 1), f"{label}text {len(out)}/{len(keys)} computed")
    return out


def pooled_saturation(records: list[TextRecord]) -> tuple[np.ndarray, pd.DataFrame]:
    """-> (sat [pos, k] over all texts' analysed positions, index frame: text, position)."""
    sats, index = [], []
    for t, record in enumerate(records):
        sat = record.saturation()
        sats.append(sat)
        index.append(pd.DataFrame({"text": t, "position": np.arange(record.first_pos, record.first_pos + len(sat))}))
    return np.concatenate(sats), pd.concat(index, ignore_index=True)


def text_counts(records: list[TextRecord]) -> dict[str, int]:
    """How many texts and tokens went in, and how many texts were truncated."""
    return {"texts": len(records), "truncated_texts": sum(r.truncated for r in records),
            "tokens": int(sum(len(r.input_ids) for r in records)),
            "tokens_dropped_by_truncation": int(sum(r.n_tokens_original - len(r.input_ids) for r in records))}


def slot_view(session: ModelSession, record: TextRecord) -> pd.DataFrame:
    """One text -> rows: position, token, layer (residual layer 1..L: the lens after block ``layer``), slot
    (1-based rank), held (slot holds its final token), layer_token (the lens's token in that slot), final_token,
    saturation_layer (residual layer; 1 = held after every block)."""
    vocab = session.vocab_strings()
    match = slot_match_from_top_ids(record.top_ids)  # [block, pos, k]
    sat = saturation_layers(match)  # [pos, k] block indices
    n_layers, n_pos, k = record.top_ids.shape
    layer, pos, slot = np.meshgrid(np.arange(n_layers), np.arange(n_pos), np.arange(k), indexing="ij")
    frame = pd.DataFrame({"position": pos.ravel(), "layer": layers_of_block_array(layer.ravel()),
                          "slot": slot.ravel() + 1,
                          "held": match.ravel(), "layer_token": [vocab[i] for i in record.top_ids.ravel()],
                          "final_token": [vocab[i] for i in record.top_ids[-1][pos.ravel(), slot.ravel()]],
                          "saturation_layer": layers_of_block_array(sat[pos.ravel(), slot.ravel()])})
    frame.insert(1, "token", [vocab[int(i)] for i in record.input_ids[frame.position]])
    return frame[frame.position >= record.first_pos].reset_index(drop=True)


def records_for(session: ModelSession, params: TopkParams, progress: Progress = no_progress,
                offset: int = 0, n: int | None = None, label: str = "") -> list[TextRecord]:
    """The collected records of texts ``offset .. offset+n`` (default: the first params.n)."""
    texts = topk_texts(params.n if n is None else n, params.seed, offset)
    return collect(session, texts, params.k, params.max_tokens, progress, label)

"""A neuron's vocabulary distribution beta (Lim & Lauw 2023, four modes) and its word pools.

Modes, for the 0-based block index ``layer`` (the app's 1-based block ``layer + 1``, core/layers.py; the page
and the CLI give the 1-based block, converted once in core.analyses.topics.cached_runs):

* ``hi-c``  x = the MLP neuron's output direction (row n of the down-projection as [d_mlp, d_model], plus
            the down-projection's bias where it has one, e.g. GPT-2's c_proj), run through blocks
            layer+1 .. L-1 as a one-position sequence, then beta = W_U Norm_f(h);
* ``hi-i``  the same x, no block: beta = W_U Norm_f(x);
* ``lo-c``  x = e_d (residual dimension d entering block ``layer``), run through blocks layer .. L-1;
* ``lo-i``  x = e_d through block ``layer`` only.

A one-position sequence attends only to itself; rotary embeddings at position 0 are the identity, and no
token or position embedding is added. Neurons are processed in batches; only the top and bottom ``tau``
token ids of each are kept, never [neurons, vocab] for a whole layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.analyses.topics.corpus import CorpusCounts
from core.analyses.topics.params import DEFAULT_TAU, MODES
from core.layers import layer_of_block
from core.model.session import ModelSession
from core.progress import Progress, no_progress

SHRINK_STEP = 50
BATCH = 256


def check_unit(session: ModelSession, mode: str, block_index: int, unit: int | None = None) -> int:
    """ValueError for an unknown mode or an out-of-range block (0-based ``block_index``, reported 1-based) or unit;
    returns the number of units."""
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; choose from {', '.join(MODES)}.")
    n_layers = session.adapter.n_layers
    if not 0 <= block_index < n_layers:
        shown = layer_of_block(block_index) if block_index >= 0 else block_index + 1  # a negative index as given
        raise ValueError(f"Block {shown} does not exist: this model has blocks 1..{n_layers} "
                         "(1-based: block l writes layer l).")
    n_units = session.adapter.d_mlp if mode.startswith("hi") else session.adapter.d_model
    if unit is not None and not 0 <= unit < n_units:
        kind = "MLP neurons" if mode.startswith("hi") else "residual dimensions"
        raise ValueError(f"Unit {unit} does not exist: this model has {n_units} {kind} (0..{n_units - 1}).")
    return n_units


def injected(session: ModelSession, mode: str, layer: int, units: torch.Tensor) -> torch.Tensor:
    """[n] unit ids -> [n, d_model] the vector written into the residual stream."""
    adapter = session.adapter
    if mode.startswith("lo"):
        return torch.eye(adapter.d_model)[units]
    weight = adapter.neuron_out_weight(layer).detach().float().cpu()  # [d_mlp, d_model]
    bias = getattr(adapter.neurons(layer), "bias", None)
    x = weight[units]
    return x + bias.detach().float().cpu() if bias is not None else x


def run_blocks(session: ModelSession, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """[n, d_model] -> [n, d_model]: blocks start..stop-1 applied to n one-position sequences
    (:meth:`core.model.arch.Adapter.run_blocks`: what each block's forward needs comes from the architecture record)."""
    h = x[:, None, :].to(session.device, next(session.model.parameters()).dtype)  # [n, pos=1, d_model]
    return session.adapter.run_blocks(h, start, stop)[:, 0].float()


def blocks_for(mode: str, layer: int, n_layers: int) -> tuple[int, int]:
    """The [start, stop) blocks a mode runs."""
    return {"hi-c": (layer + 1, n_layers), "hi-i": (0, 0), "lo-c": (layer, n_layers),
            "lo-i": (layer, layer + 1)}[mode]


def vocab_logits(session: ModelSession, mode: str, layer: int, units: torch.Tensor) -> torch.Tensor:
    """[n] unit ids -> [n, vocab] beta (logits of the unembedding)."""
    check_unit(session, mode, layer)
    start, stop = blocks_for(mode, layer, session.adapter.n_layers)
    with session.lock, torch.no_grad():
        h = run_blocks(session, injected(session, mode, layer, units), start, stop)
        h = h.to(session.device, next(session.model.parameters()).dtype)
        return session.adapter.unembed(session.adapter.final_norm(h)).float().cpu()


def extremes(session: ModelSession, mode: str, layer: int, units: list[int], tau: int = DEFAULT_TAU,
             batch: int = BATCH, progress: Progress = no_progress) -> tuple[np.ndarray, np.ndarray]:
    """-> (top [n, tau], bottom [n, tau]) token ids: highest beta first, lowest beta first."""
    if not 1 <= tau <= session.adapter.d_vocab:
        raise ValueError(f"tau must lie in 1..{session.adapter.d_vocab} (the vocabulary size).")
    top, bottom = [], []
    for start in range(0, len(units), batch):
        chunk = torch.tensor(units[start:start + batch], dtype=torch.long)
        beta = vocab_logits(session, mode, layer, chunk)  # [b, vocab]
        top.append(beta.topk(tau, dim=1).indices.numpy())
        bottom.append((-beta).topk(tau, dim=1).indices.numpy())
        progress(min(1.0, (start + len(chunk)) / len(units)), f"{start + len(chunk)} of {len(units)} units")
    return np.concatenate(top), np.concatenate(bottom)


def random_extremes(vocab: int, tau: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The random baseline: a seeded permutation of the vocabulary in place of beta -> ([tau], [tau])."""
    order = np.random.default_rng(seed).permutation(vocab)
    return order[:tau], order[::-1][:tau]


# -- tokens -> words ----------------------------------------------------------------------------------
def _context_tokens(tokenizer, words: list[str], prefix: str = "the") -> list[list[int]]:
    """Each word's tokens as it appears mid-sentence: tokens of "the word" minus those of "the"."""
    head = tokenizer(prefix, add_special_tokens=False).input_ids
    full = tokenizer([f"{prefix} {w}" for w in words], add_special_tokens=False).input_ids
    alone = tokenizer([f" {w}" for w in words], add_special_tokens=False).input_ids
    return [ids[len(head):] if ids[:len(head)] == head else fallback for ids, fallback in zip(full, alone)]


@dataclass(frozen=True, eq=False)
class WordMap:
    """How tokens map to corpus words: the single-token rule and the multi-token rule.

    token_word  [vocab] corpus word id of the token (leading space stripped, lower-cased), or -1
    word_tokens [V, max_len] each corpus word's mid-sentence tokens, padded with ``vocab`` (always "in");
                ``vocab + 1`` marks a word without usable tokens (never in a pool)
    """

    token_word: np.ndarray
    word_tokens: np.ndarray
    n_vocab: int
    scheme: str
    multi_token_share: float  # share of corpus words the tokenizer splits into several tokens

    def word_ranks(self, ranked: np.ndarray) -> np.ndarray:
        """[tau] token ids, best first -> [V] the cut (1-based) at which each word enters the pool, or inf.

        A word enters when all of its tokens are within the cut (multi-token rule) or when any single token
        maps to it (single-token rule, which also catches capitalised variants such as " Paris")."""
        token_rank = np.full(self.n_vocab + 2, np.inf)  # n_vocab: padding (always in); n_vocab + 1: never
        token_rank[self.n_vocab] = 0.0
        token_rank[ranked] = np.arange(1, len(ranked) + 1)
        multi = token_rank[self.word_tokens].max(axis=1)  # [V]
        single = np.full(len(self.word_tokens), np.inf)
        words = self.token_word[ranked]
        hit = words >= 0
        np.minimum.at(single, words[hit], np.arange(1, len(ranked) + 1)[hit])
        return np.minimum(multi, single)


def word_map(session: ModelSession, counts: CorpusCounts) -> WordMap:
    """Build the token <-> word maps of this tokenizer and corpus vocabulary (about a second)."""
    index = counts.index()
    n_vocab = session.adapter.d_vocab
    strings = session.vocab_strings()
    token_word = np.full(n_vocab, -1, dtype=np.int64)
    for t, text in enumerate(strings[:n_vocab]):
        word = text[1:] if text[:1] in (" ", "Ġ", "▁") else text
        token_word[t] = index.get(word.lower(), -1)
    tokens = _context_tokens(session.tokenizer, [str(w) for w in counts.vocab])
    width = max(1, max(len(t) for t in tokens))
    word_tokens = np.full((len(tokens), width), n_vocab, dtype=np.int64)
    for i, ids in enumerate(tokens):
        ids = [t for t in ids if 0 <= t < n_vocab] or [n_vocab + 1]  # no usable token: never in a pool
        word_tokens[i, : len(ids)] = ids
    raw = session.tokenizer.convert_ids_to_tokens(list(range(min(n_vocab, len(session.tokenizer)))))
    marker = next((m for m in ("Ġ", "▁") if any(str(r).startswith(m) for r in raw)), "")
    scheme = {"Ġ": "byte-level BPE (leading-space marker Ġ)", "▁": "SentencePiece (leading-space marker ▁)"}.get(
        marker, "no leading-space marker")
    share = float(np.mean([len(t) > 1 for t in tokens])) if tokens else 0.0
    return WordMap(token_word, word_tokens, n_vocab, scheme, share)


def pool_from(wmap: WordMap, ranked: np.ndarray, tau: int,
              step: int = SHRINK_STEP) -> tuple[np.ndarray, np.ndarray, int]:
    """[tau] token ids best first -> (word ids [P] by entry rank, their ranks [P], the final cut).

    The cut starts at tau and shrinks by ``step`` while the pool holds more than tau words."""
    ranks = wmap.word_ranks(ranked)
    cut = len(ranked)
    while int((ranks <= cut).sum()) > tau and cut > step:
        cut -= step
    ids = np.flatnonzero(ranks <= cut)
    order = np.lexsort((ids, ranks[ids]))
    return ids[order], ranks[ids][order].astype(int), cut

"""Reference corpus for the Neuron topics analysis: window counts and NPMI (Lim & Lauw 2023, topic-metrics).

Documents are lower-cased and split into alphabetic words; the vocabulary is the ``vocab_size`` most
frequent words of at least two letters. Counting follows topic-metrics / Palmetto:

* boolean sliding windows of ``window`` (10) words over each document's *vocabulary-filtered* word sequence
  (a filtered document of at most ``window`` words is one window);
* ``c(w)`` = #windows containing w, ``c(a, b)`` = #windows containing both (a != b);
* ``N = sum_docs max(1, len_d - (window - 1))`` with ``len_d`` the *raw* document length in words (reference
  convention, kept for comparability even though windows run over the filtered sequence);
* ``p = c / N`` if ``c >= min_freq`` else 0, and
  ``NPMI(a, b) = log((p_ab + eps) / (p_a p_b)) / -log(p_ab + eps)`` with eps = 1e-12, 0 if p_a or p_b is 0.

Counts are stored sparsely (sorted pair codes ``a * V + b`` with a < b and their counts, as .npz read with
``allow_pickle=False``) under ``cache/topics/``, keyed by a hash of the corpus text and the parameters. Only
the pairs of a word pool are ever materialised as a matrix.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import sparse

from core.analyses.topics.params import DEFAULT_MIN_FREQ, DEFAULT_VOCAB_SIZE, WINDOW
from core.data import wikipedia_articles
from core.paths import cache_dir
from core.progress import Progress, no_progress
from core.validate import MAX_CORPUS_BYTES, text_folder

log = logging.getLogger(__name__)
COUNT_VERSION = "2"  # bump when counting changes: old cache files are then ignored
EPS = 1e-12
MIN_WORD_LEN = 2  # single letters ("s" of "it's", initials) are out of the vocabulary: they swamp pools
MAX_USER_BYTES = MAX_CORPUS_BYTES
_WORD = re.compile(r"[^\W\d_]+")
_CHUNK_WINDOWS = 60_000


@dataclass(frozen=True, eq=False)
class CorpusCounts:
    """Window counts of one corpus. vocab [V] words, word_counts [V], pair_codes / pair_counts [pairs]."""

    name: str
    vocab: np.ndarray  # [V] str, most frequent first
    word_counts: np.ndarray  # [V] int64: windows containing the word
    pair_codes: np.ndarray  # [pairs] int64, sorted: a * V + b with a < b
    pair_counts: np.ndarray  # [pairs] int64: windows containing both
    n_windows: int  # N (Palmetto convention, raw document lengths)
    n_docs: int
    n_words: int  # raw alphabetic words in the corpus
    window: int = WINDOW
    key: str = ""  # the cache file's stem: identifies corpus content and counting parameters

    @property
    def size(self) -> int:
        return len(self.vocab)

    def index(self) -> dict[str, int]:
        """word -> vocabulary id."""
        return _index(self)

    def describe(self) -> str:
        return (f"{self.name}: {self.n_docs:,} documents, {self.n_words:,} words, vocabulary {self.size:,}, "
                f"{self.n_windows:,} windows of {self.window}, {len(self.pair_codes):,} co-occurring pairs")


@lru_cache(maxsize=4)
def _index(counts: CorpusCounts) -> dict[str, int]:
    return {str(w): i for i, w in enumerate(counts.vocab)}


# -- documents ----------------------------------------------------------------------------------------
def words_of(text: str) -> list[str]:
    """Lower-cased alphabetic words of ``text`` (digits, punctuation and underscores split words)."""
    return _WORD.findall(text.lower())


def bundled_documents() -> list[str]:
    """The bundled Wikipedia sample, one document per article (markup stripped)."""

    return [text for _title, text in wikipedia_articles()]


def folder_documents(folder: str | Path, max_bytes: int = MAX_USER_BYTES) -> list[str]:
    """The .txt files under ``folder`` (recursively), one document per blank-line separated paragraph."""
    path = text_folder(str(folder), max_bytes)  # exists, is a folder, has .txt files, within max_bytes
    files = sorted(p for p in path.rglob("*.txt") if p.is_file())
    docs = []
    for file in files:
        text = file.read_bytes().decode("utf-8", errors="replace")
        docs += [block.strip() for block in re.split(r"\n\s*\n", text) if block.strip()]
    if sum(len(words_of(d)) for d in docs) < 1000:
        raise ValueError(f"The .txt files in {str(path)!r} hold fewer than 1,000 words: too little to count "
                         "co-occurrences. Add more text.")
    return docs


def corpus_documents(corpus: str) -> tuple[str, list[str]]:
    """("wikipedia" | a folder path) -> (display name, documents)."""
    if corpus in ("", "wikipedia", "bundled"):
        return "bundled Wikipedia sample (one document per article)", bundled_documents()
    return f"folder {corpus} (one document per paragraph)", folder_documents(corpus)


def content_hash(docs: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(doc.encode("utf-8", errors="replace"))
        digest.update(b"\x00")
    return digest.hexdigest()[:20]


# -- counting -----------------------------------------------------------------------------------------
def build_vocab(tokenised: Sequence[list[str]], vocab_size: int) -> list[str]:
    """The ``vocab_size`` most frequent words of at least MIN_WORD_LEN letters (ties alphabetical)."""
    freq: dict[str, int] = {}
    for words in tokenised:
        for w in words:
            if len(w) >= MIN_WORD_LEN:
                freq[w] = freq.get(w, 0) + 1
    ranked = sorted(freq.items(), key=lambda item: (-item[1], item[0]))
    return [w for w, _ in ranked[:vocab_size]]


def _windows(ids: np.ndarray, window: int) -> np.ndarray:
    """[n] filtered word ids -> [windows, window] (a short document: one row padded with -1)."""
    if len(ids) >= window:
        return sliding_window_view(ids, window)
    row = np.full((1, window), -1, dtype=np.int64)
    row[0, : len(ids)] = ids
    return row


def _dedupe_rows(values: np.ndarray) -> np.ndarray:
    """[rows, k] with -1 for nothing -> the values that are first of their kind in their row (flat)."""
    values = np.sort(values, axis=1)
    first = np.ones_like(values, dtype=bool)
    first[:, 1:] = values[:, 1:] != values[:, :-1]
    return values[first & (values >= 0)]


def _count_chunk(rows: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[windows, window] ids -> (word counts [V], unique pair codes, their counts) for these windows."""
    words = np.bincount(_dedupe_rows(rows), minlength=vocab_size)
    i, j = np.array(list(combinations(range(rows.shape[1]), 2))).T
    a, b = rows[:, i], rows[:, j]  # [windows, pairs]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    codes = np.where((lo >= 0) & (lo != hi), lo * vocab_size + hi, -1)
    codes, counts = np.unique(_dedupe_rows(codes), return_counts=True)
    return words, codes, counts


def _merge(codes: list[np.ndarray], counts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    all_codes = np.concatenate(codes) if codes else np.zeros(0, np.int64)
    all_counts = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    unique, inverse = np.unique(all_codes, return_inverse=True)
    return unique, np.bincount(inverse, weights=all_counts, minlength=len(unique)).astype(np.int64)


def count_corpus(docs: Sequence[str], name: str = "corpus", vocab_size: int = DEFAULT_VOCAB_SIZE,
                 window: int = WINDOW, progress: Progress = no_progress) -> CorpusCounts:
    """Documents -> :class:`CorpusCounts` (boolean sliding windows on the vocabulary-filtered words)."""
    if vocab_size < 2 or window < 2:
        raise ValueError("The vocabulary needs at least 2 words and the window at least 2.")
    tokenised = [words_of(d) for d in docs]
    vocab = build_vocab(tokenised, vocab_size)
    if len(vocab) < 2:
        raise ValueError("The corpus holds fewer than 2 distinct words.")
    index = {w: i for i, w in enumerate(vocab)}
    V = len(vocab)
    word_counts = np.zeros(V, np.int64)
    codes, counts, pending, n_pending = [], [], [], 0
    for d, words in enumerate(tokenised):
        ids = np.array([index[w] for w in words if w in index], dtype=np.int64)
        if len(ids):
            pending.append(_windows(ids, window))
            n_pending += len(pending[-1])
        if pending and (n_pending >= _CHUNK_WINDOWS or d == len(tokenised) - 1):
            w, c, n = _count_chunk(np.concatenate(pending), V)
            word_counts += w
            codes.append(c)
            counts.append(n)
            pending, n_pending = [], 0
            if len(codes) >= 8:
                merged = _merge(codes, counts)
                codes, counts = [merged[0]], [merged[1]]
            progress(0.95 * (d + 1) / len(tokenised), f"counted {d + 1:,} of {len(tokenised):,} documents")
    pair_codes, pair_counts = _merge(codes, counts)
    n_windows = int(sum(max(1, len(words) - (window - 1)) for words in tokenised))
    progress(1.0, "counted")
    return CorpusCounts(name=name, vocab=np.array(vocab), word_counts=word_counts, pair_codes=pair_codes,
                        pair_counts=pair_counts, n_windows=n_windows, n_docs=len(docs),
                        n_words=sum(len(w) for w in tokenised), window=window)


# -- disk cache ---------------------------------------------------------------------------------------
def _cache_file(digest: str, vocab_size: int, window: int) -> Path:
    return cache_dir() / "topics" / f"counts-v{COUNT_VERSION}-{digest}-V{vocab_size}-w{window}.npz"


def save_counts(counts: CorpusCounts, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, vocab=counts.vocab.astype(str), word_counts=counts.word_counts,
                        pair_codes=counts.pair_codes, pair_counts=counts.pair_counts,
                        meta=np.array([counts.n_windows, counts.n_docs, counts.n_words, counts.window]),
                        name=np.array(counts.name))
    tmp.replace(path)


def load_counts(path: Path) -> CorpusCounts:
    with np.load(path, allow_pickle=False) as data:
        n_windows, n_docs, n_words, window = (int(v) for v in data["meta"])
        return CorpusCounts(name=str(data["name"]), vocab=data["vocab"], word_counts=data["word_counts"],
                            pair_codes=data["pair_codes"], pair_counts=data["pair_counts"],
                            n_windows=n_windows, n_docs=n_docs, n_words=n_words, window=window)


_memory: dict[Path, CorpusCounts] = {}


def corpus_counts(corpus: str = "wikipedia", vocab_size: int = DEFAULT_VOCAB_SIZE, window: int = WINDOW,
                  progress: Progress = no_progress) -> CorpusCounts:
    """Counts of a corpus ("wikipedia" or a folder of .txt), counted once and cached on disk and in memory."""
    name, docs = corpus_documents(corpus)
    path = _cache_file(content_hash(docs), vocab_size, window)
    if path in _memory:
        return _memory[path]
    if path.is_file():
        try:
            _memory[path] = replace(load_counts(path), key=path.stem)
            return _memory[path]
        except (OSError, ValueError, KeyError) as err:
            log.warning("ignoring unreadable count cache %s (%s)", path, err)
    counts = replace(count_corpus(docs, name, vocab_size, window, progress), key=path.stem)
    save_counts(counts, path)
    _memory[path] = counts
    return counts


# -- NPMI ---------------------------------------------------------------------------------------------
def npmi_values(p_ab: np.ndarray, p_a: np.ndarray, p_b: np.ndarray) -> np.ndarray:
    """Element-wise NPMI with eps smoothing of the joint; 0 where a marginal is 0 (topic-metrics)."""
    joint = p_ab + EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.log(joint / (p_a * p_b)) / -np.log(joint)
    return np.where((p_a > 0) & (p_b > 0), value, 0.0)


@lru_cache(maxsize=4)
def _pair_csr(counts: CorpusCounts) -> sparse.csr_matrix:
    """[V, V] symmetric sparse window co-occurrence counts (built once per corpus, about a second)."""
    V = counts.size
    a, b = counts.pair_codes // V, counts.pair_codes % V
    values = np.r_[counts.pair_counts, counts.pair_counts]
    return sparse.csr_matrix((values, (np.r_[a, b], np.r_[b, a])), shape=(V, V))


def pair_count_matrix(counts: CorpusCounts, ids: np.ndarray) -> np.ndarray:
    """[P] distinct vocabulary ids -> [P, P] window co-occurrence counts (diagonal: the word's own count)."""
    ids = np.asarray(ids, dtype=np.int64)
    out = _pair_csr(counts)[ids][:, ids].toarray().astype(np.int64)  # [P, P]
    np.fill_diagonal(out, counts.word_counts[ids])
    return out


def npmi_matrix(counts: CorpusCounts, ids: np.ndarray, min_freq: int = DEFAULT_MIN_FREQ) -> np.ndarray:
    """[P] vocabulary ids -> [P, P] NPMI (diagonal set to 0: a word is not its own neighbour)."""
    if min_freq < 1:
        raise ValueError("The minimum frequency must be at least 1.")
    joint = pair_count_matrix(counts, ids).astype(np.float64)
    single = counts.word_counts[np.asarray(ids, dtype=np.int64)].astype(np.float64)
    N = float(counts.n_windows)
    p_ab = np.where(joint >= min_freq, joint / N, 0.0)
    p = np.where(single >= min_freq, single / N, 0.0)
    out = npmi_values(p_ab, p[:, None], p[None, :])
    np.fill_diagonal(out, 0.0)
    return out

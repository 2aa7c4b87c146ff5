"""Depth, frequency section: frequency buckets of the top-1 and decision flips per layer."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd

from core.analyses.depth.pos import MIN_PROMPT_CHARS
from core.analyses.depth.readout import readout
from core.cache import cached
from core.data import evaluation_texts, wikipedia_paragraphs
from core.lenses.base import Lens
from core.model.batch import last_residuals
from core.model.session import ModelSession
from core.progress import Progress, no_progress

BUCKETS: tuple[str, ...] = ("Top-10", "Top-100", "Top-1000", "Rest")


def frequency_buckets(counts: np.ndarray) -> np.ndarray:
    """[vocab] corpus counts -> [vocab] bucket names by frequency rank (1-10, 11-100, 101-1000, rest).

    Ties are broken by token id; tokens never seen are always "Rest".
    """
    order = np.lexsort((np.arange(len(counts)), -np.asarray(counts)))  # most frequent first
    rank = np.empty(len(counts), dtype=np.int64)
    rank[order] = np.arange(1, len(counts) + 1)
    names = np.array(BUCKETS, dtype=object)
    index = np.select([rank <= 10, rank <= 100, rank <= 1000], [0, 1, 2], 3)
    index[np.asarray(counts) == 0] = 3
    return names[index]


def bucket_shares(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows (example, layer, bucket, final_bucket) -> share of every bucket per column ("0".."L", "final")."""
    finals = rows.drop_duplicates("example")
    both = pd.concat([pd.DataFrame({"column": rows.layer.astype(str), "bucket": rows.bucket}),
                      pd.DataFrame({"column": "final", "bucket": finals.final_bucket})], ignore_index=True)
    columns = [str(layer) for layer in sorted(rows.layer.unique())] + ["final"]
    counts = pd.crosstab(both.column, both.bucket).reindex(index=columns, columns=list(BUCKETS), fill_value=0)
    shares = counts.div(counts.sum(axis=1), axis=0)
    out = pd.DataFrame({"column": np.repeat(columns, len(BUCKETS)), "bucket": list(BUCKETS) * len(columns),
                        "share": shares.to_numpy().ravel(), "count": counts.to_numpy().ravel()})
    out.insert(1, "layer", [np.nan if c == "final" else float(c) for c in out.column])
    return out


def flip_rates(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows (layer, bucket, guess, final) -> per (layer, bucket): share of guesses != final, n."""
    flips = rows.assign(flip=rows.guess != rows.final)
    out = flips.groupby(["layer", "bucket"], sort=True).agg(flip_rate=("flip", "mean"), n=("flip", "size"))
    return out.reset_index()


# -- frequency -----------------------------------------------------------------------------------------
def token_counts(session: ModelSession) -> np.ndarray:
    """[vocab] token counts of the bundled Wikipedia sample (all its prose paragraphs, both splits),
    tokenised with this model's tokenizer; stored in the disk cache."""

    def count() -> np.ndarray:
        counts = np.zeros(session.adapter.d_vocab, dtype=np.int64)
        for ids in session.tokenizer(wikipedia_paragraphs(), add_special_tokens=False).input_ids:
            np.add.at(counts, np.asarray(ids, dtype=np.int64), 1)
        return counts

    return cached("depth-token-counts", count, model=session.identity(), corpus="wikipedia-bundled")


def random_prefixes(n: int, seed: int, max_words: int = 120) -> list[str]:
    """``n`` Wikipedia paragraphs (evaluation split) cut at a random word, prefixes of >= 17 characters.

    The cut lies within the first ``max_words`` words (the paper cuts anywhere; this bounds the cost)."""

    rng = random.Random(seed)
    pool = [p for p in evaluation_texts(wikipedia_paragraphs()) if "\n" not in p and len(p) > 200]
    out = []
    for paragraph in rng.sample(pool, min(len(pool), 3 * n)):
        words = paragraph.split(" ")
        prefix = " ".join(words[: rng.randint(1, min(len(words) - 1, max_words))])
        if len(prefix) >= MIN_PROMPT_CHARS:
            out.append(prefix)
        if len(out) == n:
            break
    return out


def frequency_section(session: ModelSession, lens: Lens, n: int, seed: int = 42,
                      progress: Progress = no_progress) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """-> (rows: example, layer, guess(_token), bucket, final(_token), final_bucket; shares per (column, bucket);
    flip rates per (layer, bucket)). Buckets come from :func:`token_counts` (bundled Wikipedia sample)."""
    buckets = frequency_buckets(token_counts(session))
    prefixes = random_prefixes(n, seed)
    if not prefixes:
        raise ValueError("No Wikipedia prefix available; raise n.")
    frames, vocab = [], session.vocab_strings()
    resids = last_residuals(session, prefixes, lambda f, m: progress(0.5 * f, m))  # [layer+1, 1, d_model] each
    for k, resid in enumerate(resids):
        out = readout(lens, resid)
        frames.append(pd.DataFrame({"example": k, "layer": np.arange(len(out.guess)), "guess": out.guess,
                                    "guess_token": [vocab[int(i)] for i in out.guess],
                                    "bucket": buckets[out.guess], "final": out.final_id,
                                    "final_token": vocab[out.final_id], "final_bucket": buckets[out.final_id]}))
        progress(0.5 + 0.5 * (k + 1) / len(prefixes), f"Frequency: prefix {k + 1}/{len(prefixes)}")
    rows = pd.concat(frames, ignore_index=True)
    return rows, bucket_shares(rows), flip_rates(rows)

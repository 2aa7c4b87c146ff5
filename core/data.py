"""Text corpora: the ones bundled with installed packages, and the user's own files.

Bundled (inside the ``gensim`` wheel, real text, offline):
* ``wikipedia`` — 107 English Wikipedia articles (the 206 pages of the gensim file minus redirects; about 0.48M words after markup is stripped),
* ``lee`` — 300 news articles (Lee background corpus),
* ``polarity`` — 200 labelled movie-review sentences (Pang & Lee),
* ``questions-words`` — analogy relations (capital-world, currency, city-in-state, ...).

User files (text, JSONL with a ``text`` field, or CSV with a ``text`` column) are parsed as text only;
nothing is ever unpickled.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import json
import logging
import random
import re
from functools import lru_cache
from pathlib import Path

from core import atomic
from core.paths import cache_dir

log = logging.getLogger("layerscope")

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
CORPORA = {
    "wikipedia": "107 English Wikipedia articles (gensim test data, ~0.48M words)",
    "lee": "300 news articles (Lee background corpus, gensim test data)",
}
_MARKUP = re.compile(r"'{2,}")
_SPACES = re.compile(r"[ \t]+")


def _gensim_path(name: str) -> str:
    from gensim.test.utils import datapath  # heavy optional: gensim loads only when a bundled corpus is read

    return datapath(name)


def _clean_paragraphs(text: str, min_chars: int) -> list[str]:
    """Wiki text without markup -> prose paragraphs (headings, lists and tables dropped)."""
    out = []
    for block in text.split("\n\n"):
        block = _SPACES.sub(" ", _MARKUP.sub("", block)).strip()
        if len(block) < min_chars or block.startswith(("=", "*", "#", "{", "|", ":", ";")):
            continue
        lines = [line.strip() for line in block.split("\n") if line.strip() and not line.startswith("=")]
        paragraph = " ".join(lines)
        if len(paragraph) >= min_chars and not paragraph.upper().startswith("#REDIRECT"):
            out.append(paragraph)
    return out


@lru_cache(maxsize=1)
def wikipedia_articles() -> tuple[tuple[str, str], ...]:
    """(title, plain text) of the bundled articles; parsed once (about 5 s), then read from cache/."""
    stored = cache_dir() / "corpora" / "wikipedia.json"
    if stored.is_file():
        try:
            return tuple((t, x) for t, x in json.loads(stored.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as err:  # truncated or corrupted: extract it again
            log.warning("The stored corpus %s cannot be read (%s); extracting it again.", stored, err)
    # heavy optional: gensim loads only when a bundled corpus is read
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    articles = []
    with bz2.BZ2File(_gensim_path(WIKI_FILE)) as handle:
        for title, text, _pageid in extract_pages(handle, filter_namespaces=("0",)):
            plain = filter_wiki(text)
            if not plain.lstrip().upper().startswith("#REDIRECT"):
                articles.append((title, plain))
    atomic.write_text(stored, json.dumps(articles, ensure_ascii=False))
    return tuple(articles)


def wikipedia_paragraphs(min_chars: int = 200) -> list[str]:
    """Prose paragraphs of the bundled Wikipedia articles, in article order."""
    return [p for _title, text in wikipedia_articles() for p in _clean_paragraphs(text, min_chars)]


@lru_cache(maxsize=1)
def lee_documents() -> tuple[str, ...]:
    """The 300 Lee background news articles (one per line in the file)."""
    with open(_gensim_path("lee_background.cor"), encoding="utf-8", errors="replace") as handle:
        return tuple(line.strip() for line in handle if line.strip())


@lru_cache(maxsize=1)
def polarity_sentences() -> tuple[tuple[str, str], ...]:
    """(label, sentence) with label 'negative'/'positive'; the file is not UTF-8, decoded leniently."""
    raw = Path(_gensim_path("pang_lee_polarity.cor")).read_bytes().decode("utf-8", errors="replace")
    out = []
    for line in raw.splitlines():
        label, _, text = line.strip().partition(" ")
        if label in ("__label__neg", "__label__pos") and text:
            out.append(("negative" if label.endswith("neg") else "positive", text.strip()))
    return tuple(out)


@lru_cache(maxsize=1)
def relation_pairs() -> dict[str, tuple[tuple[str, str], ...]]:
    """Relation name -> unique (subject, object) pairs from questions-words.txt (e.g. capital-world)."""
    relations: dict[str, dict[tuple[str, str], None]] = {}
    current = None
    with open(_gensim_path("questions-words.txt"), encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.strip()
            if line.startswith(":"):
                current = line[1:].strip()
                relations[current] = {}
            elif current and line:
                a, b, c, d = line.split()
                relations[current][(a, b)] = None
                relations[current][(c, d)] = None
    return {name: tuple(pairs) for name, pairs in relations.items()}


def corpus_texts(name: str) -> list[str]:
    """Texts of a bundled corpus by name (see :data:`CORPORA`)."""
    if name == "wikipedia":
        return wikipedia_paragraphs()
    if name == "lee":
        return list(lee_documents())
    raise ValueError(f"Unknown corpus {name!r}; choose from {', '.join(CORPORA)} or upload a file.")


def parse_user_texts(data: bytes, filename: str, max_texts: int = 100_000) -> list[str]:
    """Texts from an uploaded .txt (blank-line separated), .jsonl ('text') or .csv ('text') file."""
    if not data:
        raise ValueError(f"{filename} is empty.")
    text = data.decode("utf-8", errors="replace")
    if "\x00" in text[:4096]:
        raise ValueError(f"{filename} looks binary, not text. Upload .txt, .jsonl or .csv.")
    suffix = Path(filename).suffix.lower()
    if suffix == ".jsonl":
        texts = _jsonl_texts(text, filename)
    elif suffix == ".csv":
        texts = _csv_texts(text, filename)
    else:
        texts = [block.strip() for block in re.split(r"\n\s*\n", text) if block.strip()]
    if not texts:
        raise ValueError(f"{filename} holds no text.")
    return texts[:max_texts]


def _jsonl_texts(text: str, filename: str) -> list[str]:
    texts = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{filename}, line {number}: not valid JSON ({err.msg}).") from err
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ValueError(f"{filename}, line {number}: expected an object with a string field 'text'.")
        texts.append(record["text"])
    return texts


def _csv_texts(text: str, filename: str) -> list[str]:
    try:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "text" not in reader.fieldnames:
            raise ValueError(f"{filename}: needs a column named 'text' (found {reader.fieldnames}).")
        return [row["text"] for row in reader if row.get("text")]
    except csv.Error as err:
        raise ValueError(f"{filename}: not a readable CSV ({err}).") from err


def _bucket(text: str) -> int:
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:8], 16) % 10


def lens_training_texts(texts: list[str]) -> list[str]:
    """The tenth of a corpus (by a stable hash) reserved for fitting lenses; never used to evaluate."""
    return [t for t in texts if _bucket(t) == 0]


def evaluation_texts(texts: list[str]) -> list[str]:
    """The other nine tenths: what analyses sample from, so learned lenses are scored on unseen text."""
    return [t for t in texts if _bucket(t) != 0]


def sample_texts(texts: list[str], n: int, seed: int, max_words: int = 250, max_chars: int = 2000) -> list[str]:
    """``n`` texts drawn without replacement after the Patchscopes length filter (< max_words, < max_chars)."""
    pool = [t for t in texts if len(t.split(" ")) < max_words and len(t) < max_chars]
    if not pool:
        raise ValueError("No text passes the length filter (fewer than 250 words and 2000 characters).")
    rng = random.Random(seed)
    return rng.sample(pool, min(n, len(pool)))

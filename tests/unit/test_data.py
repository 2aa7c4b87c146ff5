"""Corpora: the bundled ones load offline; user files parse as text or fail with a clear message."""

from __future__ import annotations

import pytest

from core import data


def test_bundled_corpora_are_real_text() -> None:
    paragraphs = data.wikipedia_paragraphs()
    assert len(paragraphs) > 1000
    assert any(p.startswith("Anarchism is a political philosophy") for p in paragraphs)
    assert not any("'''" in p or p.startswith("==") for p in paragraphs)
    assert len(data.lee_documents()) == 300
    labels = {label for label, _ in data.polarity_sentences()}
    assert labels == {"negative", "positive"} and len(data.polarity_sentences()) == 200
    assert ("Paris", "France") in data.relation_pairs()["capital-common-countries"]


def test_training_and_evaluation_texts_do_not_overlap() -> None:
    texts = data.corpus_texts("wikipedia")
    train, evaluation = data.lens_training_texts(texts), data.evaluation_texts(texts)
    assert not set(train) & set(evaluation)
    assert len(train) + len(evaluation) == len(texts)
    assert 0.05 < len(train) / len(texts) < 0.15


def test_sample_texts_filters_and_is_seeded() -> None:
    texts = ["short text"] * 3 + ["x " * 300] + ["y" * 2500] + [f"text {i}" for i in range(20)]
    a = data.sample_texts(texts, 10, seed=0)
    assert a == data.sample_texts(texts, 10, seed=0) and a != data.sample_texts(texts, 10, seed=1)
    assert all(len(t) < 2000 and len(t.split(" ")) < 250 for t in a)
    with pytest.raises(ValueError, match="length filter"):
        data.sample_texts(["z" * 3000], 1, 0)


@pytest.mark.parametrize("name,content,expected", [
    ("a.txt", b"first text\n\nsecond\ntext\n\n\n", ["first text", "second\ntext"]),
    ("a.jsonl", b'{"text": "one"}\n\n{"text": "two", "id": 3}\n', ["one", "two"]),
    ("a.csv", b"id,text\n1,hello world\n2,\"with, comma\"\n", ["hello world", "with, comma"]),
    ("latin.txt", "caf\xe9".encode("latin-1"), ["caf\ufffd"]),
])
def test_user_files_parse(name: str, content: bytes, expected: list[str]) -> None:
    assert data.parse_user_texts(content, name) == expected


@pytest.mark.parametrize("name,content,message", [
    ("empty.txt", b"", "empty"),
    ("blank.txt", b"\n\n  \n", "no text"),
    ("bad.jsonl", b'{"text": "ok"}\n{not json\n', "line 2"),
    ("field.jsonl", b'{"body": "x"}\n', "'text'"),
    ("nocol.csv", b"a,b\n1,2\n", "column named 'text'"),
    ("binary.txt", b"\x00\x01\x02PK\x03\x04", "binary"),
])
def test_bad_user_files_get_clear_messages(name: str, content: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        data.parse_user_texts(content, name)

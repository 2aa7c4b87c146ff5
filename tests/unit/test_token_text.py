"""Token text a researcher can tell apart (core.model.token_text): byte tokens that are part of a character show
their bytes instead of "�"; every other token keeps its decoded text."""

from __future__ import annotations

from tokenizers import pre_tokenizers

from core.model.token_text import byte_level_alphabet, readable_token_texts, token_bytes


def test_the_byte_level_alphabet_is_the_tokenizers_librarys() -> None:
    alphabet = byte_level_alphabet()
    assert sorted(alphabet.values()) == list(range(256))  # one character per byte
    assert set(alphabet) == set(pre_tokenizers.ByteLevel.alphabet())  # the reference implementation's characters
    assert alphabet["Ġ"] == 0x20 and alphabet["Ċ"] == 0x0A and alphabet["A"] == 0x41


def test_token_bytes_reads_both_spellings() -> None:
    assert token_bytes("<0xE2>") == b"\xe2"  # SentencePiece byte fallback
    assert token_bytes("Ġà¨") == b" \xe0\xa8"  # byte-level BPE: a space and two bytes of a three-byte character
    assert token_bytes("▁Paris") is None  # SentencePiece's space marker is no byte spelling
    assert token_bytes("") is None


class _Spelling:
    """A stand-in tokenizer that spells tokens as given."""

    def __init__(self, raw: list[str]) -> None:
        self.raw = raw

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.raw[i] for i in ids]


def test_only_partial_characters_change() -> None:
    raw = ["Ġcat", "Ġà¨", "ï¿½", "<0xE2>", "Ã©", "weird"]
    decoded = [" cat", " \ufffd", "\ufffd", "\ufffd", "é", "\ufffd"]
    out = readable_token_texts(_Spelling(raw), decoded)
    assert out == [" cat",  # a whole token: unchanged
                   " \\xe0\\xa8",  # part of a character: its bytes
                   "\ufffd",  # the token that is U+FFFD itself (bytes EF BF BD, valid UTF-8): unchanged
                   "\\xe2",  # a byte-fallback token
                   "é",
                   "\ufffd"]  # neither spelling: left as decoded


def test_the_tiny_tokenizers_byte_tokens_become_distinct(tiny_tokenizer) -> None:
    n = len(tiny_tokenizer)
    decoded = tiny_tokenizer.batch_decode([[i] for i in range(n)])
    out = readable_token_texts(tiny_tokenizer, decoded)
    partial = [i for i, d in enumerate(decoded) if "\ufffd" in d]
    assert len(partial) > 1 and len({decoded[i] for i in partial}) == 1  # all "�" before
    assert len({out[i] for i in partial}) == len(partial)  # each its own text now
    assert all(out[i] == decoded[i] for i in range(n) if i not in set(partial))
    ids = tiny_tokenizer("東京", add_special_tokens=False).input_ids  # the tiny vocabulary has no CJK merges
    assert "".join(out[i] for i in ids) == "\\xe6\\x9d\\xb1\\xe4\\xba\\xac"  # the six UTF-8 bytes, in order

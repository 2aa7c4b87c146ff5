"""Token text a researcher can tell apart: byte-level tokenizers have tokens that are only part of a character's
UTF-8 bytes (an emoji or a CJK character split over two tokens). Decoded alone each of them is U+FFFD "�", so the
top-k lists and the heatmap showed several different tokens as the same "�". Here such a token shows its bytes
instead, as Python writes them: " \\xe5\\x88" (a space, then two bytes of a three-byte character); the valid part of
a token stays text ("é\\xe2"). Every other token keeps its decoded text exactly.

The bytes come from the tokenizer's own token string: byte-level BPE (GPT-2, Llama 3, SmolLM2, Qwen) spells each
byte as one printable character, a SentencePiece byte-fallback token is spelled ``<0xE2>``. A token in neither
spelling keeps its decoded text."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Sequence

REPLACEMENT = "\ufffd"
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@lru_cache(maxsize=1)
def byte_level_alphabet() -> dict[str, int]:
    """Character -> byte of byte-level BPE's alphabet: bytes that are printable Latin-1 characters spell themselves
    ('!'..'~', '¡'..'¬', '®'..'ÿ'); the other 68 bytes (controls, space, soft hyphen) take the characters from
    U+0100 on, in byte order."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    alphabet, shifted = {chr(b): b for b in printable}, 0
    for b in range(256):
        if b not in alphabet.values():
            alphabet[chr(0x100 + shifted)] = b
            shifted += 1
    return alphabet


def token_bytes(raw: str) -> bytes | None:
    """The bytes a token string (``convert_ids_to_tokens``) spells, or None when it is in neither spelling."""
    match = _BYTE_TOKEN.fullmatch(raw)
    if match:
        return bytes([int(match.group(1), 16)])
    alphabet = byte_level_alphabet()
    if raw and all(c in alphabet for c in raw):
        return bytes(alphabet[c] for c in raw)
    return None


def readable_token_texts(tokenizer: Any, decoded: Sequence[str]) -> list[str]:
    """``decoded`` (every id's text decoded alone, id = index) with each partial-character token's text replaced by
    its bytes (see the module docstring). A token whose bytes are valid UTF-8 keeps its decoded text, "�" included
    when the token is that character."""
    out = list(decoded)
    suspects = [i for i, text in enumerate(decoded) if REPLACEMENT in text]
    if not suspects:
        return out
    raws = tokenizer.convert_ids_to_tokens(suspects)
    for i, raw in zip(suspects, raws):
        data = token_bytes(raw) if isinstance(raw, str) else None
        if data is None:
            continue
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            out[i] = data.decode("utf-8", errors="backslashreplace")
    return out

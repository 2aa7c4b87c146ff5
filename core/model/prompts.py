"""Prompts as the model reads them: chat templates, the one BOS rule, and the exact token table.

The BOS rule (:func:`encode`, what :meth:`core.model.session.ModelSession.tokenize` and so every page use): a prompt
is tokenized with the tokenizer's own special-token behaviour (``add_special_tokens=True``: a tokenizer that puts a
BOS token first, as Llama's do, puts it first here too; one that adds none, as GPT-2's and SmolLM2's, adds none), except
that a text that already begins with the BOS token's text (a chat template that writes ``<|begin_of_text|>`` itself)
is not given a second BOS. :data:`BOS_RULE` says this in one sentence for the app.

Torch-free apart from what the tokenizer returns; never imports Streamlit.
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

BOS_RULE = ("Tokens: the tokenizer's own special tokens are added (a BOS first only where the tokenizer adds one), "
            "but a text that already starts with the BOS token's text is never given a second BOS.")
"""The BOS rule in one sentence (shown under the sidebar's token table)."""

TOKEN_TABLE_COLUMNS = ["position", "id", "token", "special"]


def has_chat_template(tokenizer: Any) -> bool:
    """True when ``tokenizer`` carries a chat template (an instruction-tuned model's role markers)."""
    return bool(getattr(tokenizer, "chat_template", None))


def chat_prompt(tokenizer: Any, text: str, system: str | None = None) -> str:
    """``text`` as one user turn followed by the assistant's header, as the model's chat template writes it
    (``apply_chat_template(..., tokenize=False, add_generation_prompt=True)``): the prompt an assistant answers.
    ``system``: a system turn first (None: the template's own default, if it has one). ValueError for a model
    without a chat template, or an empty text."""
    if not has_chat_template(tokenizer):
        raise ValueError("This model's tokenizer has no chat template (it is not a chat model): analyse the prompt "
                         "as typed, or pick an instruction-tuned model.")
    if text is None or not text.strip():
        raise ValueError("The prompt is empty: type the user's message to wrap as a chat turn.")
    messages = ([{"role": "system", "content": system}] if system is not None else []) + \
        [{"role": "user", "content": text}]
    wrapped = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(wrapped, str):  # a template that returns token ids or a batch: not one we can show as text
        raise ValueError("This model's chat template did not return text.")
    return wrapped


def bos_id(tokenizer: Any) -> int | None:
    """The tokenizer's BOS token id, or None."""
    value = getattr(tokenizer, "bos_token_id", None)
    return None if value is None else int(value)


def encode(tokenizer: Any, text: str) -> list[int]:
    """``text`` -> token ids under the one BOS rule (module docstring): the tokenizer's own special tokens, but no
    second BOS before a text that starts with the BOS token's text."""
    ids = list(tokenizer(text, add_special_tokens=True).input_ids)
    bos, bos_text = bos_id(tokenizer), getattr(tokenizer, "bos_token", None)
    if bos is not None and bos_text and text.startswith(str(bos_text)) and len(ids) >= 2 \
            and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]  # the tokenizer prepended its BOS to the text's own
    return ids


def special_ids(tokenizer: Any) -> set[int]:
    """Ids of every special token: BOS, EOS, PAD, UNK, role markers and any other added token marked special."""
    ids = {int(i) for i in (getattr(tokenizer, "all_special_ids", None) or ()) if i is not None}
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            ids.add(int(value))
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    ids.update(int(i) for i, token in decoder.items() if getattr(token, "special", False))
    return ids


def visible(text: str) -> str:
    """A token's text with its whitespace visible (the app's convention: ' ' -> '␣', newline -> '\\n', tab ->
    '\\t'; an empty string -> '(empty)')."""
    if text == "":
        return "(empty)"
    return text.replace(" ", "␣").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def token_table(session: Any, ids: Sequence[int] | Any) -> pd.DataFrame:
    """The exact tokens the model reads: one row per position with its id, its decoded text (whitespace visible) and
    whether it is a special token (BOS, EOS, role markers, any added special token)."""
    ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
    vocab = session.vocab_strings()
    special = special_ids(session.tokenizer)
    return pd.DataFrame({
        "position": range(len(ids)),
        "id": ids,
        "token": [visible(vocab[i]) if 0 <= i < len(vocab) else f"<id {i}>" for i in ids],
        "special": [i in special for i in ids],
    }, columns=TOKEN_TABLE_COLUMNS)

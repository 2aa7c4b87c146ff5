"""Chat prompts, the one BOS rule and the token table, on the tiny tokenizer (as is, and made to add a BOS and to
carry a chat template with role markers)."""

from __future__ import annotations

import pytest
from tokenizers import processors

from conftest import build_tiny_model, build_tiny_tokenizer
from core.model.loading import ModelSpec
from core.model.prompts import (BOS_RULE, TOKEN_TABLE_COLUMNS, chat_prompt, encode, has_chat_template, special_ids,
                                token_table, visible)
from core.model.session import ModelSession

BOS = "<|endoftext|>"  # the tiny tokenizer's BOS (and EOS), id 0
TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start|>{{ m['role'] }}\n{{ m['content'] }}<|end|>{% endfor %}"
            "{% if add_generation_prompt %}<|start|>assistant\n{% endif %}")
"""A Llama-3-like template: it writes the BOS text itself, then role markers."""


@pytest.fixture
def chat_tokenizer():
    """The tiny tokenizer made to put a BOS first (as Llama's do) and to carry a chat template whose role markers
    are added special tokens."""
    tok = build_tiny_tokenizer()
    tok._tokenizer.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, 0)])
    tok.add_special_tokens({"additional_special_tokens": ["<|start|>", "<|end|>"]})
    tok.chat_template = TEMPLATE
    return tok


def test_plain_prompts_tokenize_as_before(make_session, tiny_tokenizer) -> None:
    """The tiny tokenizer adds no BOS: session.tokenize is the tokenizer's own output, unchanged."""
    session = make_session("gpt2")
    for text in ("The capital of France is", " Paris", "a\nb\tc", f"{BOS}The cat"):
        assert session.tokenize(text).tolist() == tiny_tokenizer(text).input_ids
    assert session.tokenize(f"{BOS}The cat").tolist()[0] == 0  # the text's own BOS is kept


def test_a_tokenizer_that_adds_bos_adds_it_once(chat_tokenizer) -> None:
    tok = chat_tokenizer
    plain = encode(tok, "The cat")
    assert plain[0] == 0 and plain[1] != 0  # the tokenizer's own BOS
    assert tok(f"{BOS}The cat").input_ids[:2] == [0, 0]  # the tokenizer alone would double it
    assert encode(tok, f"{BOS}The cat") == plain  # the rule: the text's BOS is the only one
    assert encode(tok, f"{BOS}{BOS}The cat")[:3] == [0, 0, tok("The cat", add_special_tokens=False).input_ids[0]]
    assert encode(tok, f" {BOS}The cat")[0] == 0  # the rule reads the text's very start only


def test_chat_prompt_wraps_a_user_turn(chat_tokenizer) -> None:
    tok = chat_tokenizer
    assert has_chat_template(tok)
    assert chat_prompt(tok, "Hi") == f"{BOS}<|start|>user\nHi<|end|><|start|>assistant\n"
    assert chat_prompt(tok, "Hi", system="Be brief.") == \
        f"{BOS}<|start|>system\nBe brief.<|end|><|start|>user\nHi<|end|><|start|>assistant\n"
    ids = encode(tok, chat_prompt(tok, "Hi"))
    assert ids.count(0) == 1 and ids[0] == 0  # no double BOS
    start, end = tok.convert_tokens_to_ids(["<|start|>", "<|end|>"])
    assert {start, end} <= special_ids(tok) and ids.count(start) == 2 and ids.count(end) == 1
    with pytest.raises(ValueError, match="empty"):
        chat_prompt(tok, "  ")


def test_a_model_without_a_template_says_so(tiny_tokenizer) -> None:
    assert not has_chat_template(tiny_tokenizer)
    with pytest.raises(ValueError, match="no chat template"):
        chat_prompt(tiny_tokenizer, "Hi")


def test_token_table_marks_special_tokens_and_shows_whitespace(chat_tokenizer) -> None:
    tok = chat_tokenizer
    session = ModelSession(build_tiny_model("llama", len(tok)), tok, ModelSpec(source="tiny-chat"))
    ids = session.tokenize(chat_prompt(tok, "Hi there"))
    table = token_table(session, ids)
    assert list(table.columns) == TOKEN_TABLE_COLUMNS
    assert table.position.tolist() == list(range(len(ids))) and table.id.tolist() == ids.tolist()
    special = table[table.special]
    assert set(special.token) == {BOS, "<|start|>", "<|end|>"}
    assert not table[~table.special].token.str.contains("<|", regex=False).any()
    assert "\\n" in table.token.tolist() and any(t.startswith("␣") for t in table.token)
    assert visible("") == "(empty)" and visible(" a\n") == "␣a\\n"
    assert "second BOS" in BOS_RULE


def test_invisible_only_names_what_a_prompt_that_draws_nothing_holds() -> None:
    from ui.sidebar import invisible_only

    assert invisible_only("") == "" and invisible_only("a") == "" and invisible_only("\u200bx\u202e") == ""
    assert invisible_only("\u202e") == "U+202E RIGHT-TO-LEFT OVERRIDE"
    assert invisible_only(" \n\t") == "U+0020 SPACE, U+000A LINE FEED, U+0009 TAB"
    assert invisible_only("\u200b\u200c\u200d\u2060\ufeff\u200b").endswith("and 2 more")  # repeats counted once

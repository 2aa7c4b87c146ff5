"""The rendered-text scanner finds each glitch the issue names and passes clean text."""

from __future__ import annotations

import pytest
from text_scan import problems_in  # tests/app/text_scan.py: pytest puts this file's folder on the path


@pytest.mark.parametrize("text", [
    "random nan … U = nan", "the 1st..2th token", "10.0 kept positions", "1000.0 permutations",
    "**surprisal of the answer, −log p_lens(y*) (logitscope), nats**", "a leftover \\*\\*bold\\*\\* pair",
])
def test_glitches_are_found(text: str) -> None:
    assert problems_in(text), text


@pytest.mark.parametrize("text", [
    "**Bold** claim — holds (0.120, 95 % CI 0.050 to 0.190, n = 40)", "y\\* is the model's top-1", "ranks 1–5 …",
    "10 kept positions of 12.5 %", "see `code`", "a path a/nan/b", "ℓ\\*(k) = first layer", "*italic*",
    "precision@1 = 1.0 at the last layer", "a mean of 2.0 nats",
])
def test_clean_text_passes(text: str) -> None:
    assert not problems_in(text), (text, problems_in(text))

"""Scan the text a page rendered (AppTest) for formatting glitches a reader would stumble on.

Flags: ``nan`` / ``NaN`` shown as a value; two dots in a row that are not an ellipsis ("1st..2th"); a count printed
as a float ("10.0 kept positions", "1000.0 permutations"); markdown that does not render as meant (a symbol's star
such as "y*" or "k*" turning the text after it italic; a leftover ``**`` or backtick after rendering).
"""

from __future__ import annotations

import re
from typing import Iterable

from markdown_it import MarkdownIt

_MD = MarkdownIt("commonmark")
NAN = re.compile(r"(?<![\w/])(nan|NaN)(?![\w/])")
DOTS = re.compile(r"(?<![.…])\.\.(?![.…/])")
FLOAT_COUNT = re.compile(r"(?<![\d.=<>≤≥≈] )(?<![\d.])\d+\.0 (?!(?:at|in|of|to|for|vs|and|or|nats|bits|s)\b)(?=[a-z])")
"""An integer printed with ".0" before a word ("10.0 kept positions"); a value after "=" or before a preposition or
unit ("p@1 = 1.0 at the last layer") is a measurement, not a count."""
TAG = re.compile(r"<[^>]+>")


def _rendered(source: str) -> tuple[str, str]:
    """(html, plain text) of a markdown source."""
    html = _MD.render(source)
    return html, TAG.sub("", html)


def problems_in(source: str, markdown: bool = True) -> list[str]:
    """Every glitch in one rendered element's source text (``markdown``: the element renders markdown)."""
    found: list[str] = []
    html, plain = _rendered(source) if markdown else ("", source)
    for pattern, what in ((NAN, "nan shown as a value"), (DOTS, "two dots in a row"),
                          (FLOAT_COUNT, "a count printed as a float")):
        for match in pattern.finditer(plain):
            found.append(f"{what}: …{plain[max(0, match.start() - 30):match.end() + 30]}…")
    if markdown:
        for em in re.finditer(r"<em>(.*?)</em>", html, flags=re.S):
            inner = em.group(1)
            if re.search(r"\s", inner.strip()) or not inner.strip():  # a symbol star paired up across words
                found.append(f"text turned italic by stray stars/underscores: …{inner[:60]}…")
        if "**" in plain or "`" in plain:
            found.append(f"unrendered markdown: …{plain[:80]}…")
    return found


MARKDOWN_ELEMENTS = ("markdown", "caption", "info", "warning", "error", "success", "subheader", "header", "title")
PLAIN_ELEMENTS = ("text",)


def scan(at) -> list[str]:
    """All glitches in the text an AppTest run rendered (markdown-like elements and labels)."""
    found: list[str] = []
    for kind in MARKDOWN_ELEMENTS:
        for element in getattr(at, kind, []):
            value = getattr(element, "value", "")
            if isinstance(value, str):
                found += [f"{kind}: {p}" for p in problems_in(value)]
    for kind in PLAIN_ELEMENTS:
        for element in getattr(at, kind, []):
            value = getattr(element, "value", "")
            if isinstance(value, str):
                found += [f"{kind}: {p}" for p in problems_in(value, markdown=False)]
    for kind in ("expander", "tabs", "button", "checkbox", "toggle", "radio", "selectbox", "number_input",
                 "slider", "text_input", "text_area", "metric"):
        for element in getattr(at, kind, []):
            label = getattr(element, "label", "")
            if isinstance(label, str):
                found += [f"{kind} label: {p}" for p in problems_in(label)]
            if kind == "metric":
                value = getattr(element, "value", "")
                found += [f"metric value: {p}" for p in problems_in(str(value), markdown=False)]
    return found


def assert_clean_text(at, allowed: Iterable[str] = ()) -> None:
    """Fail listing every glitch (``allowed``: substrings of problems known to be fine)."""
    allowed = tuple(allowed)
    bad = [p for p in scan(at) if not any(a in p for a in allowed)]
    assert not bad, "rendered text glitches:\n" + "\n".join(bad)

"""Pluggable explanations of an attention head from its active / inactive examples, and the paper's
simulation score (balanced accuracy of Yes/No guesses on held-out examples).

An *explainer* is any callable ``(prompt: str) -> str``. Two come with Layerscope:

* :class:`ChatEndpoint` — any OpenAI-compatible ``/chat/completions`` endpoint the user configures (base URL,
  model name, API key from an environment variable or typed in). Off by default and never needed: nothing
  here runs unless the user asks. The key is never written to disk or logged; responses are cached under
  ``cache/explain`` keyed by URL, model and prompt (not the key).
* manual mode — the user writes the explanation and labels held-out examples; :func:`score_labels` scores
  those labels exactly as it scores a model's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from core import atomic
from core.paths import cache_dir

log = logging.getLogger(__name__)
Explainer = Callable[[str], str]
MAX_EXPLANATION_TOKENS = 200
MAX_TEST_EXAMPLES = 10


@dataclass(frozen=True)
class Example:
    """One trimmed prompt; ``active`` = the head is active on it (ground truth of the score)."""

    text: str
    active: bool


def render_example(example: Example, token: str) -> str:
    """The prompt with the neuron's token appended, as the explainer sees it."""
    return f"{example.text}[{token}]"


def explanation_prompt(token: str, head: str, active: Sequence[Example], inactive: Sequence[Example]) -> str:
    """The request for an explanation (wording our own; the structure follows the paper)."""
    lines = [
        "I am studying a neuron inside a language model that raises the probability of the next token "
        f"{token!r}. Attention head {head} sometimes writes strongly into that neuron and sometimes does not.",
        "Below are text snippets. Each ends with the token the model goes on to predict, shown in brackets.",
        "", "Snippets where the head IS strongly driving the neuron:",
        *[f"- {render_example(e, token)}" for e in active],
        "", "Snippets where the head is NOT driving the neuron:",
        *[f"- {render_example(e, token)}" for e in inactive],
        "", "In two or three sentences, describe what distinguishes the first group from the second: what in "
            "the earlier context makes this head contribute? Be concrete enough that someone could use your "
            "description to sort new snippets.",
    ]
    return "\n".join(lines)


def simulation_prompt(token: str, head: str, explanation: str, example: Example) -> str:
    """The Yes/No question asked for one held-out example."""
    return "\n".join([
        f"An attention head ({head}) in a language model helps predict the token {token!r}. A description of "
        "when it is active:", explanation.strip(), "",
        f"Snippet: {render_example(example, token)}", "",
        "Going only by the description, is the head active on this snippet? Answer with one word: Yes or No.",
    ])


def parse_yes_no(answer: str) -> bool | None:
    """'Yes' -> True, 'No' -> False (first word, punctuation and case ignored); anything else -> None."""
    words = answer.strip().split()
    first = words[0].strip(".,:;!\"'*").lower() if words else ""
    return {"yes": True, "no": False}.get(first)


@dataclass(frozen=True)
class Score:
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def tpr(self) -> float:
        return self.tp / (self.tp + self.fn)

    @property
    def tnr(self) -> float:
        return self.tn / (self.tn + self.fp)

    @property
    def balanced_accuracy(self) -> float:
        """(TPR + TNR) / 2: the paper's head explanation score."""
        return (self.tpr + self.tnr) / 2

    def as_row(self) -> dict:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn, "tpr": self.tpr, "tnr": self.tnr,
                "balanced_accuracy": self.balanced_accuracy}


def score_labels(predicted: Sequence[bool | None], truth: Sequence[bool]) -> Score | None:
    """Confusion counts of Yes/No guesses against the truth; None (skipped, as in the paper) when the
    truth has no positive or no negative. An unparseable guess (None) counts as a wrong answer."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} labels for {len(truth)} examples.")
    if all(truth) or not any(truth):
        return None
    tp = sum(p is True and t for p, t in zip(predicted, truth))
    fn = sum(p is not True and t for p, t in zip(predicted, truth))
    tn = sum(p is False and not t for p, t in zip(predicted, truth))
    fp = sum(p is not False and not t for p, t in zip(predicted, truth))
    return Score(tp, fp, tn, fn)


def split_examples(examples: Sequence[Example], seed: int = 0, max_test: int = MAX_TEST_EXAMPLES
                   ) -> tuple[list[Example], list[Example]]:
    """-> (examples shown to the explainer, held-out examples to score on, at most ``max_test``).
    Each class is split in half so both sides see active and inactive examples where possible."""
    rng = random.Random(seed)
    shown, held = [], []
    for flag in (True, False):
        group = [e for e in examples if e.active == flag]
        rng.shuffle(group)
        cut = (len(group) + 1) // 2
        shown += group[:cut]
        held += group[cut:]
    rng.shuffle(held)
    return shown, held[:max_test]


def explain_and_score(explainer: Explainer, token: str, head: str, examples: Sequence[Example],
                      seed: int = 0) -> tuple[str, Score | None, list[bool | None]]:
    """Ask ``explainer`` for an explanation from half the examples, then for Yes/No on the held-out half."""
    shown, held = split_examples(examples, seed)
    explanation = explainer(explanation_prompt(token, head, [e for e in shown if e.active],
                                               [e for e in shown if not e.active]))
    guesses = [parse_yes_no(explainer(simulation_prompt(token, head, explanation, e))) for e in held]
    return explanation, score_labels(guesses, [e.active for e in held]), guesses


class ChatEndpoint:
    """An OpenAI-compatible chat-completions endpoint as an explainer (temperature 0, cached replies)."""

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout: float = 60.0,
                 max_tokens: int = MAX_EXPLANATION_TOKENS) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("The endpoint's base URL must start with http:// or https://.")
        if not model.strip():
            raise ValueError("Name the model the endpoint should use.")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout, self.max_tokens = model.strip(), timeout, max_tokens
        self._key = api_key  # kept in memory only

    def __repr__(self) -> str:  # never show the key
        return f"ChatEndpoint({self.url!r}, model={self.model!r})"

    def _cache_file(self, prompt: str):
        digest = hashlib.sha256(json.dumps([self.url, self.model, self.max_tokens, prompt]).encode()).hexdigest()
        return cache_dir() / "explain" / f"{digest}.json"

    def __call__(self, prompt: str) -> str:
        stored = self._cache_file(prompt)
        if stored.is_file():
            try:
                return json.loads(stored.read_text(encoding="utf-8"))["reply"]
            except (ValueError, KeyError, TypeError):  # truncated or corrupted: ask again
                pass
        reply = self._request(prompt)
        atomic.write_text(stored, json.dumps({"model": self.model, "prompt": prompt, "reply": reply}))
        return reply

    def _request(self, prompt: str) -> str:
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                           "max_tokens": self.max_tokens, "temperature": 0}).encode()
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - user's URL
                payload = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            raise ValueError(f"The endpoint answered HTTP {err.code} ({err.reason}).") from None
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise ValueError(f"Could not reach the endpoint {self.url}: {err}.") from None
        except json.JSONDecodeError:
            raise ValueError("The endpoint's reply is not JSON.") from None
        try:
            return str(payload["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise ValueError("The endpoint's reply has no choices[0].message.content.") from None


def score_statistics(scores: Sequence[float]) -> dict:
    """Mean, std, skew and the one-sided skew test (alternative='greater'; needs >= 8 scores) of scores."""
    from scipy.stats import skew, skewtest  # heavy optional: only this statistic needs SciPy

    values = np.asarray([s for s in scores if s == s], dtype=float)
    out = {"n": int(values.size), "mean": float("nan"), "std": float("nan"), "skew": float("nan"),
           "skew_p": float("nan")}
    if values.size:
        out.update(mean=float(values.mean()), std=float(values.std()))
    if values.size >= 3:
        out["skew"] = float(skew(values))
    if values.size >= 8:
        out["skew_p"] = float(skewtest(values, alternative="greater").pvalue)
    return out

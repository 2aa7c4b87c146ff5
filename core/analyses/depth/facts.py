"""Depth, facts section: multi-token facts read token by token (teacher forcing)."""

from __future__ import annotations

import random
from typing import Callable, Sequence, TypeVar

import numpy as np
import pandas as pd
import torch

from core.analyses.depth.readout import Readout, readout
from core.data import relation_pairs
from core.lenses.base import Lens
from core.model.batch import last_residuals
from core.model.session import ModelSession
from core.progress import Progress, no_progress

R = TypeVar("R", bound=Readout)
FACT_TEMPLATES: dict[str, tuple[str, int]] = {  # relation -> (template, index of the subject in the pair)
    "capital-world": ("The capital of France is Paris. The capital of {subject} is", 1),
    "currency": ("The currency of the United Kingdom is the pound. The currency of {subject} is the", 0),
    "city-in-state": ("Seattle is a city in the state of Washington. {subject} is a city in the state of", 0),
    "gram6-nationality-adjective": ("The people of Italy are called Italian. The people of {subject} are called", 0),
}


# -- facts ---------------------------------------------------------------------------------------------
def teacher_force(prompt_ids: Sequence[int], answer_ids: Sequence[int], first_alternatives: set[int],
                  step: Callable[[list[int]], R]) -> list[tuple[int, R]]:
    """Token-by-token teacher forcing -> [(token_num, readout)] for the correctly predicted tokens.

    ``step(ids)`` reads one prefix. Token 0 counts as correct if the greedy token is the gold first token
    or one of ``first_alternatives`` (the answer without its leading space); a wrong 1-token answer stops.
    The next prefix appends the model's token when correct, else the gold token.
    """
    return teacher_force_batch([prompt_ids], [answer_ids], [first_alternatives],
                               lambda prefixes: [step(p) for p in prefixes])[0]


def teacher_force_batch(prompt_ids: Sequence[Sequence[int]], answer_ids: Sequence[Sequence[int]],
                        first_alternatives: Sequence[set[int]],
                        step: Callable[[list[list[int]]], list[R]]) -> list[list[tuple[int, R]]]:
    """:func:`teacher_force` of several examples at once: token ``num`` of every example still running is read
    in one ``step(prefixes)`` call (a batched pass), so an example needs as many calls as its answer has tokens.
    -> per example, [(token_num, readout)] for its correctly predicted tokens."""
    prefixes = [list(p) for p in prompt_ids]
    recorded: list[list[tuple[int, R]]] = [[] for _ in prefixes]
    running = [i for i in range(len(prefixes)) if len(answer_ids[i]) > 0]
    num = 0
    while running:
        outs = step([prefixes[i] for i in running])
        still = []
        for i, out in zip(running, outs):
            gold = int(answer_ids[i][num])
            correct = out.final_id == gold or (num == 0 and out.final_id in first_alternatives[i])
            if correct:
                recorded[i].append((num, out))
            elif len(answer_ids[i]) == 1:
                continue  # a wrong 1-token answer stops
            prefixes[i].append(out.final_id if correct else gold)
            if num + 1 < len(answer_ids[i]):
                still.append(i)
        running, num = still, num + 1
    return recorded


def fact_examples(n: int, seed: int) -> list[tuple[str, str, str]]:
    """``n`` (relation, prompt, answer) drawn round-robin over :data:`FACT_TEMPLATES`, seeded."""

    rng = random.Random(seed)
    pools = {}
    for rel, (template, subject_at) in FACT_TEMPLATES.items():
        pairs = [(p[subject_at], p[1 - subject_at]) for p in relation_pairs()[rel]]
        demo = template.split("{subject}")[0]
        pools[rel] = [(sub, obj) for sub, obj in rng.sample(pairs, len(pairs)) if sub not in demo]
    out = []
    for i in range(n):
        rel = list(FACT_TEMPLATES)[i % len(FACT_TEMPLATES)]
        if pools[rel]:
            subject, obj = pools[rel].pop()
            out.append((rel, FACT_TEMPLATES[rel][0].format(subject=subject), obj))
    return out


def _step(session: ModelSession, lens: Lens) -> Callable[[list[list[int]]], list[Readout]]:
    """Read the last position of several prefixes: one batched pass (:func:`core.model.batch.last_residuals`)."""
    def step(prefixes: list[list[int]]) -> list[Readout]:
        resids = last_residuals(session, [torch.tensor(ids, dtype=torch.long) for ids in prefixes])
        return [readout(lens, resid) for resid in resids]  # resid: [layer+1, 1, d_model]

    return step


def facts_section(session: ModelSession, lens: Lens, n: int, seed: int = 42,
                  progress: Progress = no_progress) -> pd.DataFrame:
    """-> rows: relation, answer_len, token_num (1-based), example, layer, rank, prob, guess (top-1 text).

    Answers of 1-3 tokens (of ``" " + answer``) only; rank is that of the correctly predicted token. The examples
    are teacher-forced together (:func:`teacher_force_batch`): one batched pass per answer token.
    """
    tok, frames, vocab = session.tokenizer, [], session.vocab_strings()
    examples = fact_examples(n, seed)
    usable = []  # (example index, relation, prompt ids, answer ids, first-token alternatives)
    for k, (rel, prompt, answer) in enumerate(examples):
        answer_ids = tok(" " + answer, add_special_tokens=False).input_ids
        if 1 <= len(answer_ids) <= 3:
            alternatives = set(tok(answer, add_special_tokens=False).input_ids[:1])
            usable.append((k, rel, session.tokenize(prompt).tolist(), answer_ids, alternatives))
    progress(0.0, f"Facts: {len(usable)} of {len(examples)} prompts have 1-3 answer tokens")
    step, calls = _step(session, lens), []

    def counted(prefixes: list[list[int]]) -> list[Readout]:
        calls.append(len(prefixes))
        progress(min(1.0, len(calls) / 3), f"Facts: answer token {len(calls)} of {len(prefixes)} prompts read")
        return step(prefixes)

    results = teacher_force_batch([u[2] for u in usable], [u[3] for u in usable], [u[4] for u in usable], counted)
    for (k, rel, _prompt, answer_ids, _alt), recorded in zip(usable, results):
        for num, out in recorded:
            frames.append(pd.DataFrame({
                "relation": rel, "answer_len": len(answer_ids), "token_num": num + 1, "example": k,
                "layer": np.arange(len(out.guess)), "rank": out.ranks[:, 0], "prob": out.probs[:, 0],
                "guess": [vocab[int(i)] for i in out.guess]}))
    progress(1.0, f"Facts: {len(examples)} prompts read")
    if not frames:
        raise ValueError("No fact token was predicted correctly; raise n or try another seed.")
    return pd.concat(frames, ignore_index=True)

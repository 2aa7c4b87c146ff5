"""Depth, options section: option-constrained tasks (sentiment, capital multiple choice)."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd

from core.analyses.depth.readout import earliest_layer, readout
from core.data import polarity_sentences, relation_pairs
from core.lenses.base import Lens
from core.model.batch import last_residuals
from core.model.session import ModelSession
from core.progress import Progress, no_progress

LETTERS: tuple[str, ...] = ("A", "B", "C", "D")


# -- option-constrained tasks ---------------------------------------------------------------------------
def option_layers(ranks: np.ndarray, probs: np.ndarray) -> tuple[float, float, int]:
    """[layer, option] ranks and probs -> (identify, decision, choice).

    identify: first layer where every option ranks within the top |options| (NaN if never);
    decision: first layer from which argmax over options always equals the final layer's choice.
    """
    choice = int(probs[-1].argmax())
    identify = earliest_layer(ranks.max(1), ranks.shape[1])
    disagree = np.flatnonzero(probs.argmax(1) != choice)
    decision = float(disagree[-1] + 1) if disagree.size else 0.0
    return identify, decision, choice


def sentiment_prompts(n: int, seed: int, shots: int = 4, max_chars: int = 120) -> list[tuple[str, str]]:
    """``n`` (4-shot "Review: ...\\nSentiment: label" prompt, gold label) from the polarity sentences."""

    rng = random.Random(seed)
    pool = [(label, s) for label, s in polarity_sentences() if len(s) <= max_chars]
    out = []
    for _ in range(n):
        picked = rng.sample(pool, shots + 1)
        demos = "".join(f"Review: {s}\nSentiment: {label}\n\n" for label, s in picked[:shots])
        out.append((demos + f"Review: {picked[-1][1]}\nSentiment:", picked[-1][0]))
    return out


def capital_mcq_prompts(n: int, seed: int, shots: int = 2) -> list[tuple[str, str]]:
    """``n`` (few-shot capital-world multiple-choice prompt with options A-D, gold letter)."""

    rng = random.Random(seed)
    pairs = [(country, capital) for capital, country in relation_pairs()["capital-world"]]

    def block(country: str, capital: str) -> tuple[str, str]:
        wrong = rng.sample([c for _, c in pairs if c != capital], 3)
        options = wrong + [capital]
        rng.shuffle(options)
        body = "".join(f"{letter}. {option}\n" for letter, option in zip(LETTERS, options))
        return f"Question: What is the capital of {country}?\n{body}Answer:", LETTERS[options.index(capital)]

    out = []
    for _ in range(n):
        chosen = rng.sample(pairs, shots + 1)
        demos = "".join("{} {}\n\n".format(*block(*pair)) for pair in chosen[:shots])
        question, gold = block(*chosen[-1])
        out.append((demos + question, gold))
    return out


def options_section(session: ModelSession, lens: Lens, n: int, seed: int = 42,
                    progress: Progress = no_progress) -> tuple[pd.DataFrame, pd.DataFrame]:
    """-> (rows: task, example, option, layer, rank, prob; summary per example). Option token = the
    LAST token of ``" " + option``; ``n`` examples per task (sentiment, capital MCQ)."""
    tasks = {"sentiment": (("negative", "positive"), sentiment_prompts(n, seed)),
             "capital-mcq": (LETTERS, capital_mcq_prompts(n, seed))}
    rows, summary, done = [], [], 0
    for task, (options, prompts) in tasks.items():
        ids = [session.tokenizer(" " + o, add_special_tokens=False).input_ids[-1] for o in options]
        resids = last_residuals(session, [prompt for prompt, _gold in prompts])  # [layer+1, 1, d_model] each
        for k, ((prompt, gold), resid) in enumerate(zip(prompts, resids)):
            out = readout(lens, resid, targets=ids)
            identify, decision, choice = option_layers(out.ranks, out.probs)
            n_layers = out.ranks.shape[0] - 1
            for j, option in enumerate(options):
                rows.append(pd.DataFrame({"task": task, "example": k, "option": option,
                                          "layer": np.arange(n_layers + 1), "rank": out.ranks[:, j],
                                          "prob": out.probs[:, j]}))
            summary.append({"task": task, "example": k, "gold": gold, "choice": options[choice],
                            "correct": options[choice] == gold, "model_top1": session.vocab_strings()[out.final_id],
                            "identify_layer": identify, "decision_layer": decision,
                            "identify_rel": identify / n_layers, "decision_rel": decision / n_layers})
            done += 1
            progress(done / (2 * n), f"Options: {task} {k + 1}/{n}")
    return pd.concat(rows, ignore_index=True), pd.DataFrame(summary)

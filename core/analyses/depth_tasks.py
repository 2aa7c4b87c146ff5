"""Depth analysis, task sections: multi-token facts, option-constrained tasks, the verdicts and the cache.

Facts are one-shot cloze prompts built from the bundled word-analogy relations (questions-words.txt); the
answer is read as the tokens of ``" " + answer`` (questions-words stores capital-world as (capital, country)):

* capital-world   "The capital of France is Paris. The capital of {country} is"                  -> " Abuja"
* currency        "The currency of the United Kingdom is the pound. The currency of {country} is the" -> " dinar"
* city-in-state   "Seattle is a city in the state of Washington. {city} is a city in the state of"   -> " Illinois"
* gram6-nationality-adjective  "The people of Italy are called Italian. The people of {country} are called"
                                                                                                  -> " Albanian"

Subjects that occur in the demonstration are skipped. The capital multiple-choice task uses capital-world too.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence, TypeVar

import numpy as np
import pandas as pd
import torch

from core.analyses.depth import (
    CONTENT_TAGS, FUNCTION_TAGS, Readout, earliest_layer, earliest_layer_curves,
    frequency_section, pos_section, readout,
)
from core.lenses import Lens
from core.progress import Progress, no_progress
from core.trace import ModelSession

R = TypeVar("R", bound=Readout)
FACT_TEMPLATES: dict[str, tuple[str, int]] = {  # relation -> (template, index of the subject in the pair)
    "capital-world": ("The capital of France is Paris. The capital of {subject} is", 1),
    "currency": ("The currency of the United Kingdom is the pound. The currency of {subject} is the", 0),
    "city-in-state": ("Seattle is a city in the state of Washington. {subject} is a city in the state of", 0),
    "gram6-nationality-adjective": ("The people of Italy are called Italian. The people of {subject} are called", 0),
}
SECTIONS: tuple[str, ...] = ("pos", "facts", "options", "frequency")
TABLES: dict[str, tuple[str, ...]] = {"pos": ("rows", "counts", "curves"), "facts": ("rows", "curves"),
                                      "options": ("rows", "summary"), "frequency": ("rows", "shares", "flips")}
LETTERS: tuple[str, ...] = ("A", "B", "C", "D")


# -- facts ---------------------------------------------------------------------------------------------
def teacher_force(prompt_ids: Sequence[int], answer_ids: Sequence[int], first_alternatives: set[int],
                  step: Callable[[list[int]], R]) -> list[tuple[int, R]]:
    """Token-by-token teacher forcing -> [(token_num, readout)] for the correctly predicted tokens.

    ``step(ids)`` reads one prefix. Token 0 counts as correct if the greedy token is the gold first token
    or one of ``first_alternatives`` (the answer without its leading space); a wrong 1-token answer stops.
    The next prefix appends the model's token when correct, else the gold token.
    """
    prefix, recorded = list(prompt_ids), []
    for num, gold in enumerate(answer_ids):
        out = step(prefix)
        correct = out.final_id == gold or (num == 0 and out.final_id in first_alternatives)
        if correct:
            recorded.append((num, out))
        elif len(answer_ids) == 1:
            break
        prefix.append(out.final_id if correct else int(gold))
    return recorded


def fact_examples(n: int, seed: int) -> list[tuple[str, str, str]]:
    """``n`` (relation, prompt, answer) drawn round-robin over :data:`FACT_TEMPLATES`, seeded."""
    from core.data import relation_pairs

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


def _step(session: ModelSession, lens: Lens) -> Callable[[list[int]], Readout]:
    def step(ids: list[int]) -> Readout:
        return readout(lens, session.trace(torch.tensor(ids, dtype=torch.long)).resid[:, -1:])

    return step


def facts_section(session: ModelSession, lens: Lens, n: int, seed: int = 42,
                  progress: Progress = no_progress) -> pd.DataFrame:
    """-> rows: relation, answer_len, token_num (1-based), example, layer, rank, prob, guess (top-1 text).

    Answers of 1-3 tokens (of ``" " + answer``) only; rank is that of the correctly predicted token.
    """
    tok, frames, vocab = session.tokenizer, [], session.vocab_strings()
    examples = fact_examples(n, seed)
    for k, (rel, prompt, answer) in enumerate(examples):
        answer_ids = tok(" " + answer, add_special_tokens=False).input_ids
        if 1 <= len(answer_ids) <= 3:
            alternatives = set(tok(answer, add_special_tokens=False).input_ids[:1])
            for num, out in teacher_force(session.tokenize(prompt).tolist(), answer_ids, alternatives,
                                          _step(session, lens)):
                frames.append(pd.DataFrame({
                    "relation": rel, "answer_len": len(answer_ids), "token_num": num + 1, "example": k,
                    "layer": np.arange(len(out.guess)), "rank": out.ranks[:, 0], "prob": out.probs[:, 0],
                    "guess": [vocab[int(i)] for i in out.guess]}))
        progress((k + 1) / len(examples), f"Facts: prompt {k + 1}/{len(examples)}")
    if not frames:
        raise ValueError("No fact token was predicted correctly; raise n or try another seed.")
    return pd.concat(frames, ignore_index=True)


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
    from core.data import polarity_sentences

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
    from core.data import relation_pairs

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
        for k, (prompt, gold) in enumerate(prompts):
            out = readout(lens, session.trace(prompt).resid[:, -1:], targets=ids)
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


# -- verdicts -------------------------------------------------------------------------------------------
def _verdict(claim: str, holds: bool | None, evidence: str) -> dict:
    return {"claim": claim, "holds": holds, "evidence": evidence}


def _mean_first_hit(rows: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Mean over examples of l*(1), per ``keys``."""
    records = [(*key, earliest_layer(f.sort_values("layer")["rank"].to_numpy(), 1))
               for key, f in rows.groupby(keys + ["example"])]
    return pd.DataFrame(records, columns=keys + ["example", "hit"]).groupby(keys)["hit"].mean()


def pos_verdict(pos_rows: pd.DataFrame | None) -> dict:
    claim = "function words (DET/ADP/PUNCT) reach rank 1 earlier than content words (NOUN/VERB/ADJ)"
    if pos_rows is None or pos_rows.empty:
        return _verdict(claim, None, "no POS data")
    means = _mean_first_hit(pos_rows, ["tag"])
    func, cont = [t for t in FUNCTION_TAGS if t in means], [t for t in CONTENT_TAGS if t in means]
    if not func or not cont:
        return _verdict(claim, None, f"need both groups; have {sorted(means.index)}")
    f, c = means[func].mean(), means[cont].mean()
    detail = ", ".join(f"{t} {means[t]:.1f}" for t in func + cont)
    return _verdict(claim, bool(f < c), f"mean l*(1): function {f:.2f} vs content {c:.2f} ({detail})")


def flip_verdict(freq_rows: pd.DataFrame | None) -> dict:
    claim = "60-80 % of early (layer 1) top-1 picks are changed by the final layer"
    if freq_rows is None or freq_rows.empty or freq_rows.layer.max() < 2:
        return _verdict(claim, None, "no frequency data")
    flipped = (freq_rows.guess != freq_rows.final).groupby(freq_rows.layer).mean()  # [layer]
    r1, r0, last = float(flipped[1]), float(flipped[0]), float(flipped.iloc[-1])
    n = freq_rows.example.nunique()
    return _verdict(claim, bool(r1 >= 0.6), f"flip rate after block 1 {r1:.0%} (embeddings {r0:.0%}, last layer "
                    f"{last:.0%}) over {n} prefixes; paper 60-80 %{'' if 0.6 <= r1 <= 0.8 else ' (outside that band)'}")


def facts_verdict(facts_rows: pd.DataFrame | None) -> dict:
    claim = "the first token of a multi-token answer needs the most depth"
    if facts_rows is None or facts_rows.empty:
        return _verdict(claim, None, "no fact data")
    multi = facts_rows[facts_rows.answer_len > 1]
    means = _mean_first_hit(multi, ["token_num"]) if not multi.empty else pd.Series(dtype=float)
    if 1 not in means.index or len(means) < 2:
        return _verdict(claim, None, f"need first and later tokens of multi-token answers; have token_num "
                        f"{sorted(means.index)}")
    later = means.drop(1)
    detail = ", ".join(f"token {int(i)} {v:.1f}" for i, v in means.items())
    return _verdict(claim, bool(means[1] > later.max()), f"mean l*(1) in 2-3 token answers: {detail}")


def options_verdict(summary: pd.DataFrame | None) -> dict:
    claim = "options are identified in the first half and decided in the second half"
    if summary is None or summary.empty:
        return _verdict(claim, None, "no option data")
    found = summary.identify_rel.dropna()
    if found.empty:
        return _verdict(claim, None, "the options never filled the top ranks")
    ident, decide = float(found.median()), float(summary.decision_rel.median())
    return _verdict(claim, bool(ident < 0.5 <= decide), f"median relative depth: identification {ident:.2f} "
                    f"({len(found)}/{len(summary)} identified), decision {decide:.2f}")


def frequency_verdict(shares: pd.DataFrame | None) -> dict:
    claim = "early layers favour frequent tokens (Top-10 share after block 1 >> final)"
    if shares is None or shares.empty:
        return _verdict(claim, None, "no frequency data")
    top = shares[shares.bucket == "Top-10"].set_index("column").share
    early, final = float(top.get("1", 0.0)), float(top.get("final", 0.0))
    return _verdict(claim, bool(early >= 2 * final and early > final),
                    f"Top-10 share after block 1 {early:.0%}, final {final:.0%} (paper: >75 % vs ~33 %)")


def verdicts(results: dict[str, dict[str, pd.DataFrame]]) -> list[dict]:
    """Section results (as :func:`run_section` returns, keyed by section) -> [{claim, holds, evidence}]."""
    get = lambda section, table: results.get(section, {}).get(table)
    return [pos_verdict(get("pos", "rows")), flip_verdict(get("frequency", "rows")),
            facts_verdict(get("facts", "rows")), options_verdict(get("options", "summary")),
            frequency_verdict(get("frequency", "shares"))]


# -- run + cache ------------------------------------------------------------------------------------------
def compute_section(session: ModelSession, lens: Lens, section: str, n: int, seed: int = 42,
                    progress: Progress = no_progress) -> dict[str, pd.DataFrame]:
    """One section -> named tidy frames (pos: rows, counts, curves; facts: rows, curves;
    options: rows, summary; frequency: rows, shares, flips)."""
    vocab = session.adapter.d_vocab
    if section == "pos":
        rows, counts = pos_section(session, lens, n, seed, progress)
        return {"rows": rows, "counts": counts, "curves": earliest_layer_curves(rows, "tag", vocab)}
    if section == "facts":
        rows = facts_section(session, lens, n, seed, progress)
        grouped = rows.assign(group=[f"{a}-token, token {t}" for a, t in zip(rows.answer_len, rows.token_num)])
        return {"rows": rows, "curves": earliest_layer_curves(grouped, "group", vocab)}
    if section == "options":
        rows, summary = options_section(session, lens, n, seed, progress)
        return {"rows": rows, "summary": summary}
    if section == "frequency":
        rows, shares, flips = frequency_section(session, lens, n, seed, progress)
        return {"rows": rows, "shares": shares, "flips": flips}
    raise ValueError(f"Unknown depth section {section!r}; choose from {', '.join(SECTIONS)}.")


def run_section(session: ModelSession, lens: Lens, section: str, n: int, seed: int = 42,
                progress: Progress = no_progress) -> dict[str, pd.DataFrame]:
    """:func:`compute_section`, stored in the disk cache (model, section, n, seed, lens name + version)."""
    from core.cache import cached

    if section not in SECTIONS:
        raise ValueError(f"Unknown depth section {section!r}; choose from {', '.join(SECTIONS)}.")
    if n < 1:
        raise ValueError("n must be at least 1.")
    return cached("depth", lambda: compute_section(session, lens, section, n, seed, progress),
                  model=session.identity(), section=section, n=n, seed=seed, lens=lens.name,
                  lens_version=getattr(lens, "version", ""))

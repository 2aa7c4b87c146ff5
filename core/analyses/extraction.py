"""Next-token extraction (Patchscopes §4.1 / logitscope): how well each lens reads the model's own
next-token prediction out of one residual vector, per layer.

For each text, one random position i (seeded); y* = the model's own top-1 at i (not the true next token).
For every layer l and lens: the lens's distribution p_l from h_l(i) alone, and
* ``precision_at_1``     = [argmax p_l == y*], averaged over texts;
* ``surprisal_patched``  = -log p_l(y*): how surprised the *lens reading* is by the model's answer
                           (the logitscope definition; a cross-entropy, nats);
* ``surprisal_original`` = -log p_orig(argmax p_l): how surprised the *model* is by the lens's guess
                           (the Patchscopes code's definition, nats).
"""

from __future__ import annotations

import hashlib
import random
from typing import Mapping, Sequence

import pandas as pd
import torch

from core.analyses.uncertainty import Verdict, bootstrap_mean, verdict_row
from core.cache import cached, is_cached
from core.lenses.base import Lens
from core.lenses.registry import lens_identity
from core.lenses.stats import output_logits, readout_logits
from core.model.batch import last_residuals
from core.model.session import ModelSession
from core.progress import Progress, no_progress

SUMMARY_COLUMNS = ["layer", "method", "precision_at_1", "surprisal_patched", "surprisal_original", "n"]


def pick_positions(session: ModelSession, texts: Sequence[str], seed: int,
                   max_tokens: int = 1024) -> list[torch.Tensor]:
    """Token ids of each text cut right after one random position (what the analysis reads)."""
    rng = random.Random(seed)
    start = 1 if session.tokenizer.bos_token_id is not None and _adds_bos(session) else 0
    out = []
    for text in texts:
        ids = session.tokenizer(text, return_tensors="pt").input_ids[0][:max_tokens]
        if ids.numel() <= start:
            continue
        position = rng.randint(start, ids.numel() - 1)
        out.append(ids[: position + 1])
    return out


def _adds_bos(session: ModelSession) -> bool:
    ids = session.tokenizer("a").input_ids
    return bool(ids) and ids[0] == session.tokenizer.bos_token_id


def extraction_rows(session: ModelSession, texts: Sequence[str], lenses: Mapping[str, Lens], seed: int = 0,
                    progress: Progress = no_progress) -> pd.DataFrame:
    """One row per (text, layer, method): correct, surprisal_patched, surprisal_original."""
    prefixes = pick_positions(session, texts, seed)
    if not prefixes:
        raise ValueError("No usable text: every text was empty after tokenisation.")
    n_res = session.adapter.n_layers + 1
    layers = list(range(n_res))
    chosen = last_residuals(session, prefixes, lambda f, m: progress(0.5 * f, m))  # [layer+1, 1, d_model] each
    frames = []
    for k, (ids, resid) in enumerate(zip(prefixes, chosen)):
        final = output_logits(session.adapter, resid[-1])  # [1, vocab] the model's output
        orig = torch.log_softmax(final[0], -1)  # [vocab]
        answer = int(orig.argmax())
        for name, lens in lenses.items():
            # every lens's last row is ``final`` itself, so precision@1 there is 1 by construction
            logp = torch.log_softmax(readout_logits(session.adapter, lens, resid, final)[:, 0], -1)  # [layer, vocab]
            guess = logp.argmax(-1)
            frames.append(pd.DataFrame({
                "text": k, "position": ids.numel() - 1, "layer": layers, "method": name,
                "correct": (guess == answer).cpu().numpy(),
                "surprisal_patched": (-logp[:, answer]).cpu().numpy(),
                "surprisal_original": (-orig[guess]).cpu().numpy(),
            }))
        progress(0.5 + 0.5 * (k + 1) / len(prefixes), f"Lens readouts: text {k + 1}/{len(prefixes)}")
    return pd.concat(frames, ignore_index=True)


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, method): precision@1, mean surprisals, n."""
    out = rows.groupby(["layer", "method"], sort=True).agg(
        precision_at_1=("correct", "mean"),
        surprisal_patched=("surprisal_patched", "mean"),
        surprisal_original=("surprisal_original", "mean"),
        n=("correct", "size"),
    ).reset_index()
    return out[SUMMARY_COLUMNS]


QUESTION_VARIANTS = {"question": '"?" patchscope (sink + "?", the seed\'s)',
                     "question_bare": '"?" patchscope (bare "?")'}


def _per_text(rows: pd.DataFrame, method: str, layers: pd.Series) -> pd.Series:
    """Per text: the method's mean correctness over ``layers`` (a boolean mask of rows)."""
    return rows[layers & (rows.method == method)].groupby("text").correct.mean()


def qualitative_checks(rows: pd.DataFrame) -> list[dict]:
    """The papers' qualitative picture, judged on these per-text rows (one per text, layer and method: ``correct``):
    each claim with its estimate, 95 % bootstrap interval over texts and n, and a verdict worded from those numbers
    (:class:`core.analyses.uncertainty.Verdict`: "cannot tell at this n" when the interval straddles the threshold).
    The last-layer precision@1 = 1 is a check (true by construction: every lens's last row is the model's output),
    not a finding."""
    last = int(rows.layer.max())
    third = max(1, last // 3)
    out: list[Verdict] = []
    final = rows[rows.layer == last]
    n_texts = int(rows.text.nunique())
    worst = float(final.groupby("method").correct.mean().min())
    out.append(Verdict("every method reaches precision@1 = 1.0 at the last layer", worst, worst, worst, n_texts,
                       threshold=0.999 - 1e-9, kind="check"))
    if "logit" in set(rows.method) and last > 2:
        early = _per_text(rows, "logit", rows.layer.between(1, third))
        late = _per_text(rows, "logit", rows.layer.between(last - third, last - 1))
        mean, low, high = bootstrap_mean((late - early).dropna())
        out.append(Verdict(f"logit-lens precision@1 rises with depth (last third minus first third, layers "
                           f"{last - third}–{last - 1} vs 1–{third})", mean, low, high,
                           int((late - early).notna().sum())))
    later = rows.layer.between(third, last - 1)
    if {"identity", "logit"} <= set(rows.method) and last > 2:
        # Patchscopes' crossover: the token-identity patchscope reads the prediction better than the logit lens
        # from the middle of the network on (GPT-J: from layer 10 of 28)
        diff = (_per_text(rows, "identity", later) - _per_text(rows, "logit", later)).dropna()
        mean, low, high = bootstrap_mean(diff)
        out.append(Verdict(f"the token-identity patchscope beats the logit lens from a third of the depth on "
                           f"(precision@1 difference, layers {third}–{last - 1})", mean, low, high, int(diff.size)))
    if {"affine", "logit"} <= set(rows.method) and last > 2:
        early = rows.layer.between(0, third)  # Patchscopes Fig. 2: the affine map leads in the early layers
        diff = (_per_text(rows, "affine", early) - _per_text(rows, "logit", early)).dropna()
        mean, low, high = bootstrap_mean(diff)
        out.append(Verdict(f"the affine lens beats the logit lens in early layers (precision@1 difference, layers "
                           f"0–{third})", mean, low, high, int(diff.size)))
    for name, label in QUESTION_VARIANTS.items():
        if {name, "identity"} <= set(rows.method):
            early_layers = rows.layer <= third
            diff = (_per_text(rows, name, early_layers) - _per_text(rows, "identity", early_layers)).dropna()
            mean, low, high = bootstrap_mean(diff)
            out.append(Verdict(f"the {label} beats the token-identity patchscope in early layers (precision@1 "
                               f"difference, layers 0–{third})", mean, low, high, int(diff.size)))
    return [verdict_row(v) for v in out]


def _cache_parts(session: ModelSession, texts: Sequence[str], lenses: Mapping[str, Lens], seed: int) -> dict:
    digest = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()
    lens_ids = {name: lens_identity(lens) for name, lens in lenses.items()}
    return {"model": session.identity(), "texts": digest, "seed": seed, "lenses": lens_ids}


def run_extraction(session: ModelSession, texts: Sequence[str], lenses: Mapping[str, Lens], seed: int = 0,
                   progress: Progress = no_progress) -> pd.DataFrame:
    """:func:`extraction_rows`, stored in the disk cache (keyed by model, texts, seed and lenses)."""
    return cached("extraction", lambda: extraction_rows(session, texts, lenses, seed, progress),
                  **_cache_parts(session, texts, lenses, seed))


def extraction_is_cached(session: ModelSession, texts: Sequence[str], lenses: Mapping[str, Lens],
                         seed: int = 0) -> bool:
    """Whether :func:`run_extraction` would read its rows from the disk cache (no model work)."""
    return is_cached("extraction", **_cache_parts(session, texts, lenses, seed))


def claims(session: ModelSession, preset: str = "paper", progress: Progress = no_progress) -> list[dict]:
    """The papers' qualitative claims at a preset's settings (the page's sampling, through the same disk cache),
    as verdict rows; a learned lens that is not trained yet gets a row saying it was not run."""
    from core.analyses.params import EXTRACTION_PRESETS
    from core.analyses.uncertainty import plain_row
    from core.data import corpus_texts, evaluation_texts, sample_texts
    from core.lenses.registry import LensNotTrained, build_lens

    settings = EXTRACTION_PRESETS[preset]
    texts = sample_texts(evaluation_texts(corpus_texts(settings["corpus"])), settings["n"], settings["seed"])

    def build() -> tuple[dict, list[str]]:
        lenses, missing = {}, []
        for name in settings["methods"]:
            try:
                lenses[name] = build_lens(session, name)
            except LensNotTrained:
                missing.append(name)
        return lenses, missing

    lenses, missing = build()
    start = 0.0
    if missing and preset == "paper":  # the paper compares the affine lens: train the learned lenses first
        from core.lenses.learned import save_lenses
        from core.lenses.params import TrainingConfig
        from core.lenses.training import train_lenses, training_split
        from core.progress import scaled

        cfg = TrainingConfig()
        train, held = training_split(cfg)
        save_lenses(session, train_lenses(session, train, held, cfg, scaled(progress, 0.0, 0.3)))
        lenses, missing = build()
        start = 0.3
    rows = run_extraction(session, texts, lenses, settings["seed"],
                          lambda f, m: progress(start + (1 - start) * f, m))
    out = qualitative_checks(rows)
    if missing:
        out.append(plain_row(f"methods not run: {', '.join(missing)}", None,
                             "not run: these lenses need training first (`python -m core train-lens`)"))
    return out

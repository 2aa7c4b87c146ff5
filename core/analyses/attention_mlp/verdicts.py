"""Attention -> MLP: a verdict on each claim of Neo, Cohen & Barez (2024) that the page measures (RESEARCH.md §5d).

Pure functions of the summary's frames (torch-free): each returns one verdict row
(:func:`core.analyses.uncertainty.verdict_row`) that states n and a 95 % interval, and says "cannot tell at this n"
when the interval straddles the claim's threshold.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from core.analyses.attention_mlp.params import CONTEXT_BAND, RULE_WORDS
from core.analyses.uncertainty import difference_verdict, mean_verdict, plain_row, proportion_verdict, verdict_row

MOST = 0.5  # "most neurons": more than half
CHANCE = 0.5  # balanced accuracy of a guess
LINEAR_TOLERANCE = 1e-3  # largest relative gap between the summed parts and the pre-activation's dot product
PARTS = ("embeddings", "heads", "attn_bias", "mlp", "own_heads", "own_attn_bias")  # the terms table's parts
_BAND = f"{CONTEXT_BAND[0]:.0%}–{CONTEXT_BAND[1]:.0%}"


def _sci(x: float) -> str:
    """A small or large number readably: 3 significant digits, scientific outside 0.01..10,000."""
    if not math.isfinite(x):
        return "none"
    return f"{x:.3g}" if x == 0 or 0.01 <= abs(x) < 1e4 else f"{x:.2e}"


def context_heads_verdict(heads: pd.DataFrame | None, rule: str) -> dict:
    """Most neurons have at least one context-dependent head under ``rule`` (share of neurons, Wilson interval).

    ``heads``: the [neuron x head] summary with ``block``, ``neuron`` and ``context_{rule}`` columns."""
    claim = f"most neurons have a head active in {_BAND} of their prompts ({RULE_WORDS[rule]})"
    if heads is None or heads.empty or f"context_{rule}" not in heads:
        return plain_row(claim, None, "no neuron run yet")
    per_neuron = heads.groupby(["block", "neuron"])[f"context_{rule}"].any()
    k, n = int(per_neuron.sum()), int(per_neuron.size)
    verdict = proportion_verdict(claim, k, n, MOST)
    return verdict_row(verdict, f"{k} of {n} neurons, Wilson interval; the claim needs more than half", digits=2)


def ablation_verdict(ablation: pd.DataFrame | None, rule: str) -> dict:
    """Zeroing a head lowers p(neuron token) more on prompts where it is active than where it is not: bootstrap
    interval of mean drop (active) − mean drop (inactive) > 0, with the KS test's D and p as extra evidence.

    ``ablation``: [prompt x head] rows with ``drop`` and ``active_{rule}``."""
    claim = f"zeroing a head lowers p(token) more where it is active ({RULE_WORDS[rule]})"
    if ablation is None or ablation.empty or f"active_{rule}" not in ablation:
        return plain_row(claim, None, "no head ablated yet")
    flags = ablation[f"active_{rule}"].astype(bool)
    active, inactive = ablation.loc[flags, "drop"].to_numpy(float), ablation.loc[~flags, "drop"].to_numpy(float)
    verdict = difference_verdict(claim, inactive, active)
    ks = ""
    if len(active) and len(inactive):
        from scipy.stats import ks_2samp  # only this statistic needs SciPy

        test = ks_2samp(active, inactive)
        ks = f"; KS D = {test.statistic:.3f}, p = {test.pvalue:.2g} (the paper: p < 0.05)"
    mean_a = _sci(float(active.mean())) if len(active) else "none"
    mean_i = _sci(float(inactive.mean())) if len(inactive) else "none"
    row = verdict_row(verdict, "", digits=3)
    interval = (f"{_sci(verdict.estimate)} (95 % CI {_sci(verdict.low)} to {_sci(verdict.high)}, n = {verdict.n})"
                if math.isfinite(verdict.low) else f"{_sci(verdict.estimate)} (no interval at n = {verdict.n})")
    row["evidence"] = (f"mean drop active minus inactive {interval}; {len(active)} active and {len(inactive)} "
                       f"inactive prompt-head pairs, mean drop {mean_a} vs {mean_i}{ks}")
    return row


def linearity_check(terms: pd.DataFrame | None) -> dict:
    """Check (true by construction): the heads' attributions plus the other terms (embeddings, attention biases,
    earlier MLPs, the own block's attention) sum to the neuron's pre-activation dot product ``resid_dot`` (before the
    norm's per-prompt scale), on every prompt. ``terms``: the per-prompt terms table."""
    claim = "attributions of all heads + other terms sum to the neuron pre-activation (before the norm's scale)"
    if terms is None or terms.empty or not set(PARTS) | {"resid_dot"} <= set(terms):
        return plain_row(claim, None, "no neuron run yet", kind="check")
    parts = terms[list(PARTS)].to_numpy(float)  # [prompt, part]
    gap = np.abs(parts.sum(axis=1) - terms["resid_dot"].to_numpy(float))
    relative = gap / (np.abs(parts).sum(axis=1) + 1e-12)
    worst, n = float(relative.max()), len(terms)
    holds = bool(worst < LINEAR_TOLERANCE)
    return plain_row(claim, holds, f"largest relative gap {worst:.1e} over n = {n} prompts (exact arithmetic, no "
                                   f"sampling interval; tolerance {LINEAR_TOLERANCE:.0e})", n, estimate=worst,
                     low=worst, high=worst, kind="check")


def trimming_check(prompts: pd.DataFrame | None, keep: float) -> dict:
    """Check (true by construction): every trimmed prompt keeps more than ``keep`` of the activation."""
    claim = f"trimmed prompts keep more than {keep:.0%} of the neuron's activation"
    if prompts is None or prompts.empty or "kept_fraction" not in prompts:
        return plain_row(claim, None, "no prompts yet", kind="check")
    kept = prompts["kept_fraction"].to_numpy(float)
    k, n = int((kept > keep).sum()), len(kept)
    return plain_row(claim, k == n, f"{k} of n = {n} prompts; smallest kept share {np.nanmin(kept):.2f} (exact, no "
                                    "sampling interval)", n, estimate=k / n, low=k / n, high=k / n, kind="check")


def explanation_verdict(scores: Sequence[float] | None) -> dict:
    """Head explanations beat chance: mean balanced accuracy over neuron-heads > 0.5 (bootstrap interval); "not run"
    without scores (the explainer needs an endpoint or manual labels)."""
    claim = "head explanations predict when the head is active better than chance (balanced accuracy > 0.5)"
    values = [float(s) for s in scores or () if s is not None and math.isfinite(float(s))]
    if not values:
        return plain_row(claim, None, "not run: the explainer needs an OpenAI-compatible endpoint or manual labels "
                                      "(panel 'Explain this head'); the paper: 0.55-0.65 with GPT-4")
    verdict = mean_verdict(claim, values, CHANCE)
    return verdict_row(verdict, f"mean over {len(values)} scored neuron-heads (paper, GPT-2 small: 0.650 ± 0.194)",
                       digits=3)


def verdicts(summary: Mapping[str, pd.DataFrame] | None, scores: Sequence[float] | None = None,
             keep: float = 0.8) -> list[dict]:
    """The summary's frames (``heads``, ``ablation``, ``terms``, optionally ``prompts``) -> one row per claim, both
    active-head rules; ``scores``: explanation scores (balanced accuracy) when the explainer ran."""
    summary = summary or {}
    rows = [context_heads_verdict(summary.get("heads"), rule) for rule in RULE_WORDS]
    rows += [ablation_verdict(summary.get("ablation"), rule) for rule in RULE_WORDS]
    rows.append(explanation_verdict(scores))
    rows.append(linearity_check(summary.get("terms")))
    if summary.get("prompts") is not None:
        rows.append(trimming_check(summary.get("prompts"), keep))
    return rows

"""Top-k order: a verdict on each of the paper's claims this page measures, from the sections' frames (torch-free).

Every function takes the frames a section returns (:data:`core.analyses.topk.params.TABLES`, the intervention's and
the modalities' frames of :mod:`core.analyses.topk.cached_runs`) and returns verdict rows
(:func:`core.analyses.uncertainty.verdict_row` / :func:`~core.analyses.uncertainty.plain_row`). Intervals: Wilson for
a proportion, Newcombe's difference of two Wilson intervals for two proportions, percentile bootstrap for a mean (over
positions or pairs). Frames carry residual layers (l = after block l, 1..L); the ordering maths takes 0-based block
indices, so layers are converted back here (s = l - 1) before :mod:`core.analyses.topk.saturation` reads them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from core.analyses.topk.ordering import strict_kendall_tau
from core.analyses.topk.saturation import saturation_order
from core.analyses.uncertainty import (
    Verdict,
    difference_verdict,
    mean_verdict,
    plain_row,
    proportion_verdict,
    verdict_row,
    wilson,
)

Frames = dict[str, pd.DataFrame]
MUCH_MORE = 0.25
"""Intervention: "much more often" = the success share at offsets ≥ 0 exceeds the one at offsets < 0 by > 25 points
(the paper shows ≈0 % before and a high share after; it states no number, so this bar is ours)."""

CLAIMS = {
    "rank_order": "rank-order bars increase with token rank (each rank saturates later than the one before)",
    "tau_zero": "mean strict Kendall's τ > 0 (ranks settle in order)",
    "tau_perm": "mean strict Kendall's τ above the permutation baseline",
    "probe_chance": "task probe balanced accuracy above chance 1/k",
    "probe_control": "task probe balanced accuracy above the random-feature control",
    "twin_weaker": "the random-init twin orders its top tokens less strictly (lower mean τ than the trained model)",
    "twin_perm": "the random-init twin still orders above its permutation baseline (weaker ordering, not none)",
    "intervention": f"implanting at offsets ≥ 0 switches the late token much more often than at offsets < 0 "
                    f"(by more than {MUCH_MORE:.0%})",
    "oracle": "early exit: the oracle's accuracy equals the baseline's",
    "better_lm": "when the top-1 is wrong, an early-saturated top-2 is more often the actual next token than a "
                 "late one",
    "modality": "{kind}: mean strict Kendall's τ above the permutation baseline",
}


def _row(v: Verdict, evidence: str) -> dict:
    return verdict_row(v, evidence, digits=3)


def not_run(claim: str, why: str = "not run") -> dict:
    """A claim whose section has no result (yet): "cannot tell yet", evidence says why."""
    return plain_row(claim, None, why, 0)


def newcombe(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float]:
    """(p1 - p2, low, high): the difference of two proportions with Newcombe's 95 % interval (from the two Wilson
    intervals); NaN when a group is empty."""
    if n1 <= 0 or n2 <= 0:
        return math.nan, math.nan, math.nan
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson(k1, n1), wilson(k2, n2)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def _combine(parts: list[bool | None]) -> bool | None:
    """All hold -> True; any does not -> False; else None."""
    return True if parts and all(p is True for p in parts) else False if any(p is False for p in parts) else None


# -- saturation: rank order and strict tau -----------------------------------------------------------------------
def _sat_matrix(saturation: pd.DataFrame, layer_column: str = "saturation_layer",
                keys: tuple[str, ...] = ("text", "position")) -> np.ndarray:
    """Long rows (one per position and rank, kept ones) -> int [pos, k] 0-based block indices."""
    wide = saturation.pivot_table(index=list(keys), columns="rank", values=layer_column, aggfunc="first")
    return wide.sort_index(axis=1).to_numpy(dtype=np.int64) - 1


def rank_order_verdict(saturation: pd.DataFrame | None, n_layers: int) -> dict:
    """Each consecutive pair of ranks: the mean per-position difference of saturation order (rank j+1 minus rank j,
    over kept positions where both settle before the last layer), bootstrap over positions; holds if every step
    holds."""
    claim = CLAIMS["rank_order"]
    if saturation is None or saturation.empty or "kept" not in saturation:
        return not_run(claim)
    kept = saturation[saturation.kept.astype(bool)]
    if kept.empty:
        return not_run(claim, "no position kept by the 0.85·L filter")
    order = saturation_order(_sat_matrix(kept), n_layers)  # [pos, k], NaN = settled only at layer L
    steps = []
    for j in range(order.shape[1] - 1):
        both = np.isfinite(order[:, j]) & np.isfinite(order[:, j + 1])
        steps.append(mean_verdict(f"rank {j + 2} minus rank {j + 1}", order[both, j + 1] - order[both, j]))
    holds = _combine([s.holds for s in steps])
    weakest = min(steps, key=lambda s: (s.low if math.isfinite(s.low) else -math.inf))
    detail = "; ".join(f"{s.claim}: {s.interval_text(2)}" for s in steps)
    return plain_row(claim, holds, f"paired difference of saturation order per step (bootstrap over positions): "
                                   f"{detail}; the weakest step decides", weakest.n,
                     estimate=weakest.estimate, low=weakest.low, high=weakest.high)


def tau_verdicts(tau: pd.DataFrame | None, summary: pd.DataFrame | None) -> list[dict]:
    """Mean strict τ over kept positions with k* ≥ 3 (bootstrap over positions) vs 0 and vs the permuted mean;
    the permutation p is extra evidence."""
    if tau is None or summary is None or tau.empty or summary.empty:
        return [not_run(CLAIMS["tau_zero"]), not_run(CLAIMS["tau_perm"])]
    s = summary.iloc[0]
    taus = tau["tau"].to_numpy(dtype=float)
    zero = mean_verdict(CLAIMS["tau_zero"], taus)
    perm = Verdict(CLAIMS["tau_perm"], zero.estimate, zero.low, zero.high, zero.n,
                   threshold=float(s.perm_mean_tau))
    p = float(s.perm_p)
    extra = (f"permuted mean τ {float(s.perm_mean_tau):.3f} over {int(s.n_perm)} permutations, permutation "
             f"p = {p:.2g}" + (" (the floor: no permutation reached it)" if p <= 1 / (int(s.n_perm) + 1) + 1e-12
                               else ""))
    return [_row(zero, f"bootstrap over positions; {extra}"),
            _row(perm, f"threshold = the permuted mean; {extra}")]


# -- the random-init twin ------------------------------------------------------------------------------------------
def twin_verdicts(tau: pd.DataFrame | None, summary: pd.DataFrame | None) -> list[dict]:
    """Trained minus twin mean τ (bootstrap, positions resampled per model), and the twin's τ vs its own permuted
    mean. ``tau``: per-position taus with a ``model`` column ("trained", "random-init twin")."""
    if tau is None or summary is None or tau.empty or "model" not in tau:
        return [not_run(CLAIMS["twin_weaker"]), not_run(CLAIMS["twin_perm"])]
    trained = tau.loc[tau.model == "trained", "tau"].to_numpy(dtype=float)
    twin = tau.loc[tau.model == "random-init twin", "tau"].to_numpy(dtype=float)
    weaker = difference_verdict(CLAIMS["twin_weaker"], twin, trained)
    rows = [_row(weaker, f"trained minus twin mean τ, bootstrap over positions (trained {np.nanmean(trained):.3f} "
                         f"over {int(np.isfinite(trained).sum())}, twin {_mean_text(twin)} over "
                         f"{int(np.isfinite(twin).sum())} positions)")]
    twin_summary = summary[summary.model == "random-init twin"]
    if twin_summary.empty or not np.isfinite(twin).any():
        return rows + [not_run(CLAIMS["twin_perm"], "no twin position with k* ≥ 3")]
    rows += tau_verdicts(pd.DataFrame({"tau": twin}), twin_summary)[1:]
    rows[-1]["claim"] = CLAIMS["twin_perm"]
    return rows


def _mean_text(values: np.ndarray) -> str:
    return f"{np.nanmean(values):.3f}" if np.isfinite(values).any() else "none"


# -- probing -----------------------------------------------------------------------------------------------------
def probe_verdicts(summary: pd.DataFrame | None, dataset: pd.DataFrame | None) -> list[dict]:
    """Pooled probe's balanced accuracy vs chance 1/k (Wilson) and vs the random-feature control (Newcombe).

    The examples are class-balanced, so balanced accuracy × examples ≈ the examples predicted right (k-fold: each
    example is tested once). Examples share positions across layers, so the true n is smaller than shown."""
    if summary is None or dataset is None or summary.empty or dataset.empty:
        return [not_run(CLAIMS["probe_chance"]), not_run(CLAIMS["probe_control"])]
    scores = summary[(summary.task == -1) & (summary.metric == "balanced_accuracy")].set_index("source")["mean"]
    if "probe" not in scores:
        return [not_run(CLAIMS["probe_chance"], "no pooled probe"), not_run(CLAIMS["probe_control"], "no probe")]
    n = int(dataset["rows"].sum())
    hits = int(round(float(scores["probe"]) * n))
    chance = float(scores.get("chance", 1 / max(2, dataset.task.nunique())))
    note = (f"{hits} of {n} balanced examples right (balanced accuracy × examples, k-fold); examples share "
            "positions across layers, so the interval is optimistic")
    rows = [_row(proportion_verdict(CLAIMS["probe_chance"], hits, n, chance), f"threshold = chance {chance:.3f}; "
                                                                               f"{note}")]
    if "random-feature control" not in scores:
        return rows + [not_run(CLAIMS["probe_control"], "no control probe")]
    control = int(round(float(scores["random-feature control"]) * n))
    d, low, high = newcombe(hits, n, control, n)
    rows.append(_row(Verdict(CLAIMS["probe_control"], d, low, high, n),
                     f"probe minus control, Newcombe interval (probe {hits / n:.3f}, control {control / n:.3f} on the "
                     f"same {n} examples)"))
    return rows


# -- intervention, early exit, better LM ------------------------------------------------------------------------------
def intervention_verdict(pairs: pd.DataFrame | None) -> dict:
    """Per pair: success share at offsets ≥ 0 minus at offsets < 0 (pairs with both sides evaluated), bootstrap over
    pairs, vs :data:`MUCH_MORE`."""
    claim = CLAIMS["intervention"]
    if pairs is None or pairs.empty:
        return not_run(claim, "no pair met the selection" if pairs is not None else "not run")
    per = pairs.assign(after=pairs.offset >= 0, success=pairs.success.astype(float))
    sides = per.groupby(["text", "early_pos", "late_pos", "after"]).success.mean().unstack("after")
    sides = sides.dropna(subset=[False, True]) if {False, True} <= set(sides.columns) else sides.iloc[0:0]
    if sides.empty:
        return not_run(claim, "no pair had offsets on both sides of its saturation layer")
    v = mean_verdict(claim, (sides[True] - sides[False]).to_numpy(), threshold=MUCH_MORE)
    return _row(v, f"per-pair success share at o ≥ 0 minus at o < 0, bootstrap over pairs (mean share "
                   f"{sides[True].mean():.1%} vs {sides[False].mean():.1%}); threshold {MUCH_MORE:.0%}")


def early_exit_check(points: pd.DataFrame | None) -> dict:
    """The oracle exits at s_0, from which the lens's top-1 is the output's: same predictions, same accuracy."""
    claim = CLAIMS["oracle"]
    if points is None or points.empty:
        return plain_row(claim, None, "not run", 0, kind="check")
    by = points.set_index("method")
    base, oracle = float(by.loc["baseline", "accuracy"]), float(by.loc["oracle", "accuracy"])
    n = int(by.loc["baseline", "positions"])
    diff = oracle - base
    return plain_row(claim, abs(diff) < 1e-12, f"oracle {oracle:.4f} vs baseline {base:.4f} on {n} positions, "
                                               f"difference {diff:+.4f}; true by construction", n,
                     estimate=diff, low=diff, high=diff, kind="check")


def better_lm_verdict(groups: pd.DataFrame | None, test: pd.DataFrame | None = None) -> dict:
    """Share of wrong-top-1 positions whose top-2 is right: group B (early) minus A (late), Newcombe interval; the
    two-proportion z-test is extra evidence."""
    claim = CLAIMS["better_lm"]
    if groups is None or len(groups) < 2:
        return not_run(claim)
    a, b = groups.iloc[0], groups.iloc[1]
    d, low, high = newcombe(int(b.top2_correct), int(b.positions), int(a.top2_correct), int(a.positions))
    n = int(a.positions) + int(b.positions)
    z = "" if test is None or test.empty else (f"; two-proportion z = {float(test.iloc[0].z_B_minus_A):.2f}, "
                                               f"p = {float(test.iloc[0].p):.2g}")
    return _row(Verdict(claim, d, low, high, n),
                f"early minus late, Newcombe interval (early {int(b.top2_correct)} of {int(b.positions)}, late "
                f"{int(a.top2_correct)} of {int(a.positions)}){z}")


def modality_verdict(frames: Frames | None, kind: str) -> dict:
    """ViT / Whisper: mean strict τ of the kept positions (recomputed from the saturation rows, bootstrap over
    positions) vs the permuted mean."""
    claim = CLAIMS["modality"].format(kind={"vit": "ViT", "whisper": "Whisper"}.get(kind, kind))
    if frames is None or frames["saturation"].empty:
        return not_run(claim)
    sat, summary, kendall = frames["saturation"], frames["summary"].iloc[0], frames["kendall"].iloc[0]
    kept = sat[sat.kept.astype(bool)]
    if kept.empty:
        return not_run(claim, "no position kept by the 0.85·L filter")
    taus = strict_kendall_tau(_sat_matrix(kept, "sat_layer", ("input", "position")), int(summary.n_layers))
    base = mean_verdict(claim, taus)
    v = Verdict(claim, base.estimate, base.low, base.high, base.n, threshold=float(kendall.perm_mean))
    demo = "; untrained demo weights" if bool(summary.random_init) else ""
    return _row(v, f"threshold = the permuted mean {float(kendall.perm_mean):.3f}, permutation p = "
                   f"{float(kendall.p):.2g} ({int(kendall.n_perm)} permutations){demo}")


# -- all claims ----------------------------------------------------------------------------------------------------
def verdicts(results: dict[str, Frames], skipped: dict[str, str] = {}) -> list[dict]:
    """Sections' frames by name ("saturation", "baseline", "probing", "early-exit", "better-lm", "intervention",
    "vit", "whisper") -> verdict rows, one or two per claim; a section missing gives "cannot tell yet" rows whose
    evidence is ``skipped[section]`` (default "not run"). ViT / Whisper rows appear only when they ran."""
    def get(section: str, table: str) -> pd.DataFrame | None:
        return results.get(section, {}).get(table)

    def why(section: str) -> str:
        return skipped.get(section, "not run")

    sat = results.get("saturation")
    rows = [rank_order_verdict(get("saturation", "saturation"),
                               int(sat["summary"].iloc[0].layers) if sat else 0) if sat
            else not_run(CLAIMS["rank_order"], why("saturation"))]
    rows += tau_verdicts(get("saturation", "tau"), get("saturation", "summary")) if sat else \
        [not_run(CLAIMS["tau_zero"], why("saturation")), not_run(CLAIMS["tau_perm"], why("saturation"))]
    rows += probe_verdicts(get("probing", "summary"), get("probing", "dataset")) if "probing" in results else \
        [not_run(CLAIMS["probe_chance"], why("probing")), not_run(CLAIMS["probe_control"], why("probing"))]
    rows += twin_verdicts(get("baseline", "tau"), get("baseline", "summary")) if "baseline" in results else \
        [not_run(CLAIMS["twin_weaker"], why("baseline")), not_run(CLAIMS["twin_perm"], why("baseline"))]
    rows.append(intervention_verdict(get("intervention", "pairs")) if "intervention" in results
                else not_run(CLAIMS["intervention"], why("intervention")))
    rows.append(early_exit_check(get("early-exit", "points")) if "early-exit" in results
                else plain_row(CLAIMS["oracle"], None, why("early-exit"), 0, kind="check"))
    rows.append(better_lm_verdict(get("better-lm", "groups"), get("better-lm", "test")) if "better-lm" in results
                else not_run(CLAIMS["better_lm"], why("better-lm")))
    for kind in ("vit", "whisper"):
        if kind in results:
            rows.append(modality_verdict(results[kind], kind))
        elif kind in skipped:
            rows.append(not_run(CLAIMS["modality"].format(kind={"vit": "ViT", "whisper": "Whisper"}[kind]),
                                skipped[kind]))
    return rows

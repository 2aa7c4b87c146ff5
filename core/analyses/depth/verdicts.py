"""Depth: a verdict on each of the paper's claims, from the sections' tables."""

from __future__ import annotations

import pandas as pd

from core.analyses.depth.pos import CONTENT_TAGS, FUNCTION_TAGS
from core.analyses.depth.readout import earliest_layer
from core.analyses.uncertainty import (Verdict, bootstrap_difference, bootstrap_mean, plain_row, verdict_row,
                                       wilson)


# -- verdicts -------------------------------------------------------------------------------------------
def _verdict(claim: str, holds: bool | None, evidence: str, n: int = 0, **numbers: float) -> dict:
    return plain_row(claim, holds, evidence, n, **numbers)


def _judged(v: Verdict, evidence: str) -> dict:
    """A verdict whose wording and holds come from the interval it prints."""
    return verdict_row(v, evidence, digits=2)


def _first_hits(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """l*(1) per example (and ``keys``): the first layer where the target is at rank 1 (the paper's first hit; it
    need not stay there)."""
    records = [(*key, earliest_layer(f.sort_values("layer")["rank"].to_numpy(), 1))
               for key, f in rows.groupby(keys + ["example"])]
    return pd.DataFrame(records, columns=keys + ["example", "hit"])


def pos_verdict(pos_rows: pd.DataFrame | None) -> dict:
    claim = "function words (DET/ADP/PUNCT) reach rank 1 earlier than content words (NOUN/VERB/ADJ)"
    if pos_rows is None or pos_rows.empty:
        return _verdict(claim, None, "no POS data")
    hits = _first_hits(pos_rows, ["tag"])
    means = hits.groupby("tag").hit.mean()
    func, cont = [t for t in FUNCTION_TAGS if t in means], [t for t in CONTENT_TAGS if t in means]
    if not func or not cont:
        return _verdict(claim, None, f"need both groups; have {sorted(means.index)}")
    f_hits, c_hits = hits[hits.tag.isin(func)].hit, hits[hits.tag.isin(cont)].hit
    diff, low, high = bootstrap_difference(f_hits, c_hits)
    detail = ", ".join(f"{t} {means[t]:.1f}" for t in func + cont)
    verdict = Verdict(claim, diff, low, high, n=len(f_hits) + len(c_hits))
    return _judged(verdict, f"l*(1) content minus function words in layers (function {f_hits.mean():.2f} over "
                            f"{len(f_hits)}, content {c_hits.mean():.2f} over {len(c_hits)}; {detail})")


FLIP_BAND = (0.6, 0.8)
"""The paper's share of early (layer 1) picks that the final layer changes."""


def flip_verdict(freq_rows: pd.DataFrame | None) -> dict:
    claim = "60-80 % of early (layer 1) top-1 picks are changed by the final layer"
    if freq_rows is None or freq_rows.empty or freq_rows.layer.max() < 2:
        return _verdict(claim, None, "no frequency data")
    changed = freq_rows.guess != freq_rows.final
    at1 = changed[freq_rows.layer == 1]
    k, n = int(at1.sum()), int(at1.size)
    low, high = wilson(k, n)
    flipped = changed.groupby(freq_rows.layer).mean()  # [layer]
    verdict = Verdict(claim, k / n, low, high, n=n, threshold=FLIP_BAND[0], upper=FLIP_BAND[1])
    where = "" if verdict.holds is not False else (" (above the paper's band)" if low > FLIP_BAND[1]
                                                    else " (below the paper's band)")
    return _judged(verdict, f"{k} of {n} prefixes' layer-1 picks change, Wilson interval{where}; embeddings "
                            f"{flipped.iloc[0]:.0%}, last layer {flipped.iloc[-1]:.0%}; paper 60-80 %")


def facts_verdict(facts_rows: pd.DataFrame | None) -> dict:
    claim = "the first token of a multi-token answer needs the most depth"
    if facts_rows is None or facts_rows.empty:
        return _verdict(claim, None, "no fact data")
    multi = facts_rows[facts_rows.answer_len > 1]
    hits = _first_hits(multi, ["token_num"]) if not multi.empty else pd.DataFrame(columns=["token_num", "hit"])
    means = hits.groupby("token_num").hit.mean()
    if 1 not in means.index or len(means) < 2:
        return _verdict(claim, None, f"need first and later tokens of multi-token answers; have token_num "
                        f"{sorted(means.index)}")
    later = means.drop(1)
    slowest = later.idxmax()
    diff, low, high = bootstrap_difference(hits[hits.token_num == slowest].hit, hits[hits.token_num == 1].hit)
    detail = ", ".join(f"token {int(i)} {v:.1f}" for i, v in means.items())
    verdict = Verdict(claim, diff, low, high, n=int((hits.token_num == 1).sum()))
    return _judged(verdict, f"l*(1) of the first token minus the slowest later one (token {int(slowest)}), "
                            f"n = first tokens; mean l*(1) in multi-token answers: {detail}")


def options_verdict(summary: pd.DataFrame | None) -> dict:
    claim = "options are identified in the first half and decided in the second half"
    if summary is None or summary.empty:
        return _verdict(claim, None, "no option data")
    found = summary.identify_rel.dropna()
    if found.empty:
        return _verdict(claim, None, "the options never filled the top ranks")
    ident = Verdict("identified before half depth", *bootstrap_mean(found), n=len(found), threshold=0.5,
                    above=False)
    decide = Verdict("decided at or after half depth", *bootstrap_mean(summary.decision_rel.dropna()),
                     n=int(summary.decision_rel.notna().sum()), threshold=0.5 - 1e-9)
    parts = (ident.holds, decide.holds)
    holds = True if parts == (True, True) else False if False in parts else None
    n = min(ident.n, decide.n)
    return _verdict(claim, holds, f"mean relative depth of identification {ident.interval_text(2)} "
                                  f"({len(found)}/{len(summary)} identified), of decision {decide.interval_text(2)}",
                    n)


def frequency_verdict(shares: pd.DataFrame | None) -> dict:
    claim = "early layers favour frequent tokens (Top-10 share after block 1 at least twice the final one)"
    if shares is None or shares.empty:
        return _verdict(claim, None, "no frequency data")
    totals = shares.groupby("column")["count"].sum() if "count" in shares else None
    top = shares[shares.bucket == "Top-10"].set_index("column")
    if totals is None or "1" not in top.index or "final" not in top.index:
        return _verdict(claim, None, "need the Top-10 counts after block 1 and at the end")
    k1, n1 = int(top.loc["1", "count"]), int(totals["1"])
    kf, nf = int(top.loc["final", "count"]), int(totals["final"])
    (lo1, hi1), (lof, hif) = wilson(k1, n1), wilson(kf, nf)
    holds = True if lo1 > 2 * hif else False if hi1 <= 2 * lof else None
    return _verdict(claim, holds, f"Top-10 share after block 1 {k1 / n1:.0%} (95 % CI {lo1:.0%}-{hi1:.0%}), final "
                                  f"{kf / nf:.0%} ({lof:.0%}-{hif:.0%}), n = {n1} (paper: >75 % vs ~33 %)", n1,
                    estimate=k1 / n1 / (kf / nf) if kf else float("nan"), low=lo1 / hif if hif else float("nan"),
                    high=hi1 / lof if lof else float("nan"))


def verdicts(results: dict[str, dict[str, pd.DataFrame]]) -> list[dict]:
    """Section results (as :func:`run_section` returns, keyed by section) -> [{claim, holds, verdict, evidence, n}]:
    holds True / False / None (cannot tell: no data, or the 95 % interval straddles the claim's threshold)."""
    def get(section: str, table: str) -> pd.DataFrame | None:
        return results.get(section, {}).get(table)

    return [pos_verdict(get("pos", "rows")), flip_verdict(get("frequency", "rows")),
            facts_verdict(get("facts", "rows")), options_verdict(get("options", "summary")),
            frequency_verdict(get("frequency", "shares"))]

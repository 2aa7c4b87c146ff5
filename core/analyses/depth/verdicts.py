"""Depth: a verdict on each of the paper's claims, from the sections' tables."""

from __future__ import annotations

import pandas as pd

from core.analyses.depth.pos import CONTENT_TAGS, FUNCTION_TAGS
from core.analyses.depth.readout import earliest_layer


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

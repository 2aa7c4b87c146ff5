"""Depth: the sections by name, their tables, and the cached run of one section."""

from __future__ import annotations

import pandas as pd

from core.analyses.depth.facts import facts_section
from core.analyses.depth.frequency import frequency_section
from core.analyses.depth.options import options_section
from core.analyses.depth.pos import pos_section
from core.analyses.depth.readout import earliest_layer_curves
from core.lenses.base import Lens
from core.model.session import ModelSession
from core.progress import Progress, no_progress

SECTIONS: tuple[str, ...] = ("pos", "facts", "options", "frequency")
TABLES: dict[str, tuple[str, ...]] = {"pos": ("rows", "counts", "curves"), "facts": ("rows", "curves"),
                                      "options": ("rows", "summary"), "frequency": ("rows", "shares", "flips")}


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

"""Depth: the sections by name (core.analyses.depth.params declares their tables), and the cached run of one."""

from __future__ import annotations

import pandas as pd

from core.analyses.depth.facts import facts_section
from core.analyses.depth.frequency import frequency_section
from core.analyses.depth.options import options_section
from core.analyses.depth.params import DEFAULT_SEED, SECTION_VERSION, SECTIONS, TABLES  # noqa: F401 (read here too)
from core.analyses.depth.pos import pos_section
from core.analyses.depth.readout import earliest_layer_curves
from core.analyses.sections import SectionRegistry
from core.lenses.base import Lens
from core.lenses.registry import lens_identity
from core.model.session import ModelSession
from core.progress import Progress, no_progress


# -- the sections: (session, lens, n, seed, progress) -> named tidy frames -------------------------------------
def _pos(session: ModelSession, lens: Lens, n: int, seed: int, progress: Progress) -> dict[str, pd.DataFrame]:
    rows, counts = pos_section(session, lens, n, seed, progress)
    return {"rows": rows, "counts": counts, "curves": earliest_layer_curves(rows, "tag", session.adapter.d_vocab)}


def _facts(session: ModelSession, lens: Lens, n: int, seed: int, progress: Progress) -> dict[str, pd.DataFrame]:
    rows = facts_section(session, lens, n, seed, progress)
    grouped = rows.assign(group=[f"{a}-token, token {t}" for a, t in zip(rows.answer_len, rows.token_num)])
    return {"rows": rows, "curves": earliest_layer_curves(grouped, "group", session.adapter.d_vocab)}


def _options(session: ModelSession, lens: Lens, n: int, seed: int, progress: Progress) -> dict[str, pd.DataFrame]:
    rows, summary = options_section(session, lens, n, seed, progress)
    return {"rows": rows, "summary": summary}


def _frequency(session: ModelSession, lens: Lens, n: int, seed: int, progress: Progress) -> dict[str, pd.DataFrame]:
    rows, shares, flips = frequency_section(session, lens, n, seed, progress)
    return {"rows": rows, "shares": shares, "flips": flips}


REGISTRY = SectionRegistry.declare("depth", "depth", TABLES,
                                   {"pos": _pos, "facts": _facts, "options": _options, "frequency": _frequency},
                                   version=SECTION_VERSION)


# -- run + cache ------------------------------------------------------------------------------------------
def compute_section(session: ModelSession, lens: Lens, section: str, n: int, seed: int = DEFAULT_SEED,
                    progress: Progress = no_progress) -> dict[str, pd.DataFrame]:
    """One section -> named tidy frames (pos: rows, counts, curves; facts: rows, curves;
    options: rows, summary; frequency: rows, shares, flips)."""
    return REGISTRY.compute(section, session, lens, n, seed, progress)


def run_section(session: ModelSession, lens: Lens, section: str, n: int, seed: int = DEFAULT_SEED,
                progress: Progress = no_progress) -> dict[str, pd.DataFrame]:
    """:func:`compute_section`, stored in the disk cache (model, section, n, seed, lens name + identity)."""
    REGISTRY.get(section)  # an unknown section fails before anything else
    if n < 1:
        raise ValueError("n must be at least 1.")
    return REGISTRY.run(section, _cache_key(session, lens, n, seed), session, lens, n, seed, progress)


def _cache_key(session: ModelSession, lens: Lens, n: int, seed: int) -> dict:
    return {"model": session.identity(), "n": n, "seed": seed, "lens": lens.name, "lens_version": lens_identity(lens)}


def section_is_cached(session: ModelSession, lens: Lens, section: str, n: int, seed: int = DEFAULT_SEED) -> bool:
    """Whether :func:`run_section` would read this section from the disk cache (no model work)."""
    return REGISTRY.is_cached(section, _cache_key(session, lens, n, seed))

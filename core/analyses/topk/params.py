"""Top-k order: the parameters every section shares, the sections' names and tables."""

from __future__ import annotations

from dataclasses import dataclass

from core.analyses.topk.collect import (
    DEFAULT_K,
    DEFAULT_MAX_TOKENS,
    TextRecord,
    check_params,
    collect,
    topk_texts,
)
from core.analyses.topk.ordering import N_PERMUTATIONS
from core.analyses.topk.saturation import MAX_TOP1_SATURATION_RATIO
from core.model.session import ModelSession
from core.progress import Progress, no_progress

SECTION_VERSION = "2"  # of the sections' maths (the per-text records have their own VERSION)
SECTIONS: tuple[str, ...] = ("saturation", "baseline", "probing", "early-exit", "better-lm")
TABLES: dict[str, tuple[str, ...]] = {
    "saturation": ("summary", "rank_order", "saturation", "tau", "permutation", "histogram"),
    "baseline": ("summary", "rank_order", "permutation", "probe"),
    "probing": ("summary", "per_layer", "folds", "dataset"),
    "early-exit": ("points", "summary"),
    "better-lm": ("groups", "test"),
}


@dataclass(frozen=True)
class TopkParams:
    """What every section shares: texts (n, seed), k slots, truncation, filter ratio, permutations, tasks."""

    n: int = 40
    k: int = DEFAULT_K
    seed: int = 0
    max_tokens: int = DEFAULT_MAX_TOKENS
    ratio: float = MAX_TOP1_SATURATION_RATIO
    n_perm: int = N_PERMUTATIONS
    n_tasks: int = 4
    folds: int = 5
    n_eval: int = 20

    def check(self) -> None:
        check_params(self.k, self.max_tokens)
        if self.n < 1 or self.n_eval < 1:
            raise ValueError("Use at least one text (n >= 1, n_eval >= 1).")
        if not 2 <= self.n_tasks <= self.k:
            raise ValueError(f"The number of probing tasks must lie in 2..k (k = {self.k}).")
        if not 2 <= self.folds <= 20:
            raise ValueError("folds must lie in 2..20.")
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"The filter ratio must lie in (0, 1]; got {self.ratio}.")
        if self.n_perm < 1:
            raise ValueError("The permutation test needs at least one permutation.")


def records_for(session: ModelSession, params: TopkParams, progress: Progress = no_progress,
                offset: int = 0, n: int | None = None, label: str = "") -> list[TextRecord]:
    """The collected records of texts ``offset .. offset+n`` (default: the first params.n)."""
    texts = topk_texts(params.n if n is None else n, params.seed, offset)
    return collect(session, texts, params.k, params.max_tokens, progress, label)

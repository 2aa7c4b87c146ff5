"""Top-k order: the parameters every section shares, the sections' names, tables and defaults.

Torch-free on purpose: the command line takes its defaults, choices and bounds from here and answers bad input
before torch loads (the analysis modules import these names from here, never the other way round).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_K = 5  # top-k slots whose saturation layers are measured
MAX_K = 50
DEFAULT_MAX_TOKENS = 128  # longer texts are truncated (and counted)
MIN_MAX_TOKENS = 8
MAX_TOP1_SATURATION_RATIO = 0.85  # the paper's filter: keep positions with s_0 <= int(0.85 * L)
N_PERMUTATIONS = 1000  # of the Kendall's tau permutation test
MAX_FOLDS = 20

SECTION_VERSION = "3"  # of the sections' frames (3: residual layers); the per-text records have their own VERSION
SECTIONS: tuple[str, ...] = ("saturation", "baseline", "probing", "early-exit", "better-lm")
TABLES: dict[str, tuple[str, ...]] = {
    "saturation": ("summary", "rank_order", "saturation", "tau", "permutation", "histogram"),
    "baseline": ("summary", "rank_order", "permutation", "probe"),
    "probing": ("summary", "per_layer", "folds", "dataset"),
    "early-exit": ("points", "summary"),
    "better-lm": ("groups", "test"),
}
# The intervention (section 4) and the other modalities (section 7) run through core.analyses.topk.cached_runs;
# their frames are the ones run_intervention and compute_modality document.
OTHER_SECTIONS: tuple[str, ...] = ("intervention", "vit", "whisper")
OTHER_TABLES: dict[str, tuple[str, ...]] = {
    "intervention": ("offsets", "pairs", "texts", "config"),
    "vit": ("summary", "rank_order", "kendall", "probe", "saturation", "inputs"),
    "whisper": ("summary", "rank_order", "kendall", "probe", "saturation", "inputs"),
}


def check_params(k: int, max_tokens: int) -> None:
    """ValueError unless 2 <= k <= MAX_K and max_tokens >= MIN_MAX_TOKENS (what collecting records needs)."""
    if not 2 <= k <= MAX_K:
        raise ValueError(f"k must lie in 2..{MAX_K} (the top-2 is needed for the early-exit and LM sections).")
    if max_tokens < MIN_MAX_TOKENS:
        raise ValueError(f"max_tokens must be at least {MIN_MAX_TOKENS}.")


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
        if not 2 <= self.folds <= MAX_FOLDS:
            raise ValueError(f"folds must lie in 2..{MAX_FOLDS}.")
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"The filter ratio must lie in (0, 1]; got {self.ratio}.")
        if self.n_perm < 1:
            raise ValueError("The permutation test needs at least one permutation.")

"""Neuron topics: the pipeline's settings (TopicParams), its modes, defaults and tables.

Torch-free (no numpy or SciPy either): the command line takes its defaults, choices and checks from here and
answers bad input before anything heavy loads; the analysis modules import these names from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

VERSION = "1"  # bump when the maths changes (part of every disk-cache key)
MODES: dict[str, str] = {
    "hi-c": "Hi-C: MLP neuron, through the later blocks",
    "hi-i": "Hi-I: MLP neuron, straight to the unembedding",
    "lo-c": "Lo-C: residual dimension, through this and the later blocks",
    "lo-i": "Lo-I: residual dimension, through this block only",
}
DEFAULT_MODE = "hi-c"
DEFAULT_TAU = 900  # top and bottom tokens per pool
DEFAULT_VOCAB_SIZE = 40_000  # corpus vocabulary
DEFAULT_MIN_FREQ = 10  # = the window: one co-occurrence spans at most 9 windows, so a pair needs two
PAPER_THRESHOLDS = (0.1, 1.0)  # GPT-2 notebook
PAPER_SIZE_LIMITS = (10, 24)  # GPT-2 notebook
TOPIC_K = 10  # words per topic
MAX_TOPIC_K = 50
DEFAULT_TIME_LIMIT = 30.0  # seconds per integer program
DEFAULT_CORPUS = "wikipedia"
UNIT_TABLES: tuple[str, ...] = ("sets", "pools", "edges", "summary")  # NeuronTopics' frames, one unit
COMPARE_TABLES: tuple[str, ...] = ("tests", "rows", "topics")  # compare_random's frames, real vs random


def check_limits(thresholds: tuple[float, float], size_limits: tuple[int, int]) -> None:
    """ValueError unless theta_l <= theta_u and 1 <= kappa_l <= kappa_u."""
    lo, hi = thresholds
    if not (-1.0 <= lo <= hi <= 1.0):
        raise ValueError(f"Thresholds must satisfy -1 <= lower <= upper <= 1 (got {lo}, {hi}).")
    k_lo, k_hi = size_limits
    if not (1 <= k_lo <= k_hi):
        raise ValueError(f"Size limits must satisfy 1 <= lower <= upper (got {k_lo}, {k_hi}).")


@dataclass(frozen=True)
class TopicParams:
    """Every setting of the pipeline (paper GPT-2 notebook defaults for the heuristic)."""

    tau: int = DEFAULT_TAU
    min_freq: int = DEFAULT_MIN_FREQ
    thresholds: tuple[float, float] = PAPER_THRESHOLDS
    size_limits: tuple[int, int] = PAPER_SIZE_LIMITS
    k: int = TOPIC_K
    time_limit: float = DEFAULT_TIME_LIMIT
    corpus: str = DEFAULT_CORPUS
    vocab_size: int = DEFAULT_VOCAB_SIZE

    def check(self) -> "TopicParams":
        if self.tau < 1:
            raise ValueError("tau must be at least 1.")
        if self.min_freq < 1:
            raise ValueError("The minimum frequency must be at least 1.")
        if not 2 <= self.k <= MAX_TOPIC_K:
            raise ValueError(f"The topic size k must lie in 2..{MAX_TOPIC_K}.")
        if self.time_limit <= 0:
            raise ValueError("The time limit must be positive.")
        check_limits(self.thresholds, self.size_limits)
        return self

    def cache_parts(self) -> dict:
        return {**asdict(self), "version": VERSION}

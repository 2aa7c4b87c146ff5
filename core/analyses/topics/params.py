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
COMPARE_TABLES: tuple[str, ...] = ("tests", "rows", "topics", "verdicts")  # compare_random's frames + verdicts
WINDOW = 10  # sliding-window size of the co-occurrence counts (topic-metrics / Palmetto; the paper's ws=10)
PAPER_TIME_LIMIT = 180.0  # superposed-topics algo/extract.py MEKC: SCIP limits/time (120 s in the notebook)
DEFAULT_COMPARE_N = 20  # units sampled from a block for real vs random on the page

# The page's two presets and the results report (core.analyses.topics.results). Parameter names are TopicParams'
# fields plus "window" (fixed: shown, not a control), "compare_n" (units sampled for real vs random) and "seed".
PRESETS: dict[str, dict] = {
    "quick": {  # a first look in about a minute on 2 CPU cores
        "tau": 400,  # half-size pools: fewer words, smaller NPMI graphs (paper: 900)
        "min_freq": DEFAULT_MIN_FREQ,  # see DEFAULT_MIN_FREQ
        "thresholds": PAPER_THRESHOLDS,  # GPT-2 notebook (0.1, 1)
        "size_limits": PAPER_SIZE_LIMITS,  # GPT-2 notebook (10, 24)
        "time_limit": 10.0,  # short: a set whose program runs longer keeps its best topic so far, flagged
        "window": WINDOW,  # topic-metrics: windows of 10
        "compare_n": 6,  # units sampled: enough to see the direction, rarely enough for a verdict
        "seed": 0,
    },
    "paper": {  # the paper's settings where the bundled data allows them
        "tau": 900,  # superposed-topics results archives gpt2_900 / llama_900
        "min_freq": DEFAULT_MIN_FREQ,  # paper 100 windows of Wikipedia-V40K (billions of words); scaled to the
        # bundled ~1M-word sample, 100 windows would be below 1, so the floor is the window size (see DEFAULT_MIN_FREQ)
        "thresholds": PAPER_THRESHOLDS,  # GPT-2 notebook (0.1, 1)
        "size_limits": PAPER_SIZE_LIMITS,  # GPT-2 notebook (10, 24)
        "time_limit": PAPER_TIME_LIMIT,  # algo/extract.py MEKC: 180 s
        "window": WINDOW,  # topic-metrics: wiki_npmi_wsz10
        "compare_n": 200,  # the paper uses every neuron; 200 units x 2 sources x 2 pools is what 2 CPU cores finish
        # in about two minutes (measured: 12 units in 6 s on block 13 of SmolLM2-135M)
        "seed": 0,
    },
}



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

    def check(self) -> TopicParams:
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


def default_block(n_layers: int) -> int:
    """The page's default block (1-based): the middle one (15 of SmolLM2's 30)."""
    return max(1, n_layers // 2)


def preset_params(name: str, corpus: str = DEFAULT_CORPUS) -> TopicParams:
    """The TopicParams of preset ``name`` ("quick" / "paper") on ``corpus``."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose from {', '.join(PRESETS)}.")
    values = PRESETS[name]
    fields = ("tau", "min_freq", "thresholds", "size_limits", "time_limit")
    return TopicParams(corpus=corpus, **{f: values[f] for f in fields}).check()

"""Attention -> MLP: the pipeline's settings (ScanParams, HeadParams), defaults and tables.

Torch-free: the command line takes its defaults, choices and bounds from here and answers bad input before torch
loads; the analysis modules import these names from here.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PER_LAYER = 20  # next-token neurons per block
DEFAULT_N_TEXTS = 200  # corpus texts scanned for max-activating prompts
DEFAULT_SEED = 0  # of the random-neuron control
DEFAULT_CORPUS = "wikipedia"  # scanned for max-activating prompts
DEFAULT_TOP_PROMPTS = 20  # prompts kept per neuron
DEFAULT_WINDOW = 128  # tokens per scanning window
TRIM_KEEP = 0.8  # a trimmed prompt keeps more than this share of the neuron's activation
MAX_TRIMMED_TOKENS = 100
TRIM_METHODS = ("binary", "linear")
# The pipeline's frames: choose_neurons, max_activating_prompts, then run_heads' tables.
TABLES: tuple[str, ...] = ("neurons", "prompts", "attributions", "terms", "heads", "ablation", "ks",
                           "context_share", "skipped")


@dataclass(frozen=True)
class ScanParams:
    """How the corpus is scanned and prompts trimmed (all settable; defaults are the paper's)."""

    window: int = DEFAULT_WINDOW
    top: int = DEFAULT_TOP_PROMPTS
    keep: float = TRIM_KEEP
    max_tokens: int = MAX_TRIMMED_TOKENS
    trim: str = "binary"  # or "linear": the exact shortest-first scan

    def __post_init__(self) -> None:
        if self.window < 2 or self.top < 1 or self.max_tokens < 1:
            raise ValueError("The window needs at least 2 tokens; prompts kept and the length cap at least 1.")
        if not 0 < self.keep < 1:
            raise ValueError("The kept fraction must lie strictly between 0 and 1.")
        if self.trim not in TRIM_METHODS:
            raise ValueError("The trimming method is 'binary' or 'linear'.")


@dataclass(frozen=True)
class HeadParams:
    include_own: bool = False  # also treat the neuron's own block's attention heads as candidates
    ablate: bool = True  # ablate every head that is context-dependent under either rule

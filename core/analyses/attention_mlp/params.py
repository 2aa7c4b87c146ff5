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


# -- the two active-head rules, in words (the tables keep the short codes "top3" / "sigma2") -------------------------
RULE_WORDS = {
    "top3": "active = top-3 heads by attribution",  # RESEARCH.md §5a.4 v1 (src/neuron_heads.py, Oct 2023 runs)
    "sigma2": "active = attribution above mean + 2σ",  # §5a.4 v2 (notebook 4, Feb 2024 "acl" runs)
}
CONTEXT_BAND = (0.25, 0.75)  # §5a.5: a head active in 25-75 % of a neuron's prompts is context-dependent

# -- presets: "quick" (about a minute on 2 CPU cores) and "paper" (RESEARCH.md §5a, or what the bundled data allows)
# Parameter names: per_layer, n_texts, window, top, keep, max_tokens, trim, blocks_of_12 (how many of a 12-block
# model's last blocks; scaled to the model's depth by preset_blocks) or last_blocks (a fixed count), control,
# include_own.
PRESETS: dict[str, dict] = {
    "quick": {
        "per_layer": 1,  # one neuron per block: enough to see the page work
        "n_texts": 20,  # 20 paragraphs spread over the corpus
        "window": 64,
        "top": 6,  # a few more than MIN_PROMPTS, so the 25-75 % band means something
        "keep": TRIM_KEEP,
        "max_tokens": MAX_TRIMMED_TOKENS,
        "trim": "binary",
        "last_blocks": 1,  # the last block only, whatever the depth
        "control": False,
        "include_own": False,
    },
    "paper": {
        "per_layer": 20,  # §5a.1 num_neurons_per_layer = 20 (src/neuron_texts.find_neurons)
        "n_texts": 10_000,  # §5a.2/5b NeelNanda/pile-10k: 10,000 texts; capped at the corpus (the bundled
        # Wikipedia corpus has 3,220 evaluation paragraphs, so all of them)
        "window": 1024,  # §5a.2 one max per whole text: GPT-2's context of 1,024 tokens
        "top": 20,  # §5a.2/5a.3 top 20 texts per neuron, the first 20 prompts used
        "keep": TRIM_KEEP,  # §5a.3 shortest suffix keeping > 0.8 of the activation
        "max_tokens": MAX_TRIMMED_TOKENS,  # §5a.3 prompts longer than 100 tokens dropped
        "trim": "binary",  # §5a.3 binary search (find_truncated_texts)
        "blocks_of_12": 3,  # §5a.1 GPT-2 small layers 9-11 (0-based) = the last 3 of 12 blocks
        "control": False,  # §5a.1 next-token neurons (the random control is a separate run)
        "include_own": False,  # §5a.4 heads of earlier blocks only
    },
}


def preset_blocks(n_layers: int, blocks_of_12: int) -> list[int]:
    """The last ``blocks_of_12 / 12`` of the model's blocks, 1-based (at least 1): 3 of 12 is GPT-2 small's
    blocks 10-12 (0-based 9-11); for 30 blocks, 8 (blocks 23-30)."""
    if n_layers < 1:
        raise ValueError("The model needs at least one block.")
    k = min(n_layers, max(1, int(blocks_of_12 * n_layers / 12 + 0.5)))
    return list(range(n_layers - k + 1, n_layers + 1))


def preset_block_list(preset: dict, n_layers: int) -> list[int]:
    """The 1-based blocks of a preset: its ``last_blocks`` (a fixed count), or ``blocks_of_12`` scaled to the depth."""
    if "last_blocks" in preset:
        return list(range(max(1, n_layers - preset["last_blocks"] + 1), n_layers + 1))
    return preset_blocks(n_layers, preset["blocks_of_12"])

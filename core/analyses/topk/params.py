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
BASELINE_VERSION = "4"  # of the baseline section alone (4: its per-position taus, for the verdict's bootstrap)
SECTIONS: tuple[str, ...] = ("saturation", "baseline", "probing", "early-exit", "better-lm")
TABLES: dict[str, tuple[str, ...]] = {
    "saturation": ("summary", "rank_order", "saturation", "tau", "permutation", "histogram"),
    "baseline": ("summary", "rank_order", "permutation", "probe", "tau"),
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


# -- presets: "Quick look" and "Paper settings" (analysis parameter names; the page maps them to its URL names) ------
BUNDLED_TOKENS_PER_TEXT = 130  # mean tokens of a bundled Wikipedia evaluation paragraph (bundled tokenizer, measured)
PAPER_TOKENS = 60_000  # RESEARCH.md §1b/§1d: early exit evaluated on ≈60K tokens (100 CNN/DM texts); MMLU ≈60K-100K
PAPER_TEXTS = PAPER_TOKENS // BUNDLED_TOKENS_PER_TEXT  # 461 bundled paragraphs ≈ the paper's 60K tokens
PRESETS: dict[str, dict[str, int]] = {
    "quick": {  # seconds to a minute on 2 CPU cores: enough to see every figure, not to judge the claims
        "n": 10, "k": DEFAULT_K, "seed": 0, "max_tokens": 64, "n_tasks": 3, "n_eval": 5, "n_perm": 200,
        "intervention_texts": 3, "intervention_pairs": 3, "modality_inputs": 40, "modality_k": 3,
        "modality_tasks": 2,
    },
    "paper": {
        "n": PAPER_TEXTS,  # ordering / probe texts: ≈60K tokens, the low end of the paper's MMLU 60K-100K (§1b)
        "k": 5,  # the paper's top-5 (consts: k = 5; the shipped GPT2_top5_clf has 5 classes)
        "seed": 0,
        "max_tokens": 1024,  # the reference's GPT-2 context (§1b: one pass per article, <= 1024 tokens)
        "n_tasks": 5,  # the shipped early-exit probe's 5 tasks, chance 20 % (§1a(iii), §1d)
        "n_eval": PAPER_TEXTS,  # early exit: the paper's ≈60K evaluation tokens (100 CNN/DM texts, §1b, §1d)
        "n_perm": N_PERMUTATIONS,  # KENDALLS_TAU_NUM_PERMUTATIONS = 1000 (§1a(ii))
        "intervention_texts": 100,  # num_pairs // 10 texts (§1a(iv)) with up to 10 pairs each; num_pairs = 1000 is
        "intervention_pairs": 10,  # an assumption (RESEARCH.md does not give it); 10 = MAX_PAIRS_PER_TEXT
        "modality_inputs": 5000,  # 5K CIFAR-10 images / 5K LibriSpeech clips (§1b, ICML version)
        "modality_k": 5,  # top-5, as for text
        "modality_tasks": 4,  # Whisper's 4 tasks (chance 25 %, §1d); ViT used 5 (= k): the page picks by model
    },
}
TEXT_PRESET_FIELDS = ("n", "k", "seed", "max_tokens", "n_tasks", "n_eval", "n_perm")


def preset_params(preset: str) -> TopkParams:
    """The text sections' parameters of a preset ("quick" / "paper"); ratio and folds keep the paper's defaults."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose from {', '.join(PRESETS)}.")
    values = PRESETS[preset]
    return TopkParams(**{name: int(values[name]) for name in TEXT_PRESET_FIELDS})

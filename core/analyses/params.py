"""Defaults of the one-file analyses: the lens table (core.analyses.lens) and next-token extraction
(core.analyses.extraction).

Torch-free: the command line takes its defaults and bounds from here before torch loads; the analyses import
these names from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.lenses.registry import NAMES as LENS_NAMES

DEFAULT_TOP_K = 10  # lens table: top tokens per (layer, position) cell
MAX_TOP_K = 100
MAX_TEXTS = 100_000  # extraction: parse_user_texts keeps at most this many


@dataclass(frozen=True)
class ExtractionParams:
    """One extraction run: ``n`` texts (one random position each, drawn with ``seed``) of ``corpus``, read by
    each lens of ``methods`` (every registered lens by default)."""

    n: int = 200
    seed: int = 0
    corpus: str = "wikipedia"
    methods: tuple[str, ...] = LENS_NAMES


# The Extraction page's presets (ExtractionParams fields). "paper": logitscope's 698 prompts and seed 42
# (RESEARCH.md §3b; Patchscopes used 2,000 validation prompts), every method (learned lenses where trained).
EXTRACTION_PRESETS: dict[str, dict] = {
    "quick": {"n": 20, "seed": 0, "corpus": "wikipedia", "methods": ("logit", "identity", "question")},
    "paper": {"n": 698, "seed": 42, "corpus": "wikipedia", "methods": LENS_NAMES},
}
EXTRACTION_PRESET_NOTES: dict[str, str] = {
    "quick": "20 texts, the logit lens and the two patchscopes: a first look in under a minute.",
    "paper": "698 texts (logitscope's sample size; Patchscopes used 2,000) with seed 42 and every method whose "
             "lens is available (tuned and affine once trained; `python -m core results` trains them when "
             "missing). About 5 minutes on 2 CPU cores, 10 with the learned lenses.",
}


# -- generation on the Lens page -------------------------------------------------------------------------------------
MAX_NEW_TOKENS = 256
MAX_TEMPERATURE = 10.0  # the highest sampling temperature the Generate view and the CLI take
"""The most new tokens one generation asks for (the page's and the CLI's bound)."""
DEFAULT_NEW_TOKENS = 20

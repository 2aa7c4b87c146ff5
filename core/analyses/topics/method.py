"""Neuron topics: how this implementation differs from the paper's code (superposed-topics @ 72c1e3f,
topic-metrics), and why. Torch-free text the page shows and the report quotes; one entry per difference."""

from __future__ import annotations

SAME = (
    "Unchanged from the paper's code: the four injection modes and the blocks each runs (Hi-C: the neuron's output "
    "direction plus the down-projection's bias, through the later blocks; Hi-I: no block; Lo-C: a unit residual "
    "vector through this block and the later ones; Lo-I: this block only; then the final norm and the "
    "unembedding), a one-token sequence with no token or position embedding, boolean windows of 10 counted on the "
    "vocabulary-filtered words with N from raw document lengths, NPMI with ε = 1e-12 and 0 when a marginal is 0, "
    "the star heuristic's steps, the MEKC program's objective and constraints with k = 10, and the random baseline "
    "(a permutation of the vocabulary in place of β, through the same pipeline)."
)

DIFFERENCES: tuple[tuple[str, str], ...] = (
    ("Reference corpus",
     "the bundled Wikipedia sample (about 470,000 words in some 100 articles, or a folder of the user's .txt files) "
     "instead of Wikipedia-V40K (all of English Wikipedia): the 3 GB count graphs cannot ship with the app or be "
     "downloaded here. NPMI values are therefore not comparable with the paper's; most word pairs never share a "
     "window in so little text, so coherences run lower."),
    ("Corpus vocabulary and words",
     "the 40,000 most frequent lower-cased alphabetic words of at least two letters of that corpus (the sample has "
     "fewer, so all of them), split on anything that is not a letter, without lemmatising; V40K has its own "
     "preprocessing and a whitespace split. Single letters are left out because they swamp the pools."),
    ("min_freq",
     "10 windows instead of 100: 100 windows of Wikipedia scaled to the sample would be below one window; 10 equals "
     "the window, so a pair must co-occur at least twice (one co-occurrence spans at most 9 windows), while a word "
     "seen once still counts. Settable; the Paper settings preset keeps 10 for this reason."),
    ("Token to word mapping",
     "one rule for every tokenizer: a word enters a pool when a single token maps to it (leading-space marker "
     "stripped, lower-cased: the paper's GPT-2 rule) or when all of its mid-sentence tokens are within the cut (the "
     "paper's Llama rule), and the cut shrinks by 50 while the pool holds more than τ words. The paper uses the "
     "first rule alone for GPT-2 and the second alone for SentencePiece models, so GPT-2 pools here can be larger "
     "and SentencePiece pools also catch capitalised single tokens. Why: the bundled model's tokenizer is "
     "byte-level BPE but splits many corpus words, so neither rule alone fits every model the app loads."),
    ("Self-pairs",
     "a word is never its own neighbour (the NPMI diagonal is 0 and self-edges are dropped), so a star's centre "
     "cannot count itself towards its degree or appear twice in its set."),
    ("MEKC solver and time limit",
     "SciPy's milp (HiGHS) instead of CVXPY with SCIP, with one more constraint, Σ_j e_ij = (k − 1) x_i, which holds "
     "for every integer solution and makes the relaxation tight enough to prove optimality quickly; time limit 30 s "
     "per set by default (180 s with Paper settings; paper 180 s, 120 s in the notebook). On the time limit the "
     "best topic found so far is kept and flagged instead of returning nothing."),
    ("Model and thresholds",
     "the bundled SmolLM2-135M (Llama architecture, 30 blocks) instead of GPT-2 and LLaMA; the GPT-2 notebook's "
     "θ = (0.1, 1) and κ = (10, 24) are the defaults and the Paper settings for every model (the Llama notebook "
     "used θ = (0.025, 1), κ = (10, 32)). Blocks are numbered from 1 (block l writes layer l): the paper's 0-based "
     "layer ℓ is block ℓ + 1 here."),
    ("Random baseline draws",
     "one seeded permutation per sampled neuron (seed × 1,000,003 + unit), not one draw for the whole run."),
    ("Real vs random statistics",
     "a seeded sample of n neurons of one block and mode instead of all neurons of every layer; judged over "
     "neurons (both pools together) on the 95 % bootstrap interval of the difference of means and on Wilson "
     "intervals for the share of neurons with a word set; the paper's Mann-Whitney U test is kept as extra "
     "evidence. Mean topic NPMI is per neuron over the neurons that have a topic."),
    ("Graph and scan",
     "the NPMI graph draws at most 150 of the thresholded edges (the rest are in the edges table), and the scan of "
     "a whole block runs the star heuristic without the exact MEKC step: both are display aids the paper does not "
     "have."),
)


def differences_markdown() -> str:
    """The differences as a markdown list (one bullet each)."""
    return "\n".join(f"- {title}: {text}" for title, text in DIFFERENCES)

"""Depth: the sections' names and tables, the lenses they read with, and the defaults.

Torch-free: the command line checks ``--table`` and ``--lens`` and takes its defaults from here before torch
loads; core.analyses.depth.sections registers the compute functions of these sections.
"""

from __future__ import annotations

SECTIONS: tuple[str, ...] = ("pos", "facts", "options", "frequency")
TABLES: dict[str, tuple[str, ...]] = {"pos": ("rows", "counts", "curves"), "facts": ("rows", "curves"),
                                      "options": ("rows", "summary"), "frequency": ("rows", "shares", "flips")}
# "": the depth sections' cache keys have never held a version, and an empty one adds none, so the stored
# results stay valid; set one (e.g. "2") when a section's maths or frames change.
SECTION_VERSION = ""
LENSES: tuple[str, ...] = ("logit", "tuned")  # the sections read each layer with one of these
DEFAULT_LENS = "logit"
DEFAULT_N = 50  # examples: per tag for pos, per task for options, in all for facts and frequency
MAX_N = 10_000
DEFAULT_SEED = 42

# Section sizes of the page's two presets (n per section, in the units of DEFAULT_N's comment).
# "paper": the paper's sizes where the bundled data allows them, else the most that is practical on 2 CPU cores
# (Gupta et al.: pos 10,000 candidates per function tag and 20,000 per content tag, of which GPT2-XL kept
# 2,023-5,574 correct ones; facts: MQuAKE-CF-3k single hops; options: up to 3,000 examples per task; frequency:
# 20,000 (POS script) to 100,000 random Wikipedia prefixes. RESEARCH.md §4a-4d.)
PRESETS: dict[str, dict[str, int]] = {
    "quick": {"pos": 20, "facts": 40, "options": 10, "frequency": 40},
    "paper": {"pos": 200,  # kept per tag: 1,200 kept examples of about 4,000 tried, ~10 min on 2 cores
              "facts": 252,  # every fact prompt the bundled relation lists give (facts.fact_examples)
              "options": 116,  # the bundled capital pairs (116); sentiment prompts are drawn from 116 sentences
              "frequency": 1000},  # prefixes; the paper's 20,000 would take about an hour here
}
PRESET_NOTES: dict[str, str] = {
    "quick": "Small samples (20 per tag, 40 facts, 10 per task, 40 prefixes): a first look in about a minute.",
    "paper": "The paper's sizes where the bundled data and 2 CPU cores allow them: 200 kept examples per tag (the "
             "paper kept 2,000-5,600 of 10,000-20,000 candidates), all 252 bundled fact prompts, 116 per option "
             "task, 1,000 frequency prefixes (paper 20,000-100,000). About a quarter hour on 2 CPU cores.",
}

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

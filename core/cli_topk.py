"""`python -m core ...` subcommand(s) for this analysis (filled in by its issue)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this analysis's subcommand(s) to the parser."""

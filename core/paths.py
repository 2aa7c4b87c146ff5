"""Where Layerscope keeps files: everything it writes lives under ``cache/``."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """The runtime cache folder (``cache/`` at the project root, or ``$LAYERSCOPE_CACHE``)."""
    root = Path(os.environ.get("LAYERSCOPE_CACHE", PROJECT_ROOT / "cache"))
    root.mkdir(parents=True, exist_ok=True)
    return root

"""The progress callback every long core function takes: ``progress(fraction in [0, 1], message)``."""

from __future__ import annotations

import logging
from typing import Callable

Progress = Callable[[float, str], None]
log = logging.getLogger("layerscope.progress")


def no_progress(fraction: float, message: str) -> None:
    """The default callback: progress goes to the debug log only."""
    log.debug("%3.0f%% %s", 100 * fraction, message)


def scaled(progress: Progress, start: float, end: float) -> Progress:
    """``progress`` for one part of a longer job: fractions 0..1 of the part map onto start..end of the whole."""
    return lambda fraction, message: progress(start + (end - start) * fraction, message)

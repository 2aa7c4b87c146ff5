"""Long work in background threads, so it survives reruns of the page: the job registry (no Streamlit calls)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from core.progress import Progress

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside a job's work at its next progress report once the job was cancelled."""


ETA_AFTER = 0.02
"""The measured time to go is shown once this fraction of the work is done (before: "estimating")."""


@dataclass
class Job:
    key: str
    label: str
    fraction: float = 0.0
    message: str = "Starting…"
    result: Any = None
    error: str | None = None
    done: bool = False
    cancelled: bool = False
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    def report(self, fraction: float, message: str) -> None:
        """The work's progress callback, and its cancellation point: every report of a cancelled job raises
        :class:`JobCancelled`, so the work stops there (a disk-cache entry is written only after the work returns,
        so a cancelled job leaves none)."""
        if self.cancel_requested.is_set():
            raise JobCancelled(self.label)
        self.fraction, self.message = max(0.0, min(1.0, float(fraction))), message

    def cancel(self) -> None:
        self.cancel_requested.set()

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def eta(self) -> float | None:
        """Seconds to go, measured: the time so far scaled by the work left (None before :data:`ETA_AFTER`)."""
        if self.done or self.fraction < ETA_AFTER:
            return None
        return self.elapsed * (1 - self.fraction) / self.fraction


class JobRegistry:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def start(self, key: str, label: str, work: Callable[[Progress], Any]) -> Job:
        """Start ``work(progress)`` unless the same job is running or finished without error."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.error is None:
                return job
            job = self._jobs[key] = Job(key=key, label=label)
        threading.Thread(target=self._run, args=(job, work), daemon=True, name=f"job-{label}").start()
        return job

    def forget(self, key: str) -> None:
        with self._lock:
            self._jobs.pop(key, None)

    @staticmethod
    def _run(job: Job, work: Callable[[Progress], Any]) -> None:
        try:
            job.result = work(job.report)
        except JobCancelled:
            job.cancelled = True
            job.error = f"Cancelled after {job.elapsed:.0f} s; nothing was stored."
        except (ValueError, OSError, RuntimeError, MemoryError) as err:
            job.error = f"{type(err).__name__}: {err}" if not isinstance(err, ValueError) else str(err)
        except Exception as err:  # noqa: BLE001 - a job must never die silently
            log.exception("job %s failed", job.label)
            job.error = f"Unexpected failure ({type(err).__name__}: {err})."
        finally:
            job.ended = time.monotonic()
            job.done = True

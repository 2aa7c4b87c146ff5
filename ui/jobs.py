"""Long work in background threads, so it survives reruns of the page and shows live progress.

A job runs pure core code (no Streamlit calls) in a daemon thread; pages poll it from a fragment that
re-runs every second and reruns the whole page when the job ends. Jobs are shared by every browser
session of this server (keyed by what they compute), so two people asking the same thing share one run.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import streamlit as st

from core.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class Job:
    key: str
    label: str
    fraction: float = 0.0
    message: str = "Starting…"
    result: Any = None
    error: str | None = None
    done: bool = False
    started: float = field(default_factory=time.monotonic)

    def report(self, fraction: float, message: str) -> None:
        self.fraction, self.message = max(0.0, min(1.0, float(fraction))), message


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
        except (ValueError, OSError, RuntimeError, MemoryError) as err:
            job.error = f"{type(err).__name__}: {err}" if not isinstance(err, ValueError) else str(err)
        except Exception as err:  # noqa: BLE001 - a job must never die silently
            log.exception("job %s failed", job.label)
            job.error = f"Unexpected failure ({type(err).__name__}: {err})."
        finally:
            job.done = True


def watch(key: str) -> None:
    """Show a running job's progress, refreshed every second; rerun the page when it ends."""

    @st.fragment(run_every=1.0)
    def _progress() -> None:
        from ui.cached import job_registry

        job = job_registry().get(key)
        if job is None:
            return
        if job.done:
            st.rerun()
        elapsed = time.monotonic() - job.started
        st.progress(job.fraction, text=f"{job.label}: {job.message} ({elapsed:.0f} s)")

    _progress()


def job_panel(key: str, label: str, work: Callable[[Progress], Any], *, button: str = "Run",
              button_key: str, caption: str = "", disabled: bool = False, start_now: bool = False) -> Any:
    """One background job on a page: a start button (or a start at once), then live progress, then the result.

    Returns the job's result once it finished, else None. A failed job shows its message and a "Try again"
    button that forgets it. ``key`` names what is computed (model identity + parameters), so equal work is shared.
    """
    from ui.cached import job_registry

    registry = job_registry()
    job = registry.get(key)
    if job is None:
        if start_now:
            registry.start(key, label, work)
            watch(key)
            return None
        st.button(button, key=button_key, type="primary", disabled=disabled,
                  on_click=lambda: registry.start(key, label, work))
        if caption:
            st.caption(caption)
        return None
    if not job.done:
        watch(key)
        return None
    if job.error:
        st.error(f"{label} failed: {job.error}")
        if st.button("Try again", key=f"retry_{button_key}"):
            registry.forget(key)
            st.rerun()
        return None
    return job.result

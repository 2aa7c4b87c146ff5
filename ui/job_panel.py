"""A background job on a page: start button, live progress (refreshed every second), result or error."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import streamlit as st

from core.progress import Progress
from ui.cached import job_registry


def watch(key: str) -> None:
    """Show a running job's progress, refreshed every second; rerun the page when it ends."""

    @st.fragment(run_every=1.0)
    def _progress() -> None:
        job = job_registry().get(key)
        if job is None:
            return
        if job.done:
            st.rerun()
        if job.queued:
            registry = job_registry()
            place, stats = registry.position(job), registry.stats()
            st.progress(0.0, text=f"{job.label}: waiting for a free worker, number {place} in the queue "
                                  f"({stats['running']:.0f} of {registry.max_running} workers busy, "
                                  f"{_duration(job.elapsed)} so far).")
            return
        st.progress(job.fraction, text=f"{job.label}: {job.message} ({progress_text(job)})")

    _progress()


@contextmanager
def worker(label: str) -> Iterator[None]:
    """Run the ``with`` body (a view computed while its page waits) on one of the server's job workers, so it counts
    against the same limit as the background jobs; while none is free the page says its place in the queue."""
    registry = job_registry()
    ticket, granted = registry.acquire(label)
    try:
        if not granted.is_set():
            note = st.empty()
            while not granted.wait(0.5):  # the st call below lets a rerun or a closed page end the wait
                stats = registry.stats()
                note.progress(0.0, text=f"{label}: waiting for a free worker, number {registry.position(ticket)} in "
                                        f"the queue ({stats['running']:.0f} of {registry.max_running} workers busy, "
                                        f"{_duration(ticket.elapsed)} so far).")
            note.empty()
        yield
    finally:
        registry.release(ticket)


def progress_text(job) -> str:
    """"12 s so far, about 40 s to go" (measured from the work done so far), or "estimating" early on."""
    eta = job.eta()
    if job.cancel_requested.is_set():
        return f"{job.elapsed:.0f} s so far, cancelling…"
    to_go = "estimating the time to go" if eta is None else f"about {_duration(eta)} to go"
    return f"{_duration(job.elapsed)} so far, {to_go}"


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds} s" if seconds < 90 else f"{seconds // 60} min {seconds % 60:02d} s"


def cancel_button(job, key: str) -> None:
    """Cancel a waiting job (it leaves the queue at once) or a running one (it stops at its next progress step)."""
    st.button("Cancel", key=key, on_click=lambda: job_registry().cancel(job),
              help="A waiting job leaves the queue; a running one stops at its next progress step. Nothing half-done "
                   "is stored.")


CANCELLED_KEY = "_cancelled_jobs"
"""Session state: keys of the jobs this visitor cancelled, which ``start_now`` then leaves to their button."""


def job_panel(key: str, label: str, work: Callable[[Progress], Any], *, button: str = "Run",
              button_key: str, caption: str = "", disabled: bool = False, start_now: bool = False) -> Any:
    """One background job on a page: a start button (or a start at once), then live progress, then the result.

    Returns the job's result once it finished, else None. A failed job shows its message and a "Try again"
    button that forgets it. ``key`` names what is computed (model identity + parameters), so equal work is shared.
    """
    registry = job_registry()
    job = registry.get(key)
    cancelled = st.session_state.setdefault(CANCELLED_KEY, set())  # this visitor's cancelled jobs

    def start() -> None:
        cancelled.discard(key)
        registry.start(key, label, work)

    if job is None and start_now and key not in cancelled:  # a job cancelled here waits for its button
        start()
        job = registry.get(key)  # shown below: progress and Cancel from the first run
    if job is None:
        st.button(button, key=button_key, type="primary", disabled=disabled, on_click=start)
        if caption:
            st.caption(caption)
        return None
    if not job.done:
        watch(key)
        cancel_button(job, f"cancel_{button_key}")
        return None
    if job.cancelled:
        st.info(f"{label}: {job.error}")
        registry.forget(key)
        cancelled.add(key)
        st.button(button, key=button_key, type="primary", disabled=disabled, on_click=start)
        return None
    if job.error:
        st.error(f"{label} failed: {job.error}")
        if st.button("Try again", key=f"retry_{button_key}"):
            registry.forget(key)
            st.rerun()
        return None
    return job.result

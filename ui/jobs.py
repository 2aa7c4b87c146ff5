"""Long work in background threads, so it survives reruns of the page: the job registry (no Streamlit calls)."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from core.progress import Progress

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside a job's work at its next progress report once the job was cancelled."""


READ_GRACE_S = 60.0
"""A finished job read this recently is never evicted for size: the page showing it (or about to) keeps it."""

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
    queued: bool = False  # waiting for a free worker (see JobRegistry.position)
    read: float = field(default_factory=time.monotonic)  # last time a page asked for it (eviction by age)
    nbytes: int = 0  # the result's size once finished (eviction by size)

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
        if self.done or self.queued or self.fraction < ETA_AFTER:
            return None
        return self.elapsed * (1 - self.fraction) / self.fraction


def result_bytes(value: Any, _seen: set[int] | None = None) -> int:
    """About how many bytes a job's result holds: frames, arrays and tensors by their buffers, containers and
    dataclasses by their parts (each object counted once)."""
    seen = set() if _seen is None else _seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, pd.DataFrame | pd.Series):
        return int(value.memory_usage(deep=True).sum() if isinstance(value, pd.DataFrame)
                   else value.memory_usage(deep=True))
    nbytes = getattr(value, "nbytes", None)  # numpy arrays
    if isinstance(nbytes, int):
        return nbytes
    if hasattr(value, "element_size") and hasattr(value, "nelement"):  # torch tensors, without importing torch
        return int(value.element_size() * value.nelement())
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(result_bytes(k, seen) + result_bytes(v, seen) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return sys.getsizeof(value) + sum(result_bytes(v, seen) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sys.getsizeof(value) + sum(result_bytes(getattr(value, f.name), seen)
                                          for f in dataclasses.fields(value))
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return sys.getsizeof(value) + result_bytes(vars(value), seen)
    return sys.getsizeof(value)


class JobRegistry:
    """Every background job of this server: at most ``max_running`` run at once, the rest wait in order (first
    asked, first run); asking for a job that is queued, running or finished without error returns that job, so
    visitors asking the same thing share it. Finished jobs are forgotten once unread for ``max_age_s`` and, oldest
    read first, while their results hold more than ``max_bytes`` in all."""

    def __init__(self, max_running: int | None = None, max_age_s: float = 3600.0,
                 max_bytes: float = 512 * 2**20) -> None:
        self.max_running = max(1, int(max_running or os.cpu_count() or 1))
        self.max_age_s, self.max_bytes = float(max_age_s), float(max_bytes)
        self._jobs: dict[str, Job] = {}
        self._waiting: list[tuple[Job, Callable[[Progress], Any]]] = []
        self._running = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Job | None:
        """The job under ``key`` (its result counts as read now), or None (never asked, cancelled while queued,
        forgotten or evicted)."""
        with self._lock:
            self._evict()
            job = self._jobs.get(key)
            if job is not None:
                job.read = time.monotonic()
            return job

    def start(self, key: str, label: str, work: Callable[[Progress], Any]) -> Job:
        """Queue ``work(progress)`` unless the same job is queued, running or finished without error; it starts at
        once while fewer than ``max_running`` jobs run."""
        with self._lock:
            self._evict()
            job = self._jobs.get(key)
            if job is not None and job.error is None:
                job.read = time.monotonic()
                return job
            job = self._jobs[key] = Job(key=key, label=label, queued=True, message="Waiting for a free worker…")
            self._waiting.append((job, work))
            self._dispatch()
        return job

    def position(self, job: Job) -> int:
        """1 for the next job to start, 2 for the one after…; 0 when ``job`` is not waiting."""
        with self._lock:
            for i, (waiting, _) in enumerate(self._waiting):
                if waiting is job:
                    return i + 1
        return 0

    def cancel(self, job: Job) -> None:
        """Cancel ``job``: a waiting one ends at once, a running one at its next progress report (either is then a
        finished, cancelled job until its page forgets it)."""
        with self._lock:
            for i, (waiting, _) in enumerate(self._waiting):
                if waiting is job:
                    del self._waiting[i]
                    job.cancelled = job.done = True
                    job.queued = False
                    job.error = "Cancelled before it started; nothing was computed."
                    job.ended = job.read = time.monotonic()
                    return
        job.cancel()

    def forget(self, key: str) -> None:
        with self._lock:
            job = self._jobs.pop(key, None)
            if job is not None and job.queued:
                self._waiting = [(j, w) for j, w in self._waiting if j is not job]

    def stats(self) -> dict[str, float]:
        """running, waiting, finished (kept) and the finished results' bytes."""
        with self._lock:
            finished = [j for j in self._jobs.values() if j.done]
            return {"running": self._running, "waiting": len(self._waiting), "finished": len(finished),
                    "bytes": sum(j.nbytes for j in finished)}

    def acquire(self, label: str) -> tuple[Job, threading.Event]:
        """A worker for work the caller runs in its own thread (a page view computed while the page waits): a
        ticket in the same first-come queue as the background jobs, and an event set once a worker is its. Pair with
        :meth:`release`, also when the caller gives up waiting. The ticket is not a shared job (``get`` never
        returns it)."""
        ticket = Job(key=f"inline-{id(object())}-{time.monotonic_ns()}", label=label, queued=True,
                     message="Waiting for a free worker…")
        granted = threading.Event()
        with self._lock:
            self._waiting.append((ticket, granted))
            self._dispatch()
        return ticket, granted

    def release(self, ticket: Job) -> None:
        """Give back the worker :meth:`acquire` got (or leave the queue, if it was still waiting)."""
        with self._lock:
            if ticket.queued:
                self._waiting = [(j, w) for j, w in self._waiting if j is not ticket]
                ticket.queued = False
            elif not ticket.done:
                ticket.done = True
                ticket.ended = time.monotonic()
                self._running -= 1
                self._dispatch()

    def _dispatch(self) -> None:  # under the lock
        while self._waiting and self._running < self.max_running:
            job, work = self._waiting.pop(0)
            job.queued, job.message = False, "Starting…"
            job.started = time.monotonic()
            self._running += 1
            if isinstance(work, threading.Event):  # an acquire()'s ticket: its caller runs the work
                work.set()
                continue
            threading.Thread(target=self._run, args=(job, work), daemon=True, name=f"job-{job.label}").start()

    def _evict(self) -> None:  # under the lock
        now = time.monotonic()
        finished = sorted((j for j in self._jobs.values() if j.done), key=lambda j: j.read)
        total = sum(j.nbytes for j in finished)
        for job in finished:
            unread = now - job.read
            if unread > self.max_age_s or (total > self.max_bytes and unread > READ_GRACE_S):
                total -= job.nbytes
                if self._jobs.get(job.key) is job:
                    del self._jobs[job.key]
                    log.info("job %s evicted (%.0f s unread, %d bytes)", job.label, now - job.read, job.nbytes)

    def _run(self, job: Job, work: Callable[[Progress], Any]) -> None:
        try:
            job.result = work(job.report)
            job.nbytes = result_bytes(job.result)
        except JobCancelled:
            job.cancelled = True
            job.error = f"Cancelled after {job.elapsed:.0f} s; nothing was stored."
        except (ValueError, OSError, RuntimeError, MemoryError) as err:
            job.error = f"{type(err).__name__}: {err}" if not isinstance(err, ValueError) else str(err)
        except Exception as err:  # noqa: BLE001 - a job must never die silently
            log.exception("job %s failed", job.label)
            job.error = f"Unexpected failure ({type(err).__name__}: {err})."
        finally:
            job.ended = job.read = time.monotonic()
            job.done = True
            with self._lock:
                self._running -= 1
                self._dispatch()
                self._evict()

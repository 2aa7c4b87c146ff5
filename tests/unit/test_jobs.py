"""Background jobs: cancellation at the next progress step, a measured time to go, nothing stored when cancelled."""

from __future__ import annotations

import threading
import time

import pytest

from ui.jobs import ETA_AFTER, Job, JobRegistry


def wait_done(job: Job, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not job.done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.done


def test_a_cancelled_job_stops_at_its_next_report_and_stores_nothing() -> None:
    registry, stored, steps = JobRegistry(), {}, []
    release = threading.Event()

    def work(progress):
        for step in range(1000):
            progress(step / 1000, f"step {step}")
            steps.append(step)
            if step == 3:
                release.wait(5)
        stored["result"] = "written only at the end, like core.cache.cached"
        return "done"

    job = registry.start("k", "Work", work)
    while len(steps) < 4:
        time.sleep(0.01)
    job.cancel()
    release.set()
    wait_done(job)
    assert job.cancelled and job.result is None and "Cancelled after" in job.error and "nothing was stored" in job.error
    assert steps == [0, 1, 2, 3] and not stored  # the report after the cancel raised; the rest never ran


def test_eta_is_measured_from_the_work_done() -> None:
    job = Job(key="k", label="Work", started=time.monotonic() - 10.0)
    job.report(ETA_AFTER / 2, "early")
    assert job.eta() is None  # too little done to measure
    job.report(0.25, "a quarter")
    assert job.eta() == pytest.approx(30.0, rel=0.05)  # 10 s for a quarter: about 30 s to go
    job.done = True
    assert job.eta() is None


def test_a_failed_job_is_not_a_cancelled_one() -> None:
    registry = JobRegistry()

    def work(progress):
        raise ValueError("bad input")

    job = registry.start("k", "Work", work)
    wait_done(job)
    assert job.error == "bad input" and not job.cancelled

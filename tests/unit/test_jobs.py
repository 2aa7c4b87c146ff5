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


def wait_idle(registry: JobRegistry, timeout: float = 10.0) -> None:
    """Until no worker is busy (a job frees its worker just after it is marked done)."""
    deadline = time.monotonic() + timeout
    while registry.stats()["running"] and time.monotonic() < deadline:
        time.sleep(0.01)


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


# -- the queue: at most max_running at once, positions, cancel while waiting, sharing, eviction ----------------
def _blocking_work(gate: threading.Event, started: list[str], name: str, result=None):
    def work(progress):
        started.append(name)
        progress(0.5, "half")
        gate.wait(10)
        return name if result is None else result
    return work


def test_at_most_max_running_jobs_run_and_the_rest_wait_in_order() -> None:
    registry, gate, started = JobRegistry(max_running=2), threading.Event(), []
    jobs = [registry.start(f"k{i}", f"J{i}", _blocking_work(gate, started, f"J{i}")) for i in range(5)]
    deadline = time.monotonic() + 5
    while len(started) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert sorted(started) == ["J0", "J1"]  # two run, three wait
    assert [registry.position(j) for j in jobs] == [0, 0, 1, 2, 3]
    assert [j.queued for j in jobs] == [False, False, True, True, True]
    assert jobs[2].eta() is None and registry.stats()["running"] == 2 and registry.stats()["waiting"] == 3
    gate.set()
    for job in jobs:
        wait_done(job)
    assert [j.result for j in jobs] == [f"J{i}" for i in range(5)]
    assert started[2:] == ["J2", "J3", "J4"]  # first asked, first run
    wait_idle(registry)
    assert registry.stats()["running"] == 0 and registry.stats()["waiting"] == 0


def test_work_done_in_the_callers_thread_takes_a_worker_in_the_same_queue() -> None:
    """acquire/release (a page view computed while its page waits): counted against max_running, first come first
    served with the background jobs, and a ticket given up while waiting leaves the queue."""
    registry, gate, started = JobRegistry(max_running=1), threading.Event(), []
    first = registry.start("k0", "J0", _blocking_work(gate, started, "J0"))
    ticket, granted = registry.acquire("inline view")
    later = registry.start("k1", "J1", _blocking_work(gate, started, "J1"))
    quitter, quitter_granted = registry.acquire("inline view that gives up")
    assert not granted.is_set() and registry.position(ticket) == 1 and registry.position(later) == 2
    assert registry.position(quitter) == 3 and registry.get(ticket.key) is None  # a ticket is never shared
    registry.release(quitter)  # gave up while waiting: out of the queue, no worker taken
    assert registry.stats()["waiting"] == 2 and not quitter_granted.is_set()
    gate.set()
    wait_done(first)
    assert granted.wait(5) and registry.stats()["running"] == 1  # the ticket's turn came before J1's
    time.sleep(0.05)
    assert started == ["J0"] and later.queued
    registry.release(ticket)
    wait_done(later)
    wait_idle(registry)
    assert started == ["J0", "J1"] and registry.stats()["running"] == 0 and registry.stats()["waiting"] == 0
    registry.release(ticket)  # a second release changes nothing
    assert registry.stats()["running"] == 0


def test_the_same_job_asked_twice_is_shared_while_waiting_running_and_done() -> None:
    registry, gate, started = JobRegistry(max_running=1), threading.Event(), []
    first = registry.start("a", "A", _blocking_work(gate, started, "A"))
    waiting = registry.start("b", "B", _blocking_work(gate, started, "B"))
    assert registry.start("a", "A", _blocking_work(gate, started, "A again")) is first
    assert registry.start("b", "B", _blocking_work(gate, started, "B again")) is waiting
    gate.set()
    wait_done(first), wait_done(waiting)
    assert registry.start("a", "A", _blocking_work(gate, started, "A again")) is first
    assert started == ["A", "B"]


def test_a_waiting_job_is_cancelled_at_once_and_leaves_the_queue() -> None:
    registry, gate, started = JobRegistry(max_running=1), threading.Event(), []
    running = registry.start("a", "A", _blocking_work(gate, started, "A"))
    waiting = [registry.start(k, k, _blocking_work(gate, started, k)) for k in ("b", "c")]
    registry.cancel(waiting[0])
    assert waiting[0].done and waiting[0].cancelled and "before it started" in waiting[0].error
    assert registry.get("b") is waiting[0]  # its page says so, forgets it and offers its Run button again
    assert registry.position(waiting[1]) == 1
    gate.set()
    wait_done(running), wait_done(waiting[1])
    assert started == ["A", "c"]  # the cancelled one never ran


def test_a_running_job_is_cancelled_through_the_registry_too() -> None:
    registry, gate, started = JobRegistry(max_running=1), threading.Event(), []

    def work(progress):
        started.append("A")
        while True:
            progress(0.1, "working")
            time.sleep(0.01)

    job = registry.start("a", "A", work)
    while not started:
        time.sleep(0.01)
    registry.cancel(job)
    wait_done(job)
    assert job.cancelled and "nothing was stored" in job.error
    follower = registry.start("b", "B", _blocking_work(gate, [], "B"))
    gate.set()
    wait_done(follower)  # the worker it held is free again
    assert follower.result == "B"


def test_finished_results_are_evicted_by_age_unread() -> None:
    registry = JobRegistry(max_running=2, max_age_s=0.2)
    job = registry.start("a", "A", lambda progress: "result")
    wait_done(job)
    assert registry.get("a") is job  # reading it keeps it
    time.sleep(0.3)
    assert registry.get("a") is None  # unread for longer than max_age_s


def test_finished_results_are_evicted_by_total_size_least_recently_read_first(monkeypatch) -> None:
    import ui.jobs as jobs_module

    monkeypatch.setattr(jobs_module, "READ_GRACE_S", 0.0)
    registry = JobRegistry(max_running=1, max_bytes=3.5 * 2**20)
    import numpy as np

    made = []
    for name in ("a", "b", "c"):
        made.append(registry.start(name, name, lambda progress: np.zeros(2**20 // 8)))  # 1 MiB each
        wait_done(made[-1])
        time.sleep(0.01)
    assert made[0].nbytes == 2**20
    registry.get("a")  # "a" read last: "b" is now the least recently read
    registry.start("d", "d", lambda progress: np.zeros(2**20 // 8))
    wait_done(registry.get("d"))
    kept = {k for k in "abcd" if registry.get(k) is not None}
    assert kept == {"a", "c", "d"}  # 4 MiB > 3.5 MiB: "b", the least recently read, went
    assert registry.stats()["bytes"] == 3 * 2**20


def test_a_result_just_finished_is_never_evicted_for_size() -> None:
    registry = JobRegistry(max_running=1, max_bytes=1)  # every result is over the budget
    job = registry.start("a", "A", lambda progress: "x" * 10_000)
    wait_done(job)
    assert registry.get("a") is job  # read within READ_GRACE_S of finishing: the page that asked gets it


def test_result_bytes_counts_frames_arrays_and_containers() -> None:
    import numpy as np
    import pandas as pd

    from ui.jobs import result_bytes

    frame = pd.DataFrame({"x": np.arange(1000, dtype=np.float64)})
    assert result_bytes(frame) >= 8000
    array = np.zeros(1000)
    assert result_bytes({"a": array, "b": [array, array]}) < 8000 + 1000  # the same array counted once

"""A job that waits for a free worker shows its place in the queue and a Cancel button that takes it out at once;
once a worker is free it runs and its result shows (the server-wide registry of ui/cached.py, its workers held
busy by blocking jobs)."""

from __future__ import annotations

import threading
import time

import pytest
from streamlit.testing.v1 import AppTest

from ui import cached


def _panel() -> None:
    from ui.job_panel import job_panel

    result = job_panel("test-queued-job", "Queued work", lambda progress: "the result", button="Run",
                       button_key="queued")
    if result is not None:
        import streamlit as st

        st.success(f"Result: {result}")


def _auto_panel() -> None:
    """A job that starts without a click (as a link to a stored result, or Topics' reference counting does)."""
    from ui.job_panel import job_panel

    job_panel("test-queued-job", "Queued work", lambda progress: "the result", button="Run", button_key="queued",
              start_now=True)


@pytest.fixture
def busy_workers():
    registry, gate = cached.job_registry(), threading.Event()
    blockers = [registry.start(f"test-blocker-{i}", f"Blocker {i}", lambda progress: gate.wait(30))
                for i in range(registry.max_running)]
    yield registry, gate
    gate.set()
    for job in blockers:
        registry.forget(job.key)
    registry.forget("test-queued-job")


def _progress_texts(at: AppTest) -> str:
    return " ".join(str(p.proto.text) for p in at.get("progress"))


def test_a_waiting_job_shows_its_place_and_can_be_cancelled(busy_workers) -> None:
    registry, gate = busy_workers
    at = AppTest.from_function(_panel, default_timeout=60).run()
    at.button(key="queued").click().run()
    assert "waiting for a free worker, number 1 in the queue" in _progress_texts(at)
    assert f"{registry.max_running} of {registry.max_running} workers busy" in _progress_texts(at)
    at.button(key="cancel_queued").click().run()
    assert any("before it started" in i.value for i in at.info)
    assert registry.stats()["waiting"] == 0
    at.run()
    assert at.button(key="queued")  # offered again
    assert not at.exception


def test_a_waiting_job_runs_once_a_worker_is_free(busy_workers) -> None:
    registry, gate = busy_workers
    at = AppTest.from_function(_panel, default_timeout=60).run()
    at.button(key="queued").click().run()
    assert "number 1 in the queue" in _progress_texts(at)
    gate.set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not at.success:
        time.sleep(0.2)
        at.run()
    assert [s.value for s in at.success] == ["Result: the result"]
    assert not at.exception


def test_a_cancelled_job_that_starts_by_itself_waits_for_its_button(busy_workers) -> None:
    registry, gate = busy_workers
    at = AppTest.from_function(_auto_panel, default_timeout=60).run()
    assert "number 1 in the queue" in _progress_texts(at)  # started without a click
    at.button(key="cancel_queued").click().run()
    assert any("before it started" in i.value for i in at.info)
    for _ in range(3):  # later reruns (the page polls, the visitor moves a control) do not start it again
        at.run()
        assert registry.get("test-queued-job") is None and not _progress_texts(at)
        assert at.button(key="queued")
    at.button(key="queued").click().run()  # the button starts it, and it counts as wanted again
    assert "number 1 in the queue" in _progress_texts(at)
    assert not at.exception

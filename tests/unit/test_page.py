"""The page frame (ui/page.py): the URL is written on every exit of a page, and ``stop_page`` ends the body.

The pages run as AppTest scripts with the frame's sidebar replaced by a stand-in (no model is loaded), so these
tests are fast; the real pages are covered on the bundled model in tests/app/.
"""

from __future__ import annotations

from typing import Callable

import pytest
from streamlit.testing.v1 import AppTest

import ui.page
from ui.state import set_value

LOADED = object()  # stands in for the sidebar's Selection: the frame only passes it on


def fake_sidebar(loaded: bool) -> Callable[[], object | None]:
    """A sidebar that picks model "m" and prompt "p" (as the real one does, into the URL-bound state)."""

    def sidebar() -> object | None:
        set_value("model", "m")
        set_value("prompt", "p")
        return LOADED if loaded else None

    return sidebar


def run_script(script: Callable[[], None], monkeypatch: pytest.MonkeyPatch, loaded: bool = True) -> AppTest:
    monkeypatch.setattr(ui.page, "sidebar", fake_sidebar(loaded))
    return AppTest.from_function(script, default_timeout=30).run()


def stops_early() -> None:
    # AppTest runs only this function's source, so it imports what it uses itself
    import streamlit as st

    from ui.page import page, stop_page
    from ui.state import set_value

    with page("Frame", ":material/layers:", ["x"]):
        set_value("x", "7")
        stop_page("bad input")
        st.markdown("unreachable")


def finishes() -> None:
    import streamlit as st

    from ui.page import page
    from ui.state import set_value

    with page("Frame", ":material/layers:", ["x"], caption="what it shows") as selection:
        set_value("x", "8")
        st.markdown(f"body ran with {'a' if selection is not None else 'no'} selection")


def fails() -> None:
    from ui.page import page
    from ui.state import set_value

    with page("Frame", ":material/layers:", ["x"]):
        set_value("x", "9")
        raise RuntimeError("boom")


def without_model_requirement() -> None:
    import streamlit as st

    from ui.page import page

    with page("Layerscope", ":material/home:", require_model=False) as selection:
        st.markdown(f"body ran with {'a' if selection is not None else 'no'} selection")


def test_stop_page_shows_the_message_skips_the_rest_and_writes_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_script(stops_early, monkeypatch)
    assert not at.exception, [e.message for e in at.exception]
    assert [e.value for e in at.error] == ["bad input"]
    assert not [m for m in at.markdown if m.value == "unreachable"]
    assert dict(at.query_params) == {"model": "m", "prompt": "p", "x": "7"}


def test_a_model_that_failed_to_load_skips_the_body_and_still_writes_the_url(
        monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_script(finishes, monkeypatch, loaded=False)
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value == "Frame"
    assert not at.markdown  # the body never ran
    assert dict(at.query_params) == {"model": "m", "prompt": "p"}


def test_a_finished_page_has_its_title_caption_and_url(monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_script(finishes, monkeypatch)
    assert not at.exception and not at.error
    assert at.title[0].value == "Frame" and at.caption[0].value == "what it shows"
    assert [m.value for m in at.markdown] == ["body ran with a selection"]
    assert dict(at.query_params) == {"model": "m", "prompt": "p", "x": "8"}


def test_a_failing_page_still_writes_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_script(fails, monkeypatch)
    assert [e.message for e in at.exception] == ["boom"]
    assert dict(at.query_params) == {"model": "m", "prompt": "p", "x": "9"}


def test_without_the_model_requirement_the_body_runs_with_no_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_script(without_model_requirement, monkeypatch, loaded=False)
    assert not at.exception
    assert [m.value for m in at.markdown] == ["body ran with no selection"]
    assert dict(at.query_params) == {"model": "m", "prompt": "p"}

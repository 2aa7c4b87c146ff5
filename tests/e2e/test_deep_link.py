"""A fresh server whose first request is a deep link serves the app's own menu (issue 15, part 4).

Streamlit discovers a folder named ``pages/`` beside the main script on its own; when the first request of a fresh
server was a deep link (``/Extraction?n=10``), that discovered list (file names as titles, no icons) replaced the
``st.navigation`` menu for every later visitor. The page scripts live in ``app_pages/`` so there is nothing to
discover: this test starts its own server and opens a deep link first.
"""

from __future__ import annotations

from typing import Iterator

import pytest
from test_e2e import (CHROMIUM, CHROMIUM_ARGS, PAGE_RUN_MS, VIEWPORT, _require_browser, assert_no_errors,
                      streamlit_server, wait_until_ran)

from ui.menu import ANALYSES, HOME

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory) -> Iterator[str]:
    _require_browser()
    with streamlit_server("app.py", tmp_path_factory.mktemp("deep_link") / "streamlit.log") as base:
        yield base


def menu_labels(tab) -> list[str]:
    nav = tab.locator('[data-testid="stSidebarNav"] a')
    return [text.strip() for text in nav.all_inner_texts()]


def test_a_deep_link_first_keeps_the_apps_menu(fresh_server: str) -> None:
    from playwright.sync_api import sync_playwright

    wanted = [HOME[1]] + [title for _path, title, _icon, _blurb in ANALYSES]
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for url in (f"{fresh_server}/Top-k_order?section=saturation", f"{fresh_server}/"):
                context = chromium.new_context(viewport=VIEWPORT)  # a first visitor, then a later one
                tab = context.new_page()
                tab.problems = []
                tab.on("pageerror", lambda err: tab.problems.append(str(err)))
                tab.goto(url, timeout=PAGE_RUN_MS)
                wait_until_ran(tab)
                assert_no_errors(tab)
                labels = menu_labels(tab)
                assert [label.split("\n")[-1] for label in labels] == wanted, labels
                context.close()
        finally:
            chromium.close()

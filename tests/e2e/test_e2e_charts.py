"""End to end: every analysis page with results, every tab, in headless Chromium, screenshotted for review.

Each analysis page is opened with its "Quick look" preset; in every tab the test presses the Run button(s) it
finds, waits for the job, and checks that the tab shows no exception or error alert and that no chart is wider
than its container (no facets running off the right edge). A full-page screenshot of each tab goes to
tests/artifacts/charts[/w<width>]/ (git-ignored) for a human to look at every chart (issue 15: "look at every chart
in the browser test's screenshots").

Without /usr/bin/chromium the test is skipped, except under CI (CI=true), where it fails instead.
"""

from __future__ import annotations

import os
import re
import time

import pytest
from test_e2e import (PAGE_RUN_MS, ROOT, VIEWPORT, assert_no_errors, browser, page, server,  # noqa: F401 (fixtures)
                      wait_until_ran)

WIDTH = os.environ.get("LAYERSCOPE_E2E_WIDTH", "")
ARTIFACTS = ROOT / "tests" / "artifacts" / "charts" / (f"w{WIDTH}" if WIDTH else "")
JOB_S = 420  # one tab's jobs at the quick-look sizes, on 2 shared cores
pytestmark = pytest.mark.e2e

JOB_BUTTONS = ("Run", "Compare", "Scan")  # the labels of the pages' job buttons
PAGES = ["Extraction", "Depth", "Top-k_order", "Neuron_topics", "Attention_MLP"]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40]


_PRESS_NEXT = """([labels, pressed]) => {
    // The shown tab panel (Streamlit keeps the others in the DOM, hidden), else the main area; found, read and
    // clicked in one step in the page, so a rerun that redraws the buttons cannot detach one between reading its
    // label and clicking it (CI once timed out reading the label of a button that had just gone).
    const main = document.querySelector('[data-testid="stMain"]');
    if (!main) return null;
    const panels = [...main.querySelectorAll('[role="tabpanel"]')].filter(p => p.offsetParent !== null);
    const root = panels.length ? panels[panels.length - 1] : main;
    for (const b of root.querySelectorAll('button')) {
        // hidden, disabled, or a view switch (segmented control): not a job button
        if (b.offsetParent === null || b.disabled || b.closest('[data-testid="stButtonGroup"]')) continue;
        const text = (b.innerText || '').trim();
        if (labels.some(l => text.startsWith(l)) && !pressed.includes(text)) { b.click(); return text; }
    }
    return null;
}"""


def _settled(tab) -> bool:
    """The script is idle, no status widget shows, and no job shows progress: twice, 1.5 s apart (a job that
    just finished reruns the page)."""
    for _ in range(2):
        idle = tab.evaluate(
            """() => {
                const app = document.querySelector('[data-testid="stApp"]');
                return !!app && app.getAttribute('data-test-script-state') === 'notRunning'
                    && !document.querySelector('[data-testid="stStatusWidget"]')
                    && !document.querySelector('[data-testid="stMain"] [data-testid="stProgress"]');
            }""")
        if not idle:
            return False
        tab.wait_for_timeout(1500)
    return True


def _run_jobs(tab, labels: tuple[str, ...] = JOB_BUTTONS) -> None:
    """Press each visible job button (Run / Compare / Scan) of the shown panel once, then wait until the page is
    idle with no job showing progress."""
    pressed: set[str] = set()
    deadline = time.monotonic() + JOB_S
    while time.monotonic() < deadline:
        label = tab.evaluate(_PRESS_NEXT, [list(labels), sorted(pressed)])
        if label:
            pressed.add(label)
            tab.wait_for_timeout(1500)
            continue
        if _settled(tab):
            return
        tab.wait_for_timeout(1000)
    pytest.fail(f"jobs still running after {JOB_S} s (pressed {sorted(pressed)})")


def screenshot(tab, path) -> None:
    """A full-page screenshot of the whole main area (the viewport stretched to its height, then restored)."""
    height = tab.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    tab.set_viewport_size({"width": VIEWPORT["width"], "height": min(int(height) + 40, 12_000)})
    tab.wait_for_timeout(600)
    tab.screenshot(path=str(path), full_page=True)
    tab.set_viewport_size(VIEWPORT)


def _overflowing_charts(tab) -> list[str]:
    """Charts in the shown panel whose drawing is wider than their container (scrolls sideways)."""
    return tab.evaluate(
        """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
              .filter(el => el.offsetParent !== null)
              .filter(el => { const c = el.querySelector('canvas, svg');
                              return c && c.getBoundingClientRect().right > el.getBoundingClientRect().right + 2
                                     || el.scrollWidth > el.clientWidth + 2; })
              .map(el => (el.getAttribute('aria-label') || el.innerText || 'chart').slice(0, 60))""")


@pytest.mark.parametrize("url_path", PAGES)
def test_every_tab_with_results(server: str, page, url_path: str) -> None:  # noqa: F811 (fixtures)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{server}/{url_path}", timeout=PAGE_RUN_MS)
    wait_until_ran(page)
    quick = page.get_by_role("button", name="Quick look")
    if quick.count():
        quick.first.click()
        page.wait_for_timeout(1000)
        _run_jobs(page)  # nothing pressed yet: waits until the page is idle
    tabs = page.locator('[data-testid="stMain"] [role="tab"]')
    names = [t.inner_text().strip() for t in tabs.all()] or [""]
    problems: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        if name:
            page.locator('[data-testid="stMain"] [role="tab"]').nth(i).click()
            page.wait_for_timeout(800)
        _run_jobs(page)
        assert_no_errors(page)
        overflow = _overflowing_charts(page)
        if overflow:
            problems[name] = overflow
        screenshot(page, ARTIFACTS / f"{url_path}_{i}_{_slug(name) or 'page'}.png")
    assert not problems, f"charts wider than their container: {problems}"

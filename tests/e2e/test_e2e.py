"""End to end: the real app in a `streamlit run` subprocess, every page opened in headless Chromium.

Pages are discovered from app_pages/, so a new page is covered without touching this file. Each page must
finish running with no exception and no error alert on the default input, show its title, and leave a
full-page screenshot in tests/artifacts/ (git-ignored) for a human to look at. LAYERSCOPE_E2E_WIDTH=1280 (or 1920)
sets the browser width (default 1400); the screenshots then go to tests/artifacts/w1280/.

Without /usr/bin/chromium the test is skipped, except under CI (CI=true), where it fails instead.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
WIDTH = os.environ.get("LAYERSCOPE_E2E_WIDTH", "")
ARTIFACTS = ROOT / "tests" / "artifacts" / (f"w{WIDTH}" if WIDTH else "")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SERVER_START_S = 90
PAGE_RUN_MS = 240_000  # the first page load may convert and load the bundled model (about 20-30 s)
VIEWPORT = {"width": int(WIDTH or 1400), "height": 1000}

pytestmark = pytest.mark.e2e


class Page(NamedTuple):
    url_path: str  # "" for the home page
    title: str | None  # the page's st.title(...), when it has a literal one
    script: Path


def _title_of(script: Path) -> str | None:
    match = re.search(r"""st\.title\(\s*(["'])(.+?)\1""", script.read_text(encoding="utf-8"))
    return match.group(2) if match else None


def _url_path(script: Path) -> str:
    """Streamlit's pathname of an app_pages/ file: "1_Lens.py" -> "Lens" (number prefix and suffix dropped)."""
    name = re.sub(r"^[0-9]*[_ -]*", "", script.stem) or script.stem
    return re.sub(r"[_ ]+", "_", name).strip("_")


def discover_pages() -> list[Page]:
    """The home page, then every page under app_pages/ in Streamlit's order."""
    scripts = sorted((ROOT / "app_pages").glob("*.py"), key=lambda p: (_leading_number(p.name), p.name))
    home = ROOT / "app_pages" / "0_Home.py"  # app.py's default page, served at "/"
    return [Page("", _title_of(home), home)] + [
        Page(_url_path(s), _title_of(s), s) for s in scripts if not s.name.startswith("_") and s != home]


def _leading_number(name: str) -> float:
    match = re.match(r"[0-9]+", name)
    return float(match.group()) if match else float("inf")


PAGES = discover_pages()
# What each known page must show for the default input (beyond its title); other pages: the title only.
PAGE_CONTENT = {
    "": '[data-testid="stVegaLiteChart"]',
    "Lens": '[data-testid="stVegaLiteChart"]',
}


def _require_browser() -> None:
    """Skip without Chromium, but never under CI: there a missing browser must fail the run."""
    in_ci = os.environ.get("CI", "").lower() in ("true", "1")
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (install Debian's chromium: `apt-get install chromium`)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the Python package playwright is not installed"
    if reason is None:
        return
    if in_ci:
        pytest.fail(f"End-to-end test cannot run under CI: {reason}.")
    pytest.skip(f"End-to-end browser test skipped: {reason}.")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(base: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"streamlit did not answer within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


@contextmanager
def streamlit_server(script: str | Path, log: Path, *extra: str) -> Iterator[str]:
    """`streamlit run script` (from the repository root) on a free port: yields its base URL once it answers, and
    always terminates it."""
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false", *extra]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base, proc, log)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """`streamlit run app.py` on a free port; yields its base URL and always terminates it."""
    _require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with streamlit_server("app.py", ARTIFACTS / "streamlit.log") as base:
        yield base


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator["object"]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture()
def page(browser) -> Iterator["object"]:
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda err: problems.append(str(err)))
    tab.problems = problems  # JavaScript errors, checked by the tests
    try:
        yield tab
    finally:
        context.close()


def wait_until_ran(tab) -> None:
    """Wait until the script has run to its end: not running, no status widget, content (or an error) shown."""
    app = tab.locator('[data-testid="stApp"]')
    app.wait_for(state="attached", timeout=PAGE_RUN_MS)
    # A page whose background job finishes reruns itself (ui.jobs polls and calls st.rerun): wait again
    # until it stays idle through the pause, a bounded number of times.
    for _ in range(5):
        tab.wait_for_function(
            """() => {
                const app = document.querySelector('[data-testid="stApp"]');
                return app && app.getAttribute('data-test-script-state') === 'notRunning'
                    && !document.querySelector('[data-testid="stStatusWidget"]')
                    && document.querySelector(
                        '[data-testid="stMain"] :is(h1, [data-testid="stAlertContainer"], [data-testid="stException"])');
            }""",
            timeout=PAGE_RUN_MS, polling=250,
        )
        tab.wait_for_timeout(1500)  # let Vega charts finish drawing
        if app.get_attribute("data-test-script-state") == "notRunning":
            break
    assert app.get_attribute("data-test-script-state") == "notRunning"


def screenshot(tab, name: str) -> Path:
    """A full-page PNG: the viewport is grown to the main area's height (it scrolls inside the page)."""
    height = tab.evaluate(
        """() => Math.max(...['stMain', 'stAppViewContainer', 'stSidebar']
              .map(id => document.querySelector(`[data-testid="${id}"]`))
              .filter(Boolean).map(el => el.scrollHeight), document.body.scrollHeight)""")
    tab.set_viewport_size({"width": VIEWPORT["width"], "height": min(int(height) + 40, 12_000)})
    tab.wait_for_timeout(800)
    path = ARTIFACTS / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    return path


def assert_no_errors(tab) -> None:
    exceptions = tab.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.all_inner_texts()
    alerts = tab.locator('[data-testid="stAlertContentError"]')
    assert alerts.count() == 0, alerts.all_inner_texts()
    assert not tab.problems, tab.problems


@pytest.mark.parametrize("spec", PAGES, ids=[p.url_path or "home" for p in PAGES])
def test_page_renders(server: str, page, spec: Page) -> None:
    page.goto(f"{server}/{spec.url_path}", timeout=PAGE_RUN_MS)
    wait_until_ran(page)
    assert_no_errors(page)
    heading = page.locator('[data-testid="stMain"] h1').first
    assert heading.is_visible()
    if spec.title:
        assert spec.title in heading.inner_text()
    expected = PAGE_CONTENT.get(spec.url_path)
    if expected:
        main = page.locator('[data-testid="stMain"]')
        main.locator(expected).first.wait_for(state="visible", timeout=30_000)
    path = screenshot(page, spec.url_path or "home")
    assert path.stat().st_size > 10_000


def test_home_names_the_prediction(server: str, page) -> None:
    page.goto(server, timeout=PAGE_RUN_MS)
    wait_until_ran(page)
    assert "predicts" in page.locator('[data-testid="stMain"]').inner_text()
    assert "Paris" in page.locator('[data-testid="stMarkdownContainer"]', has_text="predicts").inner_text()


def test_lens_link_reopens_view(server: str, page) -> None:
    if not any(p.url_path == "Lens" for p in PAGES):
        pytest.skip("no Lens page")
    page.goto(f"{server}/Lens?cell=20,3&color=entropy", timeout=PAGE_RUN_MS)
    wait_until_ran(page)
    assert_no_errors(page)
    def shown(label: str) -> str:  # a selectbox is a combobox whose input shows the chosen option
        return page.get_by_role("combobox", name=label, exact=True).input_value()

    assert shown("Colour cells by") == "entropy"
    assert shown("Layer") == "20"
    assert re.fullmatch(r"3 \W?France", shown("Position")), shown("Position")
    assert re.search(r"[?&]cell=20(%2C|,)3", page.url) and "color=entropy" in page.url
    assert "after block 20 at position 3" in page.locator('[data-testid="stMain"]').inner_text()
    screenshot(page, "Lens_cell_20_3_entropy")


def test_lens_what_if(server: str, page) -> None:
    """The what-if comparison renders in the browser too (screenshot for review)."""
    if not any(p.url_path == "Lens" for p in PAGES):
        pytest.skip("no Lens page")
    page.goto(f"{server}/Lens?whatif=1&prompt_b=The+capital+of+Germany+is", timeout=PAGE_RUN_MS)
    wait_until_ran(page)
    assert_no_errors(page)
    assert "prompt A (solid) vs B (dashed)" in page.locator('[data-testid="stMain"]').inner_text()
    screenshot(page, "Lens_what_if")


def test_bad_model_shows_error_not_traceback(server: str, page) -> None:
    """The error check above is not vacuous: an unknown model shows an error alert, never a traceback."""
    page.goto(f"{server}/?model=nonexistent-org/nonexistent-model", timeout=PAGE_RUN_MS)
    wait_until_ran(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    alert = page.locator('[data-testid="stAlertContentError"]')
    assert alert.count() == 1 and "nonexistent-org/nonexistent-model" in alert.inner_text()


def test_sidebar_keeps_prompt_and_model_across_pages(server: str, page) -> None:
    """Switching pages from the menu keeps the sidebar's prompt and random-init choice (they used to show empty
    and unticked on the new page while the analysis still used the old values)."""
    sidebar = page.locator('[data-testid="stSidebar"]')

    def go(title: str) -> None:
        sidebar.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
        page.locator('[data-testid="stMain"] h1', has_text=title).wait_for(timeout=PAGE_RUN_MS)
        wait_until_ran(page)

    page.goto(f"{server}/?prompt=The+capital+of+Italy+is", timeout=PAGE_RUN_MS)
    wait_until_ran(page)
    go("Lens")
    assert sidebar.locator("textarea").first.input_value() == "The capital of Italy is"
    sidebar.get_by_text("Random-init twin").click()
    page.wait_for_url(re.compile(r"model=random"), timeout=PAGE_RUN_MS)  # the rerun with the twin has ended
    wait_until_ran(page)
    go("Depth")
    assert sidebar.get_by_role("checkbox", name=re.compile("Random-init twin")).is_checked()
    assert sidebar.locator("textarea").first.input_value() == "The capital of Italy is"
    assert_no_errors(page)

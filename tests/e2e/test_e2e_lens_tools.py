"""End to end: the Lens page's tools (patching, patch lens, contributions, attention, generation, chat tokens) in
headless Chromium, each opened from its URL, its job buttons pressed, screenshotted for review (issue 16).

Each view must show no exception or error alert and no chart wider than its container; the screenshots go to
tests/artifacts/lens_tools[/w<width>]/ (git-ignored).
"""

from __future__ import annotations

import pytest
from test_e2e import (PAGE_RUN_MS, ROOT, assert_no_errors, browser, page, server,  # noqa: F401 (fixtures)
                      wait_until_ran)
from test_e2e_charts import WIDTH, _overflowing_charts, _run_jobs, screenshot

ARTIFACTS = ROOT / "tests" / "artifacts" / "lens_tools" / (f"w{WIDTH}" if WIDTH else "")
pytestmark = pytest.mark.e2e

CLEAN, CORRUPT = "The Eiffel Tower is in the city of", "The Colosseum is in the city of"
VIEWS = {
    "patching": f"view=patch&prompt={CLEAN}&patch_prompt_b={CORRUPT}",
    "contributions": "view=contrib&cell=24,4",
    "attention": "view=attn&attn_layer=24",
    "generation": "view=gen&gen_n=12",
    "chat": "view=lens&chat=True",
}
EXTRA_BUTTONS = ("Run", "Generate", "Run the patch lens")


@pytest.mark.parametrize("name", list(VIEWS))
def test_lens_tool_view(server: str, page, name: str) -> None:  # noqa: F811 (fixtures)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{server}/Lens?{VIEWS[name].replace(' ', '+')}", timeout=PAGE_RUN_MS)
    wait_until_ran(page)
    _run_jobs(page, EXTRA_BUTTONS)  # Run / Generate (the patch lens's "Run the patch lens" starts with "Run" too)
    assert_no_errors(page)
    if name == "chat":
        page.locator(".st-key-x_tokens summary").click()  # opening the Tokens expander reruns the page
        page.locator('[data-testid="stSidebar"]').get_by_text("special (✓)").first.wait_for(timeout=PAGE_RUN_MS)
        sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
        assert "5 special" in sidebar, sidebar[-600:]  # SmolLM2's template: system + user + assistant markers
    overflow = _overflowing_charts(page)
    screenshot(page, ARTIFACTS / f"{name}.png")
    assert not overflow, f"charts wider than their container: {overflow}"

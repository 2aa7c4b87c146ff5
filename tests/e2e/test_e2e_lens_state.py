"""In the browser: page controls keep the values in use through a model that failed to load (issue 14, part 6).

AppTest does not reproduce this one: the browser re-created the number inputs at their minimum (top-k 1, stride 1)
while the URL and the chart still said 5 and 2.
"""

from __future__ import annotations

import pytest
from test_e2e import browser, page, server, wait_until_ran  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e


def number_inputs(tab) -> list[str]:
    return [box.input_value() for box in tab.locator('[data-testid="stNumberInput"] input').all()]


def test_controls_survive_a_failed_model_load(server: str, page) -> None:  # noqa: F811
    page.goto(f"{server}/Lens?top_k=5&stride=2&color=entropy", timeout=240_000)
    wait_until_ran(page)
    assert number_inputs(page) == ["5", "2"]
    page.get_by_text("Hub id or local folder…").click()
    wait_until_ran(page)
    box = page.get_by_placeholder("gpt2, EleutherAI/pythia-160m, ./my-checkpoint")
    box.fill("nonexistent-org/nonexistent-model")
    box.press("Enter")
    wait_until_ran(page)
    assert "nonexistent-org" in page.locator('[data-testid="stAlertContentError"]').first.inner_text()
    page.get_by_text("SmolLM2-135M-Instruct (bundled, offline)").click()
    wait_until_ran(page)
    assert number_inputs(page) == ["5", "2"]  # the values in use, not the inputs' minimum
    assert "top_k=5" in page.url and "stride=2" in page.url

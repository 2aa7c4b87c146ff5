"""AppTest for the Depth page: every section runs at small n, draws its figure, and the verdict follows."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]

DEPTH = ROOT / "pages" / "3_Depth.py"
pytestmark = pytest.mark.integration


def test_depth_sections_run_and_the_verdict_is_stated() -> None:
    at = AppTest.from_file(str(DEPTH), default_timeout=300)
    at.query_params["depth_seed"] = "7"
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    small = {"pos": 1, "facts": 3, "options": 1, "frequency": 3}
    for section, n in small.items():
        at.number_input(key=f"w_depth_n_{section}").set_value(n).run()
        at.button(key=f"run_depth_{section}").click().run()
    def finished() -> int:
        return sum(e.label == "Tables" for e in at.expander)

    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and finished() < len(small):
        time.sleep(3)
        at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert finished() == len(small), "some section never finished"
    verdicts = [m.value for m in at.markdown if "function words" in m.value.lower()]
    assert verdicts and ("holds" in verdicts[0] or "cannot tell" in verdicts[0]), [m.value for m in at.markdown]
    claims = [m.value for m in at.markdown if m.value.startswith(":material/")]
    assert len(claims) == 5, claims
    assert at.query_params["depth_seed"] == "7"

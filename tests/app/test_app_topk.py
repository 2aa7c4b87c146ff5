"""AppTest for the Top-k order page: each text section runs at very small n and draws its figures; the
controls round-trip through the URL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]

PAGE = ROOT / "app_pages" / "4_Top-k_order.py"
SECTIONS = ("saturation", "baseline", "probing", "early-exit", "better-lm")
pytestmark = pytest.mark.integration
# the same settings as the integration test in tests/test_topk/ (they share the per-text disk cache)
SMALL = {"topk_n": "5", "topk_k": "4", "topk_seed": "3", "topk_max_tokens": "40", "topk_tasks": "2",
         "topk_eval": "2", "topk_perm": "50"}


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error] + [str(e.value) for e in at.exception]


def test_every_section_runs_and_draws_and_the_url_round_trips() -> None:
    at = AppTest.from_file(str(PAGE), default_timeout=300)
    for name, value in SMALL.items():
        at.query_params[name] = value
    at.run()
    assert not _errors(at), _errors(at)
    assert at.number_input(key="w_topk_n").value == 5 and at.number_input(key="w_topk_k").value == 4
    for section in SECTIONS:
        at.button(key=f"run_topk_{section}").click().run()

    def finished() -> int:
        return sum(e.label == "Tables" for e in at.expander)

    deadline = time.monotonic() + 500
    while time.monotonic() < deadline and finished() < len(SECTIONS) and not _errors(at):
        time.sleep(3)
        at.run()
    assert not _errors(at), _errors(at)
    assert finished() == len(SECTIONS), "some section never finished"
    captions = " ".join(c.value for c in at.caption)
    assert "Kept by the filter" in captions and "mean τ" in captions
    assert "Pooled probe balanced accuracy" in captions and "Baseline" in captions and "two-proportion" in captions
    assert "random-init twin" in captions
    # the one layer convention: quoted paper constants (0-based block indices) say what they are here (L = 30)
    assert "int(0.85·30) = 25 (the paper's layer 25 = after block 26 here" in captions
    assert "the paper's layer 5 = after block 6 here" in captions and "layer l is the residual stream" in captions
    for name, value in SMALL.items():
        assert at.query_params[name] == [value] or at.query_params[name] == value, name
    at.number_input(key="w_topk_seed").set_value(4).run()
    assert at.query_params["topk_seed"] in ("4", ["4"])
    assert at.button(key="run_topk_saturation")  # new settings: a new job to start

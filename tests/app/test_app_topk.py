"""AppTest for the Top-k order page: each text section runs at very small n and draws its figures; the
controls round-trip through the URL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from text_scan import assert_clean_text

ROOT = Path(__file__).resolve().parents[2]

PAGE = ROOT / "app_pages" / "4_Top-k_order.py"
SECTIONS = ("saturation", "baseline", "probing", "early-exit", "better-lm")
pytestmark = pytest.mark.integration
# the same settings as the integration test in tests/test_topk/ (they share the per-text disk cache)
SMALL = {"topk_n": "5", "topk_k": "4", "topk_seed": "3", "topk_max_tokens": "40", "topk_tasks": "2",
         "topk_eval": "2", "topk_perm": "50", "topk_view_text": "1"}


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
        run = [b for b in at.button if b.key == f"run_topk_{section}"]
        if run:  # no button when the disk cache holds this section already: it then shows by itself
            run[0].click().run()

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
    assert at.number_input(key="w_topk_view_text").value == 1  # the per-position view's text, from the URL
    # the one layer convention: quoted paper constants (0-based block indices) say what they are here (L = 30)
    assert "int(0.85·30) = 25 (the paper's layer 25 = after block 26 here" in captions
    assert "the paper's layer 5 = after block 6 here" in captions and "layer l is the residual stream" in captions
    for name, value in SMALL.items():
        assert at.query_params[name] == [value] or at.query_params[name] == value, name
    # the Verdict tab judges every claim this page measures, each with its interval and n (or "not run")
    claims = [m.value for m in at.markdown if m.value.startswith(":material/")]
    assert len(claims) == 10, claims
    assert sum("Check (true by construction)" in c for c in claims) == 1
    assert any("Kendall" in c and "95 % CI" in c for c in claims), claims
    assert any("Method vs the paper's code" in c.value for c in at.caption)
    assert_clean_text(at)
    # a link to the stored runs shows them again without a Run click
    again = AppTest.from_file(str(PAGE), default_timeout=300)
    for name, value in SMALL.items():
        again.query_params[name] = value
    again.run()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sum(e.label == "Tables" for e in again.expander) < len(SECTIONS):
        time.sleep(2)
        again.run()
    assert sum(e.label == "Tables" for e in again.expander) == len(SECTIONS)
    assert not any(b.key == f"run_topk_{s}" for b in again.button for s in SECTIONS)
    at.number_input(key="w_topk_seed").set_value(4).run()
    assert at.query_params["topk_seed"] in ("4", ["4"])
    assert at.button(key="run_topk_saturation")  # new settings: a new job to start


# every control of the page, the Intervention and Other-modalities tabs' included, with a non-default value
EVERY = {**SMALL, "topk_int_n": "3", "topk_int_seed": "5", "topk_int_pairs": "4",
         "topk_int_gap": "5", "topk_int_minsat": "8", "topk_int_dist": "20", "topk_int_adj": "3",
         "topk_mod_kind": "whisper", "topk_mod_n": "7", "topk_mod_k": "4", "topk_mod_tasks": "3", "topk_mod_seed": "2"}
WIDGETS = {"topk_mod_kind": "radio"}


def test_every_control_reopens_from_the_url_and_the_presets_set_them() -> None:
    at = AppTest.from_file(str(PAGE), default_timeout=300)
    for name, value in EVERY.items():
        at.query_params[name] = value
    at.run()
    assert not _errors(at), _errors(at)
    for name, value in EVERY.items():
        if name == "topk_view_text":  # drawn once the saturation section ran: the section test checks it
            continue
        widget = at.radio(key=f"w_{name}") if WIDGETS.get(name) == "radio" else at.number_input(key=f"w_{name}")
        assert str(widget.value) == value, (name, widget.value)
        assert at.query_params[name] in (value, [value]), name
    assert at.text_input(key="w_topk_mod_model").value == ""
    assert any(b.label == "Quick look" for b in at.button) and any(b.label == "Paper settings" for b in at.button)
    assert_clean_text(at)
    at.button(key="preset_topk_paper").click().run()
    assert not _errors(at), _errors(at)
    assert at.number_input(key="w_topk_n").value == 461 and at.number_input(key="w_topk_eval").value == 461
    assert at.number_input(key="w_topk_perm").value == 1000 and at.number_input(key="w_topk_k").value == 5
    assert at.number_input(key="w_topk_int_n").value == 100 and at.number_input(key="w_topk_mod_n").value == 5000
    assert at.number_input(key="w_topk_int_gap").value == 6  # back to the paper's 10 of 48 layers scaled to 30
    assert at.number_input(key="w_topk_mod_tasks").value == 4  # Whisper: the paper's 4 tasks
    assert at.query_params["topk_n"] in ("461", ["461"])
    assert any("Paper settings" in c.value for c in at.caption)
    at.button(key="preset_topk_quick").click().run()
    assert at.number_input(key="w_topk_n").value == 10 and at.number_input(key="w_topk_max_tokens").value == 64

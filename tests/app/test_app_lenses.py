"""AppTest for issue 3's UI: lens choice and side-by-side view, and the extraction page end to end."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from text_scan import assert_clean_text

import core.lenses.learned
from ui import cached

ROOT = Path(__file__).resolve().parents[2]

LENS = ROOT / "app_pages" / "1_Lens.py"
EXTRACTION = ROOT / "app_pages" / "2_Extraction.py"
pytestmark = pytest.mark.integration


def run_page(path: Path, **params: str) -> AppTest:
    at = AppTest.from_file(str(path), default_timeout=300)
    for name, value in params.items():
        at.query_params[name] = value
    return at.run()


def test_question_patchscope_side_by_side_with_the_logit_lens() -> None:
    at = run_page(LENS, prompt="The capital of France is", lens="question", lens_b="logit", cell="30,4")
    assert not at.exception and not at.error, [e.value for e in at.error]
    labels = [s.label for s in at.selectbox]
    assert at.selectbox[labels.index("Lens")].value == "question"
    assert at.selectbox[labels.index("Side by side with")].value == "logit"
    tops = [m.value for m in at.markdown if "top-" in m.value]
    assert len(tops) == 2, tops
    assert at.query_params["lens"] == "question" and at.query_params["lens_b"] == "logit"


def test_untrained_tuned_lens_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core.lenses.learned, "lens_dir", lambda session: tmp_path / "no-lens-here")
    cached.trained_lenses.clear()
    try:
        at = run_page(LENS, prompt="The capital of France is", lens="tuned")
    finally:
        cached.trained_lenses.clear()
    assert not at.exception
    assert at.error and "not trained" in at.error[0].value
    assert any(b.label.startswith("Train") for b in at.button)


def test_extraction_runs_and_states_the_verdicts() -> None:
    at = run_page(EXTRACTION, n="5", seed="1")
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.multiselect(key="w_methods").set_value(["logit", "question"]).run()
    run = [b for b in at.button if b.key == "run_extraction"]
    if run:  # no button when the disk cache holds this run already: it then shows by itself
        run[0].click().run()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        time.sleep(2)
        at.run()
        if any("texts," in s.value for s in at.subheader):
            break
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(s.value.startswith("5 texts, 31 layers, 2 methods") for s in at.subheader), \
        [s.value for s in at.subheader]
    verdicts = [m.value for m in at.markdown if "precision@1 = 1.0 at the last layer" in m.value]
    assert verdicts and verdicts[0].startswith(":material/check_circle: Check (true by construction")
    [rises] = [m.value for m in at.markdown if "rises with depth" in m.value]
    assert "95 % CI" in rises and "n = 5" in rises  # a finding states its interval and n
    assert_clean_text(at)


def test_extraction_presets_set_n_seed_and_methods() -> None:
    from core.analyses.params import EXTRACTION_PRESETS

    at = run_page(EXTRACTION)
    at.button(key="preset_extraction_quick").click().run()
    quick = EXTRACTION_PRESETS["quick"]
    assert at.number_input(key="w_n").value == quick["n"] and at.number_input(key="w_seed").value == quick["seed"]
    assert at.multiselect(key="w_methods").value == list(quick["methods"])
    at.button(key="preset_extraction_paper").click().run()
    assert at.number_input(key="w_n").value == EXTRACTION_PRESETS["paper"]["n"]
    assert at.query_params["n"] == str(EXTRACTION_PRESETS["paper"]["n"]) and at.query_params["seed"] == "42"
    assert "question" in at.multiselect(key="w_methods").value and not at.exception


def test_extraction_job_can_be_cancelled_and_shows_a_measured_eta() -> None:
    """A long run shows its time so far and a measured time to go, can be cancelled, and then offers Run again;
    nothing is stored for it (the same request starts from the beginning)."""
    at = run_page(EXTRACTION, n="300", seed="12345")
    at.multiselect(key="w_methods").set_value(["logit", "identity"]).run()
    at.button(key="run_extraction").click().run()
    deadline = time.monotonic() + 120
    texts: list[str] = []
    while time.monotonic() < deadline:
        time.sleep(1.5)
        at.run()
        texts = [p.proto.text for p in at.get("progress")]
        if any("so far, about" in t for t in texts):
            break
    assert any("so far, about" in t and "to go" in t for t in texts), texts
    at.button(key="cancel_run_extraction").click().run()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any("Cancelled after" in i.value for i in at.info):
        time.sleep(1)
        at.run()
    assert any("Cancelled after" in i.value and "nothing was stored" in i.value for i in at.info), \
        [i.value for i in at.info]
    assert not at.exception and not at.error
    assert any(b.key == "run_extraction" for b in at.button)  # Run again, from the start


def test_extraction_methods_reopen_from_the_url() -> None:
    at = run_page(EXTRACTION, n="5", seed="1", methods=["logit", "question_bare"])
    assert not at.exception and not at.error
    assert at.multiselect(key="w_methods").value == ["logit", "question_bare"]
    at.multiselect(key="w_methods").set_value(["identity"]).run()
    assert at.query_params["methods"] == "identity"  # AppTest keeps a one-value list as its value

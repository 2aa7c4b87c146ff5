"""AppTest for the Neuron topics page: a neuron's topics and its random baseline, then real vs random."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]

PAGE = ROOT / "app_pages" / "5_Neuron_topics.py"
pytestmark = pytest.mark.integration


def _wait(at: AppTest, done, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not done():
        time.sleep(2)
        at.run()


def test_neuron_topics_page_shows_topics_baseline_and_comparison() -> None:
    at = AppTest.from_file(str(PAGE), default_timeout=300)
    at.query_params.update({"topics_mode": "hi-c", "topics_block": "29", "topics_unit": "5", "topics_seed": "3"})
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.number_input(key="w_topics_tau").set_value(400).run()
    at.number_input(key="w_topics_tl").set_value(5.0).run()

    def pools_shown() -> int:
        return sum("pool of" in m.value for m in at.markdown)

    _wait(at, lambda: pools_shown() >= 4)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert pools_shown() == 4  # pos and neg, for the unit and for its random baseline
    assert any("Reference corpus" in c.value and "documents" in c.value for c in at.caption)
    assert any("multi-token rule" in c.value for c in at.caption)
    # 1-based blocks in the labels: block 29 is the one the URL named, its MLP neuron 5
    assert any(m.value.startswith("**Hi-C** — MLP neuron 5 of block 29:") for m in at.markdown)
    assert any(c.value.startswith("Every unit of block 29 (1536)") for c in at.caption)
    assert at.radio(key="w_topics_graph").value == "pos"
    # what the bundled model gives: the top-τ pool of block 29 neuron 5 (τ = 400) has NPMI edges among words of
    # degree >= κ lower (16 when this was pinned), so the graph is drawn
    assert any("strongest of" in c.value for c in at.caption) and len(at.get("vega_lite_chart")) >= 1
    assert not any("No NPMI edge" in i.value for i in at.info)
    at.checkbox(key="w_topics_only_sets").check().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    # what the bundled model gives: no word set in either pool of this unit or of its baseline ("0 word sets"),
    # so no edge joins two star-set words
    assert all(", 0 word sets" in m.value for m in at.markdown if "pool of" in m.value)
    assert any("in star sets" in i.value for i in at.info)
    assert not any("strongest of" in c.value for c in at.caption)
    at.number_input(key="w_topics_cmp_n").set_value(2).run()
    at.button(key="topics_compare").click().run()
    _wait(at, lambda: any("Mann-Whitney" in m.value for m in at.markdown))
    assert not at.exception and not at.error, [e.value for e in at.error]
    tests = [m.value for m in at.markdown if "Mann-Whitney" in m.value]
    assert len(tests) == 3 and "word sets per pool" in tests[0]
    assert at.query_params["topics_block"] == "29" and at.query_params["topics_unit"] == "5"


def test_scan_finds_units_and_shows_one_in_the_neuron_tab() -> None:
    at = AppTest.from_file(str(PAGE), default_timeout=300)
    at.query_params.update({"topics_mode": "lo-i", "topics_block": "30", "topics_unit": "0"})
    at.run()
    at.number_input(key="w_topics_tau").set_value(300).run()
    _wait(at, lambda: any(b.key == "topics_scan" for b in at.button))  # the corpus is counted first
    at.button(key="topics_scan").click().run()
    _wait(at, lambda: any(e.key == "w_topics_pick" for e in at.selectbox) or any(
        "No unit of this block" in i.value for i in at.info))
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(c.value.startswith("Every unit of block 30 (576)") for c in at.caption)  # lo-i: d_model units
    assert not any("No unit of this block" in i.value for i in at.info)  # the bundled model's block 30 has some
    pick = at.selectbox(key="w_topics_pick")
    assert pick.options, "the scan listed no unit"
    chosen = int(pick.options[-1].split()[0])
    pick.set_value(chosen).run()
    at.button(key="topics_pick").click().run()
    assert at.number_input(key="w_topics_unit").value == chosen
    assert at.query_params["topics_unit"] == str(chosen)


def test_a_corpus_folder_that_does_not_exist_is_refused_before_any_job(tmp_path: Path) -> None:
    from ui.cached import job_registry

    missing = str(tmp_path / "no-such-corpus")
    at = AppTest.from_file(str(PAGE), default_timeout=300)
    at.session_state["w_topics_corpus"] = missing
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"The corpus folder {missing!r} does not exist."]
    assert not at.get("progress")  # no job started, and none offered
    assert not any((b.key or "").startswith("topics") for b in at.button)
    assert not any(missing in key for key in job_registry()._jobs)

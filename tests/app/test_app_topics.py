"""AppTest for the Neuron topics page: a neuron's topics and its random baseline, then real vs random."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

# tests/app by path: tuned-lens installs a top-level ``tests`` package that hides this repository's ``tests.app``
from text_scan import assert_clean_text

ROOT = Path(__file__).resolve().parents[2]

PAGE = ROOT / "app_pages" / "5_Neuron_topics.py"
pytestmark = pytest.mark.integration


def _wait(at: AppTest, done, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not done():
        time.sleep(2)
        at.run()


def _verdict_lines(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith(":material/")]  # ui.verdicts' icons


def test_neuron_topics_page_shows_topics_baseline_and_comparison() -> None:
    at = AppTest.from_file(str(PAGE), default_timeout=300)
    url = {"topics_mode": "hi-c", "topics_block": "29", "topics_unit": "5", "topics_seed": "3", "topics_tau": "400",
           "topics_tl": "5.0", "topics_cmp_n": "2"}
    at.query_params.update(url)
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.number_input(key="w_topics_tau").value == 400 and at.number_input(key="w_topics_tl").value == 5.0

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
    # degree >= κ_l, so the pruned graph is drawn and the caption says how many edges of how many
    drawn = [c.value for c in at.caption if " drawn (" in c.value]
    assert drawn and len(at.get("vega_lite_chart")) >= 1
    assert int(drawn[0].split(": ")[1].split(" of ")[0]) <= 150
    assert not any("No NPMI edge" in i.value for i in at.info)
    assert_clean_text(at)
    at.checkbox(key="w_topics_only_sets").check().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    # what the bundled model gives: no word set in either pool of this unit or of its baseline ("0 word sets"),
    # so no edge joins two star-set words
    assert all(", 0 word sets" in m.value for m in at.markdown if "pool of" in m.value)
    assert any("in star sets" in i.value for i in at.info)
    assert not any(" drawn (" in c.value for c in at.caption)
    assert at.query_params["topics_only_sets"] == "True"
    assert at.number_input(key="w_topics_cmp_n").value == 2  # from the URL
    if any(b.key == "topics_compare" for b in at.button):  # not stored yet: run it
        at.button(key="topics_compare").click().run()
    _wait(at, lambda: len(_verdict_lines(at)) >= 5)
    assert not at.exception and not at.error, [e.value for e in at.error]
    lines = _verdict_lines(at)
    assert len(lines) == 5 and "real neurons give more word sets per neuron" in lines[0]
    assert "n = 4" in lines[0]  # 2 neurons and 2 baselines
    assert sum("Check (true by construction)" in line for line in lines) == 2
    assert_clean_text(at)
    assert at.query_params["topics_block"] == "29" and at.query_params["topics_unit"] == "5"
    assert at.query_params["topics_tau"] == "400" and at.query_params["topics_cmp_n"] == "2"

    # the same link in a new session: the stored comparison comes back without a click on Compare
    again = AppTest.from_file(str(PAGE), default_timeout=300)
    again.query_params.update({**url, "topics_only_sets": "True"})
    again.run()
    _wait(again, lambda: len(_verdict_lines(again)) >= 5, 120)
    assert _verdict_lines(again) == lines
    assert again.checkbox(key="w_topics_only_sets").value is True


def test_scan_finds_units_and_shows_one_in_the_neuron_tab() -> None:
    at = AppTest.from_file(str(PAGE), default_timeout=300)
    at.query_params.update({"topics_mode": "lo-i", "topics_block": "30", "topics_unit": "0"})
    at.run()
    at.number_input(key="w_topics_tau").set_value(300).run()
    def scanned() -> bool:
        return any(e.key == "w_topics_pick" for e in at.selectbox) or any(
            "No unit of this block" in i.value for i in at.info)

    # the corpus is counted first; then a Scan button, or at once the stored scan (a link reopens it without a click)
    _wait(at, lambda: any(b.key == "topics_scan" for b in at.button) or scanned())
    if any(b.key == "topics_scan" for b in at.button):
        at.button(key="topics_scan").click().run()
    _wait(at, scanned)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(c.value.startswith("Every unit of block 30 (576)") for c in at.caption)  # lo-i: d_model units
    assert not any("No unit of this block" in i.value for i in at.info)  # the bundled model's block 30 has some
    assert any("units (" in m.value and "at least one word set" in m.value for m in at.markdown)
    assert any("Check (true by construction): no pool holds more star sets" in m.value and "— holds" in m.value
               for m in at.markdown)
    assert_clean_text(at)
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
    at.query_params["topics_corpus"] = missing
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"The corpus folder {missing!r} does not exist."]
    assert not at.get("progress")  # no job started, and none offered
    assert not any((b.key or "").startswith("topics") for b in at.button)
    assert not any(missing in key for key in job_registry()._jobs)
    assert at.text_input(key="w_topics_corpus").value == missing


def test_every_setting_reopens_from_the_url_and_the_presets_set_them(tmp_path: Path) -> None:
    # a corpus folder that does not exist stops the page after the controls: nothing heavy runs
    url = {"topics_mode": "lo-c", "topics_block": "7", "topics_unit": "12", "topics_seed": "9", "topics_tau": "350",
           "topics_mf": "12", "topics_tl": "7.5", "topics_vocab": "20000", "topics_tlo": "0.05", "topics_thi": "0.9",
           "topics_klo": "8", "topics_khi": "20", "topics_corpus": str(tmp_path / "none")}
    at = AppTest.from_file(str(PAGE), default_timeout=300)
    at.query_params.update(url)
    at.run()
    assert not at.exception
    assert at.selectbox(key="w_topics_mode").value == "lo-c"
    widgets = {"topics_block": 7, "topics_unit": 12, "topics_seed": 9, "topics_tau": 350, "topics_mf": 12,
               "topics_tl": 7.5, "topics_vocab": 20000, "topics_tlo": 0.05, "topics_thi": 0.9, "topics_klo": 8,
               "topics_khi": 20}
    for name, value in widgets.items():
        assert at.number_input(key=f"w_{name}").value == pytest.approx(value), name
    assert at.text_input(key="w_topics_corpus").value == url["topics_corpus"]
    assert {k: at.query_params[k] for k in url} == url  # written back unchanged
    assert len(at.get("popover")) == 1  # the Symbols popover defines τ, β, NPMI, θ_l, κ_l, MEKC …
    assert any("maximum edge-weight k-clique" in m.value and "κ\\_l" in m.value for m in at.markdown)
    assert_clean_text(at, allowed=["does not exist"])

    at.button(key="preset_topics_paper").click().run()
    assert at.number_input(key="w_topics_tau").value == 900 and at.number_input(key="w_topics_tl").value == 180.0
    assert (at.number_input(key="w_topics_tlo").value, at.number_input(key="w_topics_thi").value) == (0.1, 1.0)
    assert (at.number_input(key="w_topics_klo").value, at.number_input(key="w_topics_khi").value) == (10, 24)
    assert at.number_input(key="w_topics_mf").value == 10 and at.query_params["topics_cmp_n"] == "200"
    at.button(key="preset_topics_quick").click().run()
    assert at.number_input(key="w_topics_tau").value == 400 and at.query_params["topics_tau"] == "400"
    assert at.query_params["topics_cmp_n"] == "6" and at.query_params["topics_unit"] == "12"

"""AppTest of the Top-k page's Intervention and Other-modalities tabs, each through a tiny script that calls
the tab: the run starts a background job, the figure, the numbers and the tables appear."""

from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest


def _modalities_script() -> None:
    from ui.views.topk_more import modalities_tab

    modalities_tab()


def _intervention_script() -> None:
    from ui.views.topk_more import intervention_tab

    intervention_tab("bundled")


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error] + [str(e.value) for e in at.exception]


def _wait_for_tables(at: AppTest, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not any(e.label == "Tables" for e in at.expander) and not _errors(at):
        time.sleep(2)
        at.run()


def _charts(at: AppTest) -> int:
    return len(at.get("vega_lite_chart"))


@pytest.mark.parametrize("kind", ["vit", "whisper"])
def test_modalities_tab_runs_the_tiny_demo_and_says_so(kind: str) -> None:
    at = AppTest.from_function(_modalities_script, default_timeout=120)
    at.run()
    assert not _errors(at), _errors(at)
    assert any("random-init demo: no weights offline" in i.value for i in at.info)
    at.radio(key="w_topk_mod_kind").set_value(kind).run()
    at.number_input(key="w_topk_mod_n").set_value(6 if kind == "whisper" else 40).run()
    at.number_input(key="w_topk_mod_k").set_value(3).run()
    run = [b for b in at.button if b.key == f"run_topk_{kind}"]
    if run:  # no button when the disk cache holds this run already: it then shows by itself
        run[0].click().run()
    _wait_for_tables(at, 240)
    assert not _errors(at), _errors(at)
    assert any("untrained weights" in w.value for w in at.warning)
    captions = " ".join(c.value for c in at.caption)
    assert "mean τ" in captions and "kept by the 0.85·L top-1 filter" in captions
    assert _charts(at) >= 1


def test_modalities_tab_refuses_a_missing_folder_before_any_job(tmp_path) -> None:
    at = AppTest.from_function(_modalities_script, default_timeout=120)
    at.run()
    at.number_input(key="w_topk_mod_n").set_value(7).run()
    at.text_input(key="w_topk_mod_model").set_value(str(tmp_path / "no-such-vit")).run()
    assert len(at.error) == 1 and "No model folder" in at.error[0].value  # at once, no job started
    assert at.button(key="run_topk_vit").disabled
    assert at.number_input(key="w_topk_mod_n").value == 7  # the other inputs survive


def test_modalities_tab_reports_missing_weights_without_losing_the_inputs() -> None:
    at = AppTest.from_function(_modalities_script, default_timeout=120)
    at.run()
    at.number_input(key="w_topk_mod_n").set_value(7).run()
    at.text_input(key="w_topk_mod_model").set_value("nobody/no-such-vit").run()  # a hub id: needs the hub
    at.button(key="run_topk_vit").click().run()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not at.error:
        time.sleep(1)
        at.run()
    assert at.error and "offline" in at.error[0].value
    assert at.number_input(key="w_topk_mod_n").value == 7  # the other inputs survive
    assert at.text_input(key="w_topk_mod_model").value == "nobody/no-such-vit"


@pytest.mark.integration
def test_intervention_tab_runs_on_the_bundled_model() -> None:
    at = AppTest.from_function(_intervention_script, default_timeout=300)
    at.run()
    assert not _errors(at), _errors(at)
    at.number_input(key="w_topk_int_n").set_value(1).run()
    at.number_input(key="w_topk_int_pairs").set_value(2).run()
    assert at.number_input(key="w_topk_int_gap").value == 6  # 10 of 48 layers scaled to 30
    run = [b for b in at.button if b.key == "run_topk_intervention"]
    if run:  # no button when the disk cache holds this run already: it then shows by itself
        run[0].click().run()
    _wait_for_tables(at, 300)
    assert not _errors(at), _errors(at)
    captions = " ".join(c.value for c in at.caption)
    assert "pairs from" in captions and "Success share" in captions, captions
    assert "implant layer outside 1 to L−1" in captions  # residual layers: an implant lands after blocks 1 to L-1
    assert at.number_input(key="w_topk_int_minsat").value == 7  # block index 6 (10 of 48 scaled) = layer 7
    assert _charts(at) == 1

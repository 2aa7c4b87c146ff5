"""AppTest for the Attention -> MLP page: settings from the URL, a neuron's job, heatmap, head lists,
ablation KS, the explainer panel (off), the all-neurons summary, bad input shown as a message, and a link in the
old 0-based numbering opening the same neuron. Blocks are 1-based (block l writes layer l)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

# tests/app by path: tuned-lens installs a top-level ``tests`` package that hides this repository's ``tests.app``
from text_scan import assert_clean_text

ROOT = Path(__file__).resolve().parents[2]

PAGE = ROOT / "app_pages" / "6_Attention_MLP.py"
pytestmark = pytest.mark.integration
# block 30, the last (was amlp_layers=29 in the 0-based numbering)
SMALL = {"amlp_blocks": "30", "amlp_per_layer": "1", "amlp_n_texts": "3", "amlp_window": "48", "amlp_top": "4"}
NEURON = "B30N1135"  # what the bundled model gives: block 30's most congruent passing neuron, ' her'
HEAD = "B27H0"  # head 0 of block 27: the old link's L26H0


def _wait(at: AppTest, done, seconds: float = 400) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not done():
        time.sleep(3)
        at.run()


def _texts(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown]


def _run_neuron(at: AppTest) -> None:
    """Click the neuron's Run button unless a stored run started at once; wait for its prompts."""
    if any(b.key == "run_amlp_neuron" for b in at.button):
        at.button(key="run_amlp_neuron").click().run()
    _wait(at, lambda: any("max-activating prompts" in t for t in _texts(at)))


def test_neuron_heads_ablation_and_summary() -> None:
    at = AppTest.from_file(str(PAGE), default_timeout=300)
    for name, value in SMALL.items():
        at.query_params[name] = value
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="w_amlp_neuron").value == NEURON
    assert at.selectbox(key="w_amlp_neuron").options[0].startswith("block 30 · neuron 1135 → ␣her")
    _run_neuron(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert_clean_text(at)
    texts = _texts(at)
    assert any("<mark>" in t for t in texts), "the activating token is highlighted"
    assert any(t.startswith("**Context-dependent heads**") for t in texts)
    # what the bundled model gives: this neuron has context-dependent heads (5 under top-3 on its 4 prompts), so
    # they are ablated and the KS test is shown
    assert any(t.startswith("KS test, this neuron's ablated heads, pooled") for t in texts)
    assert not any("No context-dependent head" in i.value for i in at.info)
    assert at.selectbox(key="w_amlp_head").value.startswith("B")  # B{block}H{head}, 1-based block
    assert at.radio(key="w_amlp_explainer").value == "off"
    at.radio(key="w_amlp_explainer").set_value("manual").run()
    assert not at.exception and at.text_area(key=at.text_area[0].key).label == "Your explanation"
    at.radio(key="w_amlp_rule").set_value("sigma2").run()
    assert any("attribution above mean + 2σ" in t for t in _texts(at))
    if any(b.key == "run_amlp_all_neurons" for b in at.button):
        at.button(key="run_amlp_all_neurons").click().run()
    _wait(at, lambda: any("Verdicts on the paper's claims" in t for t in _texts(at)))
    texts = _texts(at)
    assert any("most neurons have a head active" in t and "n = 1" in t for t in texts), texts
    assert any("lowers p(token) more where it is active" in t and "inactive prompt-head pairs" in t for t in texts)
    assert any("Check (true by construction): attributions of all heads" in t and "— holds" in t for t in texts)
    assert any("better than chance" in t and "not run" in t for t in texts)
    assert not any("top3" in t or "sigma2" in t for t in texts), "rule codes are shown as words"
    assert_clean_text(at)
    assert at.query_params["amlp_blocks"] == "30" and at.query_params["amlp_rule"] == "sigma2"
    assert at.query_params["amlp_neuron"] == NEURON


@pytest.mark.parametrize("blocks", ["99", "0"])
def test_bad_blocks_are_a_message_not_a_traceback(blocks: str) -> None:
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.query_params["amlp_blocks"] = blocks
    at.run()
    assert not at.exception
    assert any("outside" in e.value and "1..30" in e.value for e in at.error)


def test_an_old_zero_based_link_opens_the_same_neuron_and_head() -> None:
    """amlp_layers=29, amlp_neuron=29.1135, amlp_head=L26H0 (0-based) are block 30, B30N1135, B27H0 now."""
    at = AppTest.from_file(str(PAGE), default_timeout=300)
    old = {**SMALL, "amlp_layers": "29", "amlp_neuron": "29.1135", "amlp_head": "L26H0"}
    del old["amlp_blocks"]
    for name, value in old.items():
        at.query_params[name] = value
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.text_input(key="w_amlp_blocks").value == "30"
    assert at.selectbox(key="w_amlp_neuron").value == NEURON
    note = [i.value for i in at.info if "numbered blocks from 0" in i.value]
    assert len(note) == 1 and "amlp_layers=29 is shown as blocks 30" in note[0] and NEURON in note[0]
    assert at.query_params["amlp_blocks"] == "30" and "amlp_layers" not in at.query_params
    if any(b.key == "run_amlp_neuron" for b in at.button):  # not when this process ran the same job already
        at.button(key="run_amlp_neuron").click().run()
    _wait(at, lambda: any("max-activating prompts" in t for t in _texts(at)))
    assert at.selectbox(key="w_amlp_head").value == HEAD  # the translated head, not the first one offered


# every control of the page, none at its default
URL = {"amlp_blocks": "29,30", "amlp_per_layer": "2", "amlp_corpus": "lee", "amlp_n_texts": "7", "amlp_window": "40",
       "amlp_top": "5", "amlp_keep": "0.7", "amlp_max_tokens": "60", "amlp_trim": "linear", "amlp_reject": "foo",
       "amlp_control": "True", "amlp_own": "True"}


def test_every_control_comes_back_from_the_url() -> None:
    at = AppTest.from_file(str(PAGE), default_timeout=300)
    for name, value in URL.items():
        at.query_params[name] = value
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.text_input(key="w_amlp_blocks").value == "29,30"
    assert at.number_input(key="w_amlp_per_layer").value == 2
    assert at.selectbox(key="w_amlp_corpus").value == "lee"
    assert at.number_input(key="w_amlp_n_texts").value == 7
    assert at.number_input(key="w_amlp_window").value == 40
    assert at.number_input(key="w_amlp_top").value == 5
    assert at.number_input(key="w_amlp_keep").value == pytest.approx(0.7)
    assert at.number_input(key="w_amlp_max_tokens").value == 60
    assert at.selectbox(key="w_amlp_trim").value == "linear"
    assert at.text_input(key="w_amlp_reject").value == "foo"
    assert at.toggle(key="w_amlp_control").value is True and at.toggle(key="w_amlp_own").value is True
    second = at.selectbox(key="w_amlp_neuron").options[1]
    assert "block 29" in second and "amlp_neuron" in at.query_params
    for name, value in URL.items():
        assert at.query_params[name] == value, name
    assert_clean_text(at)


def test_neuron_rule_head_and_explainer_come_back_from_the_url() -> None:
    """A link to a stored neuron run shows it without a click, with its rule, head and explainer mode."""
    at = AppTest.from_file(str(PAGE), default_timeout=300)
    for name, value in {**SMALL, "amlp_neuron": NEURON, "amlp_rule": "sigma2", "amlp_head": HEAD,
                        "amlp_explainer": "manual"}.items():
        at.query_params[name] = value
    at.run()
    _run_neuron(at)  # stored by the first test: starts at once, no click
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.radio(key="w_amlp_rule").value == "sigma2"
    assert at.selectbox(key="w_amlp_head").value == HEAD
    assert at.radio(key="w_amlp_explainer").value == "manual"


def test_presets_set_the_controls_and_the_url() -> None:
    at = AppTest.from_file(str(PAGE), default_timeout=300)
    at.run()
    at.button(key="preset_amlp_quick").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.text_input(key="w_amlp_blocks").value == "30"
    assert at.number_input(key="w_amlp_per_layer").value == 1 and at.number_input(key="w_amlp_top").value == 6
    assert at.query_params["amlp_n_texts"] == "20" and at.query_params["amlp_window"] == "64"
    at.button(key="preset_amlp_paper").click().run()
    assert at.text_input(key="w_amlp_blocks").value == ",".join(str(b) for b in range(23, 31))  # 3 of 12 -> 8 of 30
    assert at.number_input(key="w_amlp_per_layer").value == 20 and at.number_input(key="w_amlp_top").value == 20
    assert at.number_input(key="w_amlp_keep").value == pytest.approx(0.8)
    assert at.number_input(key="w_amlp_max_tokens").value == 100
    assert any("all of them are scanned" in c.value for c in at.caption)

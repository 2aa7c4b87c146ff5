"""AppTest for the Attention -> MLP page: settings from the URL, a neuron's job, heatmap, head lists,
ablation KS, the explainer panel (off), the all-neurons summary, bad input shown as a message, and a link in the
old 0-based numbering opening the same neuron. Blocks are 1-based (block l writes layer l)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

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


def test_neuron_heads_ablation_and_summary() -> None:
    at = AppTest.from_file(str(PAGE), default_timeout=300)
    for name, value in SMALL.items():
        at.query_params[name] = value
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="w_amlp_neuron").value == NEURON
    assert at.selectbox(key="w_amlp_neuron").options[0].startswith("block 30 · neuron 1135 → ␣her")
    at.button(key="run_amlp_neuron").click().run()
    _wait(at, lambda: any("max-activating prompts" in t for t in _texts(at)))
    assert not at.exception and not at.error, [e.value for e in at.error]
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
    assert any("attr > mean + 2σ" in t for t in _texts(at))
    at.button(key="run_amlp_all_neurons").click().run()
    _wait(at, lambda: any("have at least one context-dependent head" in t for t in _texts(at)))
    assert any("have at least one context-dependent head" in t for t in _texts(at))
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

"""AppTest for the Attention -> MLP page: settings from the URL, a neuron's job, heatmap, head lists,
ablation KS, the explainer panel (off), the all-neurons summary, and bad input shown as a message."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]

PAGE = ROOT / "pages" / "6_Attention_MLP.py"
pytestmark = pytest.mark.integration
SMALL = {"amlp_layers": "29", "amlp_per_layer": "1", "amlp_n_texts": "3", "amlp_window": "48", "amlp_top": "4"}


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
    assert at.selectbox(key="w_amlp_neuron").value.startswith("29.")
    at.button(key="run_amlp_neuron").click().run()
    _wait(at, lambda: any("max-activating prompts" in t for t in _texts(at)))
    assert not at.exception and not at.error, [e.value for e in at.error]
    texts = _texts(at)
    assert any("<mark>" in t for t in texts), "the activating token is highlighted"
    assert any(t.startswith("**Context-dependent heads**") for t in texts)
    assert any("KS test" in t for t in texts) or any("No context-dependent head" in i.value for i in at.info)
    assert at.radio(key="w_amlp_explainer").value == "off"
    at.radio(key="w_amlp_explainer").set_value("manual").run()
    assert not at.exception and at.text_area(key=at.text_area[0].key).label == "Your explanation"
    at.radio(key="w_amlp_rule").set_value("sigma2").run()
    assert any("attr > mean + 2σ" in t for t in _texts(at))
    at.button(key="run_amlp_all_neurons").click().run()
    _wait(at, lambda: any("have at least one context-dependent head" in t for t in _texts(at)))
    assert any("have at least one context-dependent head" in t for t in _texts(at))
    assert at.query_params["amlp_layers"] == "29" and at.query_params["amlp_rule"] == "sigma2"


def test_bad_layers_are_a_message_not_a_traceback() -> None:
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.query_params["amlp_layers"] = "99"
    at.run()
    assert not at.exception
    assert any("outside" in e.value for e in at.error)

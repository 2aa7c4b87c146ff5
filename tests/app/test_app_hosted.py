"""Hosted mode in the app (LAYERSCOPE_HOSTED=1): a visitor gets the bundled model and the host's listed models
only (a link naming a folder opens the bundled model and says why), no local paths, uploads, lens or corpus
folders, explainer endpoints or NDIF, and every sample size capped at the host's ``max_samples``; the sidebar says
what the server allows. Local mode (the default, every other AppTest) is unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from streamlit.testing.v1 import AppTest

from ui import hosting

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "app_pages"
TIMEOUT = 180
CAP = 50

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _hosted(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LAYERSCOPE_HOSTED", "1")
    monkeypatch.setenv("LAYERSCOPE_MODELS", "gpt2")
    monkeypatch.setenv("LAYERSCOPE_MAX_SAMPLES", str(CAP))
    hosting._host.clear()
    yield
    hosting._host.clear()  # the next test reads the environment as it then is (local)


def _run(page: str, **params: str) -> AppTest:
    at = AppTest.from_file(str(PAGES / page), default_timeout=TIMEOUT)
    for name, value in params.items():
        at.query_params[name] = value
    return at.run()


def _texts(at: AppTest) -> str:
    return " ".join(str(e.value) for kind in ("caption", "warning", "error", "info") for e in at.get(kind))


def test_a_link_to_a_local_folder_opens_the_bundled_model_and_says_why() -> None:
    at = _run("1_Lens.py", model="/etc", prompt="The capital of France is")
    assert not at.exception, [e.message for e in at.exception]
    warnings = " ".join(w.value for w in at.sidebar.warning)
    assert "only the bundled model and the models its host listed" in warnings and "'/etc'" in warnings
    picker = at.sidebar.selectbox(key="w_model_hosted")
    assert picker.options == ["SmolLM2-135M-Instruct (bundled, offline)", "gpt2"] and picker.value == "bundled"
    assert not [t for t in at.sidebar.text_input if t.key == "w_model_source"]  # no free text for a model
    assert not [c for c in at.sidebar.checkbox if c.key == "w_model_remote"]  # no NDIF
    assert "Hosted server" in " ".join(c.value for c in at.sidebar.caption)
    assert at.query_params["model"] == "bundled"  # the link now names what is shown


@pytest.mark.parametrize("model", ["ndif:gpt2", "random:/tmp", "./my-checkpoint"])
def test_other_model_links_are_refused_the_same_way(model: str) -> None:
    at = _run("1_Lens.py", model=model)
    assert not at.exception, [e.message for e in at.exception]
    assert "its host listed" in " ".join(w.value for w in at.sidebar.warning) or \
        "Opened with the defaults" in " ".join(w.value for w in at.sidebar.warning)
    assert at.sidebar.selectbox(key="w_model_hosted").value == "bundled"


def test_sample_sizes_are_capped_and_uploads_are_off() -> None:
    at = _run("2_Extraction.py", n="3000", corpus="upload a file…")
    assert not at.exception, [e.message for e in at.exception]
    n = at.number_input(key="w_n")
    assert n.value == CAP and n.max == CAP  # a link's 3000 is brought down to the host's cap
    corpus = at.selectbox(key="w_corpus")
    assert "upload a file…" not in corpus.options and corpus.value == "wikipedia"


def test_depth_and_topk_sizes_are_capped() -> None:
    depth = _run("3_Depth.py", depth_n_frequent="1000")
    assert not depth.exception, [e.message for e in depth.exception]
    assert all(w.max == CAP for w in depth.number_input if w.key.startswith("w_depth_n_"))
    topk = _run("4_Top-k_order.py", topk_n="2000", topk_eval="2000")
    assert not topk.exception, [e.message for e in topk.exception]
    assert topk.number_input(key="w_topk_n").value == CAP and topk.number_input(key="w_topk_eval").value == CAP


def test_a_corpus_folder_in_a_link_is_refused_before_any_job(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("words " * 1000)
    at = _run("5_Neuron_topics.py", topics_corpus=str(tmp_path))
    assert not at.exception, [e.message for e in at.exception]
    assert not [t for t in at.text_input if t.key == "w_topics_corpus"]
    assert any("Off on this hosted server" in e.value and str(tmp_path) in e.value for e in at.error)


def _modalities() -> None:
    from ui.views.topk_more import modalities_tab

    modalities_tab()


def test_other_weights_and_uploads_are_off_for_other_modalities() -> None:
    at = AppTest.from_function(_modalities, default_timeout=TIMEOUT)
    at.query_params["topk_mod_model"] = "/etc"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert not [t for t in at.text_input if t.key == "w_topk_mod_model"]
    assert "Off on this hosted server" in _texts(at) and "No model folder" not in _texts(at)
    assert not at.get("file_uploader")


def _explainer() -> None:
    import pandas as pd

    from ui.views.attention_mlp_explainer import panel

    prompts = pd.DataFrame({"prompt": [0, 1], "text": ["a b", "c d"]})
    attributions = pd.DataFrame({"head_label": ["B1H0", "B1H0"], "prompt": [0, 1], "active_top3": [True, False]})
    panel(prompts, attributions, "B1H0", "top3", " x")


def test_explainer_endpoints_are_off() -> None:
    at = AppTest.from_function(_explainer, default_timeout=TIMEOUT)
    at.query_params["amlp_explainer"] = "endpoint"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    radio = at.radio(key="w_amlp_explainer")
    assert "endpoint" not in radio.options and radio.value == "off"
    assert not [t for t in at.text_input if t.key in ("w_amlp_base_url", "w_amlp_key")]


def _training() -> None:
    from ui.views.lens_training import panel

    panel("bundled")


def test_lens_folders_are_off() -> None:
    at = AppTest.from_function(_training, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert not [t for t in at.text_input if t.key == "w_lens_folder"]
    assert "Off on this hosted server" in _texts(at)


def test_a_prompt_longer_than_the_hosts_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERSCOPE_MAX_PROMPT_TOKENS", "8")
    hosting._host.clear()
    at = _run("1_Lens.py", prompt="one two three four five six seven eight nine ten eleven twelve")
    assert not at.exception, [e.message for e in at.exception]
    assert any("this hosted server analyses at most 8" in e.value for e in at.error)
    assert not at.get("vega_lite_chart")  # nothing analysed

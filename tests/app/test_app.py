"""AppTest on every page: default input, query parameters preset, widget interaction and bad input.

Each test builds a fresh ``AppTest`` (fresh session state and URL), but all of them share the process's
``st.cache_resource`` / ``st.cache_data``: the bundled model is loaded once (about 20 s) and every later
run takes a few seconds.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest
from text_scan import assert_clean_text

ROOT = Path(__file__).resolve().parents[2]

HOME = ROOT / "app.py"
LENS = ROOT / "app_pages" / "1_Lens.py"
ALL_PAGES = [HOME] + sorted(p for p in (ROOT / "app_pages").glob("[!_]*.py")
                            if p.name != "0_Home.py")  # home via app.py
DEFAULT_PROMPT = "The capital of France is"
TIMEOUT = 180

pytestmark = pytest.mark.integration  # every page loads the bundled model

from ui.format import show_token

PARIS = show_token(" Paris")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never wait on the network: unknown hub ids must fail at once."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def run_page(path: Path, **params: str | list[str]) -> AppTest:
    """Run ``path`` once with the URL query parameters ``params`` preset."""
    at = AppTest.from_file(str(path), default_timeout=TIMEOUT)
    for name, value in params.items():
        at.query_params[name] = value
    return at.run()


def assert_clean(at: AppTest) -> None:
    """No exception and no error alert."""
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def charts(at: AppTest) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """Every Altair chart on the page: (Vega-Lite spec, its data as a frame)."""
    out = []
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        frames = [pa.ipc.open_stream(io.BytesIO(d.data.data)).read_all().to_pandas() for d in chart.proto.datasets]
        out.append((spec, pd.concat(frames) if frames else pd.DataFrame()))
    return out


def selectbox(at: AppTest, label: str):
    matches = [s for s in at.selectbox if s.label == label]
    assert len(matches) == 1, [s.label for s in at.selectbox]
    return matches[0]


def submit_prompt(at: AppTest, text: str) -> AppTest:
    """Type ``text`` into the sidebar prompt and press the form's Run button."""
    at.sidebar.text_area(key="w_prompt").set_value(text)
    [run] = [b for b in at.sidebar.button if b.label == "Run"]
    return run.click().run()


def analysed_prompt(at: AppTest) -> str:
    """The prompt the Lens page analysed, read from its heatmap's data (token column; a short prompt shows every
    position)."""
    _, frame = charts(at)[0]
    tokens = frame[frame.layer == frame.layer.min()].sort_values("position").token
    return "".join(tokens)


# --- every page -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", ALL_PAGES, ids=[p.stem for p in ALL_PAGES])
def test_every_page_default_input(page: Path) -> None:
    """Each page (new ones included) runs cleanly on the default input and keeps model and prompt in the URL."""
    at = run_page(page)
    assert_clean(at)
    assert at.title, "the page has no title"
    assert at.query_params.get("model") == "bundled"
    assert at.query_params.get("prompt") == DEFAULT_PROMPT
    assert_clean_text(at)  # no nan, "..", float counts or stray markdown in what the page shows


# --- home page ---------------------------------------------------------------------------------------------


def test_home_predicts_paris() -> None:
    at = run_page(HOME)
    assert_clean(at)
    assert at.title[0].value == "Layerscope"
    text = " ".join(m.value for m in at.markdown)
    assert f"predicts **{PARIS}**" in text
    assert at.query_params.get("prompt") == DEFAULT_PROMPT
    assert at.query_params.get("model") == "bundled"
    assert len(charts(at)) == 1 and len(at.main.dataframe) == 1  # the sidebar holds the token table


def test_home_with_prompt_in_url() -> None:
    at = run_page(HOME, prompt="The capital of Germany is")
    assert_clean(at)
    assert at.sidebar.text_area(key="w_prompt").value == "The capital of Germany is"
    assert f"predicts **{show_token(' Berlin')}**" in " ".join(m.value for m in at.markdown)


# --- Lens page ---------------------------------------------------------------------------------------------

PRESET = dict(prompt=DEFAULT_PROMPT, cell="20,3", color="entropy", top_k="5", target=" Paris")


@pytest.fixture()
def lens_preset() -> AppTest:
    return run_page(LENS, **PRESET)


def test_lens_default_input() -> None:
    at = run_page(LENS)
    assert_clean(at)
    assert at.title[0].value == "Lens"
    # the default cell: the last layer at the last position
    assert selectbox(at, "Layer").value == 30
    assert selectbox(at, "Position").value == 4
    assert at.query_params["cell"] == "30,4"
    spec, data = charts(at)[0]
    assert data.layer.nunique() == 31 and data.position.nunique() == 5  # every layer (auto stride 1) x position


def test_lens_query_params_preset(lens_preset: AppTest) -> None:
    at = lens_preset
    assert_clean(at)
    assert selectbox(at, "Layer").value == 20
    assert selectbox(at, "Position").value == 3
    assert selectbox(at, "Colour cells by").value == "entropy"
    assert at.number_input(key="w_top_k").value == 5
    assert at.text_area(key="w_targets").value == " Paris"
    heading = f"top-5 after block 20 at position 3 ({show_token(' France')})"
    assert any(heading.lower() in m.value.lower() for m in at.markdown), [m.value for m in at.markdown]
    [top] = [d.value for d in at.dataframe if list(d.value.columns) == ["rank", "token", "probability"]]
    assert len(top) == 5
    # a copied link reopens the same view
    for name, value in PRESET.items():
        assert at.query_params[name] == value, name
    heatmap_spec, _ = charts(at)[0]
    assert heatmap_spec["layer"][0]["encoding"]["color"]["field"] == "entropy"
    assert_clean_text(at)


def test_lens_change_colour_metric(lens_preset: AppTest) -> None:
    at = lens_preset
    for metric in ("KL to final", "target rank", "target probability", "top-1 probability"):
        selectbox(at, "Colour cells by").set_value(metric)
        at.run()
        assert_clean(at)
        assert at.query_params["color"] == metric
        assert at.query_params["cell"] == "20,3"  # the selection survives the rerun


def test_lens_pick_cell(lens_preset: AppTest) -> None:
    at = lens_preset
    selectbox(at, "Layer").set_value(5)
    at.run()
    assert_clean(at)
    assert at.query_params["cell"] == "5,3"
    assert selectbox(at, "Layer").value == 5 and selectbox(at, "Position").value == 3


def test_lens_submit_new_prompt() -> None:
    at = run_page(LENS)
    assert analysed_prompt(at) == DEFAULT_PROMPT
    at = submit_prompt(at, "The capital of Italy is")
    assert_clean(at)
    assert analysed_prompt(at) == "The capital of Italy is"
    assert at.query_params["prompt"] == "The capital of Italy is"
    assert at.query_params["cell"] == "30,4"


def test_lens_what_if() -> None:
    at = run_page(LENS, whatif="1", prompt_b="The capital of Germany is")
    assert_clean(at)
    assert at.toggle(key="w_whatif").value is True
    assert at.text_area(key="w_prompt_b").value == "The capital of Germany is"
    compare = [(s, d) for s, d in charts(at) if "changed" in d.columns]
    assert len(compare) == 1
    spec, diff = compare[0]
    assert spec["layer"][0]["encoding"]["x"]["axis"]["labelOverlap"] is False  # the edited position keeps its label
    assert (diff.changed == "changed").any()  # France -> Germany changes the prediction
    assert any("→" in label for label in diff.pos_label)  # the edited position is marked
    last = diff[diff.position_b == diff.position_b.max()]
    assert set(last[last.layer == last.layer.max()].top1_b_shown) == {show_token(" Berlin")}
    assert at.query_params["whatif"] == "1"
    assert at.query_params["prompt_b"] == "The capital of Germany is"
    assert_clean_text(at)


def test_lens_what_if_toggle_on_and_off() -> None:
    at = run_page(LENS)
    n_charts = len(charts(at))
    at.toggle(key="w_whatif").set_value(True).run()
    assert_clean(at)
    assert len(charts(at)) > n_charts
    assert at.query_params["whatif"] == "1"
    at.toggle(key="w_whatif").set_value(False).run()
    assert_clean(at)
    assert len(charts(at)) == n_charts


def test_lens_long_prompt_window() -> None:
    """Past 32 positions the heatmap shows a window, chosen with a slider bound to the URL."""
    prompt = "The capital of France is Paris. " * 7  # 50 tokens
    at = run_page(LENS, prompt=prompt, positions="10-30")
    assert_clean(at)
    assert at.slider[0].value == (10, 30)
    _, data = charts(at)[0]
    assert (data.position.min(), data.position.max()) == (10, 30)
    assert at.query_params["positions"] == "10-30"
    assert at.query_params["cell"] == f"30,{len(selectbox(at, 'Position').options) - 1}"


# --- bad input ---------------------------------------------------------------------------------------------


def test_empty_prompt_in_url() -> None:
    at = run_page(LENS, prompt="")
    assert not at.exception
    assert any("empty" in e.lower() for e in errors(at)), errors(at)


@pytest.mark.parametrize("page", [HOME, LENS], ids=["home", "lens"])
def test_blank_prompt_submitted(page: Path) -> None:
    at = submit_prompt(run_page(page), "   ")
    assert not at.exception
    assert any("empty" in e.lower() for e in errors(at)), errors(at)
    # a real prompt afterwards recovers
    at = submit_prompt(at, DEFAULT_PROMPT)
    assert_clean(at)


def test_multi_token_target() -> None:
    at = run_page(LENS, target=" Parisian")
    assert_clean(at)
    notes = [i.value for i in at.info]
    assert any("Parisian" in n and "first" in n and "' Paris'" in n for n in notes), notes


@pytest.mark.parametrize("page", ALL_PAGES, ids=[p.stem for p in ALL_PAGES])
def test_unknown_model(page: Path) -> None:
    at = run_page(page, model="nonexistent-org/nonexistent-model")
    assert not at.exception
    assert any("nonexistent-org/nonexistent-model" in e for e in errors(at)), errors(at)
    assert at.query_params["model"] == "nonexistent-org/nonexistent-model"
    assert at.query_params["prompt"] == DEFAULT_PROMPT  # not preset: the page frame wrote it, stopped early as it was


@pytest.mark.parametrize("page", [HOME, LENS], ids=["home", "lens"])
def test_prompt_too_long(page: Path) -> None:
    at = run_page(page, prompt="word " * 3000)
    assert not at.exception
    assert any("2048" in e and "tokens" in e for e in errors(at)), errors(at)


def test_bad_url_values_are_ignored() -> None:
    at = run_page(LENS, cell="nonsense", color="no-such-metric", top_k="many", stride="0")
    assert not at.exception
    assert selectbox(at, "Colour cells by").value == "top-1 probability"
    assert selectbox(at, "Layer").value == 30

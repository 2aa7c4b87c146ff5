"""AppTest of the "Run on NDIF" path: the sidebar's choice and key field, the Lens page on a model that runs on NDIF,
and the pages that do not run there.

There is no network here, so a real NDIF model cannot be reached: the first test checks that a link naming one gives a
one-line message (no traceback) and keeps the key out of the URL; the others serve the Lens page a stand-in NDIF
model: the bundled weights behind nnsight's local simulation of an NDIF request, flagged as remote (no weight may be
read here), so the page runs exactly the code an NDIF model runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.analyses.lens import run_lens
from core.model.executors import NnsightExecutor, import_nnsight
from core.model.loading import ModelSpec
from core.model.session import ModelSession
from ui import cached
from ui.page import REMOTE_NOTE

ROOT = Path(__file__).resolve().parents[2]
LENS = ROOT / "app_pages" / "1_Lens.py"
DEPTH = ROOT / "app_pages" / "3_Depth.py"
HOME = ROOT / "app.py"
TIMEOUT = 180
REMOTE_MODEL = "meta-llama/Llama-3.1-8B,device=ndif"

pytestmark = pytest.mark.integration  # the stand-in NDIF model is the bundled one


class SimulatedNdif(NnsightExecutor):
    """nnsight's local simulation of an NDIF request, flagged as NDIF: the session reads no weight here."""

    @property
    def remote(self) -> bool:
        return True


@pytest.fixture
def ndif_model(bundled_session: ModelSession, monkeypatch: pytest.MonkeyPatch) -> ModelSession:
    nnsight = import_nnsight()
    wrapped = nnsight.TransformersModel(bundled_session.model, tokenizer=bundled_session.tokenizer,
                                        task="text-generation")
    session = ModelSession(bundled_session.model, bundled_session.tokenizer, ModelSpec.parse(REMOTE_MODEL),
                           SimulatedNdif(wrapped, "simulate"))
    real = cached.get_session
    monkeypatch.setattr(cached, "get_session", lambda key: session if key == REMOTE_MODEL else real(key))
    yield session
    cached.lens_result.clear()  # results of the stand-in must not outlive it


def run_page(path: Path, **params: str) -> AppTest:
    at = AppTest.from_file(str(path), default_timeout=TIMEOUT)
    for name, value in params.items():
        at.query_params[name] = value
    return at.run()


def test_an_ndif_link_offline_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = run_page(LENS, model=REMOTE_MODEL)
    assert not at.exception
    [remote] = [c for c in at.sidebar.checkbox if c.label == "Run on NDIF (remote)"]
    assert remote.value
    [key_field] = [t for t in at.sidebar.text_input if t.label == "NDIF API key"]
    assert [e.value for e in at.error] and all("\n" not in e.value for e in at.error)
    assert "hub" in at.error[0].value
    key_field.set_value("sk-secret-123").run()
    assert not at.exception
    assert "sk-secret" not in repr(dict(at.query_params))
    assert at.query_params["model"] == REMOTE_MODEL


def test_lens_page_runs_the_logit_lens_next_to_the_model(ndif_model: ModelSession) -> None:
    at = run_page(LENS, model=REMOTE_MODEL, prompt="The capital of France is")
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert any("On NDIF: the logit lens" in c.value for c in at.caption)
    assert not [s for s in at.selectbox if s.label in ("Lens", "Side by side with")]  # only the logit lens runs
    assert any("runs on NDIF" in c.value for c in at.sidebar.caption)
    traffic = ndif_model.executor.traffic
    assert 0 < traffic.result_bytes < 200_000  # the statistics came back, not residuals or logits
    local = run_lens(ndif_model.with_executor(None), "The capital of France is", top_k=5)
    assert local.frame.top_tokens.iloc[-1][0] == " Paris"


def test_other_pages_say_where_an_ndif_model_runs(ndif_model: ModelSession) -> None:
    at = run_page(DEPTH, model=REMOTE_MODEL)
    assert not at.exception and not at.error
    assert [i.value for i in at.info] == [REMOTE_NOTE]
    home = run_page(HOME, model=REMOTE_MODEL)
    assert not home.exception and not home.error, [e.value for e in home.error]

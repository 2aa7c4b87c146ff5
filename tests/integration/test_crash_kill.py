"""Nothing lost on a crash, with real processes killed (issue 17, part 4): a process SIGKILLed mid-work leaves
nothing at a name Layerscope reads (only ``.tmp-`` leftovers, never read), the next start shows no traceback, and
a rerun stores what an uninterrupted run stores. tests/unit/test_crash_safety.py covers the same writes in-process
(an exception standing for the crash); here the operating system ends the process, at the moment it is writing.

* Lens training, ``python -m core train-lens`` (the code the Lens page's training job runs: ``training_split``,
  ``train_lenses``, ``save_lenses``) as a subprocess, not the server: the page trains with the fixed
  ``TrainingConfig()`` (two minutes of KL refinement before anything is written), too long for this tier, while the
  CLI takes ``--kl-seconds 0 --tokens 256`` and reaches the write in seconds. It is killed the moment the first file
  appears under ``cache/lenses`` (the lenses are half written); a fresh process then finds no lenses (the page would
  offer training again), trains and saves them (``core.cli.learned._train``, the CLI's own path) and reads back
  exactly what it saved.
* A corpus job, ``python -m core extraction``, killed twice: the moment the first file appears under
  ``cache/corpora`` (the bundled Wikipedia corpus extracted by ``core.data.wikipedia_articles``, half written), then
  in its model pass (after the corpus was stored, before its disk-cache entry); the third run completes and prints,
  stores and caches exactly what an uninterrupted run in a never-killed cache does.
* The real server (e2e tier): ``streamlit run app.py`` driven by headless Chromium, the Lens page's "Train tuned +
  affine lenses" button pressed, the server SIGKILLed while that job writes the corpus it trains on; a second server
  on the same cache shows the page with no exception and the training offered again; its training job is killed
  once the page shows training progress, and nothing under the cache then loads as lenses.

Each test fails if its write were not atomic (temp + rename): a file written in place is caught half done at its
final name by the same trigger. Checked once with non-atomic scratch copies (``save_lenses`` filling the lens folder
in place, ``atomic.write_text`` as ``Path.write_text``): the lens and corpus tests then fail on the half-written
folder or file at its final name.

The model is a tiny random-init Llama saved as a folder (3 blocks of width 1024, a 400-token vocabulary: 25 MB of
lenses to write, evaluated in a second). Subprocesses run with ``OMP_NUM_THREADS=1``: on 2 busy cores torch's
threads fight the other work (the same training took 33 s with its default threads, 2 s with one). Measured on 2
cores with another job running niced: the reference run 10 s, the lens test 19 s, the corpus test 31 s, the server
test 47 s; the file about 1 min 50 s.

Without /usr/bin/chromium (or playwright) the server test is skipped, except under CI (CI=true), where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import pandas as pd
import pytest
from conftest import build_tiny_model, build_tiny_tokenizer

from core.atomic import TEMP_PREFIX

from e2e import test_e2e as e2e  # the e2e tier's server and browser helpers (tests/ is on the path, as for conftest)

ROOT = Path(__file__).resolve().parents[2]
RUN_S = 120  # the longest any one subprocess may take before the test gives up on it
KILL = -signal.SIGKILL  # Popen.returncode of a process ended by SIGKILL


# -- helpers ---------------------------------------------------------------------------------------------------------
def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "LAYERSCOPE_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1"}


def _start(args: list[str], cache: Path, log: Path) -> subprocess.Popen:
    """``python <args>`` from the repository root on ``cache``; stdout to ``log``.out, stderr to ``log``.err."""
    with open(log.with_suffix(".out"), "wb") as out, open(log.with_suffix(".err"), "wb") as err:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=_env(cache), stdout=out, stderr=err)


def _tail(log: Path) -> str:
    return log.with_suffix(".err").read_text(errors="replace")[-3000:] if log.with_suffix(".err").exists() else ""


def _files(folder: Path) -> list[Path]:
    """Every file under ``folder`` (none when it does not exist; entries renamed while listed are skipped)."""
    try:
        return [p for p in folder.rglob("*") if p.is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _kill_when(proc: subprocess.Popen, moment: Callable[[], object], log: Path, timeout: float = RUN_S,
               every: float = 0.0005) -> object:
    """SIGKILL ``proc`` the moment ``moment()`` returns something truthy (polled ``every`` seconds: half a
    millisecond by default), wait for it to end, and return that value. Fails if the process ends by itself first
    (the moment never came)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = moment()
        if seen:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return seen
        if proc.poll() is not None:
            pytest.fail(f"the process ended ({proc.returncode}) before the moment to kill it came:\n{_tail(log)}")
        time.sleep(every)
    proc.kill()
    proc.wait(timeout=30)
    pytest.fail(f"the moment to kill the process did not come within {timeout:.0f} s:\n{_tail(log)}")


def _finish(proc: subprocess.Popen, log: Path) -> str:
    """Wait for an uninterrupted run: exit status 0 and no traceback -> its stdout."""
    try:
        proc.wait(timeout=RUN_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
        pytest.fail(f"the run did not end within {RUN_S} s:\n{_tail(log)}")
    err = _tail(log)
    assert proc.returncode == 0 and "Traceback" not in err, err
    return log.with_suffix(".out").read_text()


def _stored_names(folder: Path) -> list[str]:
    """Names in ``folder`` that Layerscope would read (everything but ``.tmp-`` leftovers)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(TEMP_PREFIX)) if folder.is_dir() else []


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)) if folder.is_dir() else []


def _disk_cache(cache: Path) -> dict:
    """The results disk cache's entries (key -> value), read as a new start would read them (none if absent)."""
    import diskcache

    if not (cache / "results" / "cache.db").is_file():
        return {}
    with diskcache.Cache(str(cache / "results")) as store:
        return {key: store[key] for key in store.iterkeys()}


# -- fixtures --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-init Llama saved as a model folder (``--model <folder>``, ``?model=<folder>``): wide enough
    that its lenses take a while to write (3 x 1024 x 1024 translators and affine maps, 25 MB)."""
    folder = tmp_path_factory.mktemp("model") / "wide-tiny-llama"
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model("llama", len(tokenizer), hidden_size=1024, num_hidden_layers=3,
                             max_position_embeddings=2048)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


EXTRACTION = ["--methods", "logit", "--n", "48", "--seed", "0", "--format", "json"]


class Reference(NamedTuple):
    cache: Path  # a cache that no kill touched
    stdout: str  # what the uninterrupted extraction printed

    @property
    def corpus(self) -> Path:
        return self.cache / "corpora" / "wikipedia.json"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Reference:
    """The uninterrupted corpus job in a fresh cache: the extracted corpus, the printed summary, the cache entry."""
    cache = tmp_path_factory.mktemp("reference-cache")
    log = cache.parent / "reference.log"
    stdout = _finish(_start(["-m", "core", "extraction", "--model", str(model_dir), *EXTRACTION], cache, log), log)
    assert json.loads(stdout) and len(_disk_cache(cache)) == 1
    return Reference(cache, stdout)


# -- lens training ---------------------------------------------------------------------------------------------------
CHECK_LENSES = """
import json, sys, torch
from core.cli.common import load_session
from core.cli.learned import _train
from core.lenses.learned import lens_dir, load_lenses
from core.lenses.params import TrainingConfig

session = load_session(sys.argv[1])
before = load_lenses(session)  # what the Lens page reads on its next start
trained, folder = _train(session, TrainingConfig(kl_seconds=0.0, n_train_tokens=256))  # the CLI's own path
after = load_lenses(session)
saved = trained.tuned.lens.layer_translators.state_dict()
read = after.tuned.lens.layer_translators.state_dict() if after is not None else {}
print(json.dumps({
    "before": before is not None, "folder": str(lens_dir(session)), "saved_to": str(folder),
    "after": after is not None,
    "tuned_equal": sorted(saved) == sorted(read) and all(torch.equal(saved[k], read[k]) for k in saved),
    "affine_equal": after is not None and after.affine is not None and torch.equal(after.affine.maps,
                                                                                    trained.affine.maps),
    "report_model": after.report.get("model") == session.identity() if after is not None else False,
}))
"""


@pytest.mark.integration
def test_killing_lens_training_mid_write_leaves_nothing_that_loads(tmp_path: Path, model_dir: Path,
                                                                   reference: Reference) -> None:
    cache = tmp_path / "cache"
    (cache / "corpora").mkdir(parents=True)
    shutil.copy(reference.corpus, cache / "corpora")  # straight to training: the corpus is the next test's subject
    lenses = cache / "lenses"
    log = tmp_path / "train"
    proc = _start(["-m", "core", "train-lens", "--model", str(model_dir), "--kl-seconds", "0", "--tokens", "256",
                   "--format", "json"], cache, log)
    seen = _kill_when(proc, lambda: _files(lenses), log)  # the first lens file is being written
    assert proc.returncode == KILL
    left = {str(p.relative_to(lenses)): p.stat().st_size for p in _files(lenses)}
    assert not _stored_names(lenses), f"a lens folder at its final name after the kill: {left}"
    assert _leftovers(lenses), f"the kill did not land mid-write (seen {seen}, left {left})"

    check = tmp_path / "check"
    result = json.loads(_finish(_start(["-c", CHECK_LENSES, str(model_dir)], cache, check), check))
    assert result["before"] is False  # nothing loads as trained lenses: the page offers training again
    assert result["saved_to"] == result["folder"] and not Path(result["folder"]).name.startswith(TEMP_PREFIX)
    assert result["after"] and result["tuned_equal"] and result["affine_equal"] and result["report_model"], result
    assert _stored_names(lenses) == [Path(result["folder"]).name]  # the killed write's leftover is never read
    assert sorted(p.name for p in Path(result["folder"]).iterdir()) == [
        "affine.safetensors", "config.json", "params.safetensors", "report.json"]


# -- a corpus job ----------------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_killing_a_corpus_job_leaves_nothing_partial_and_a_rerun_matches(tmp_path: Path, model_dir: Path,
                                                                        reference: Reference) -> None:
    cache = tmp_path / "cache"
    corpora = cache / "corpora"
    args = ["-m", "core", "extraction", "--model", str(model_dir), *EXTRACTION]

    log = tmp_path / "run1"  # killed while the extracted corpus is being written
    proc = _start(args, cache, log)
    seen = _kill_when(proc, lambda: _files(corpora), log)
    assert proc.returncode == KILL
    assert not _stored_names(corpora), f"a corpus file at its final name after the kill (seen {seen})"
    assert _leftovers(corpora), f"the kill did not land mid-write (seen {seen})"
    assert _disk_cache(cache) == {}

    log = tmp_path / "run2"  # killed in the model pass: the corpus is stored, the result not yet
    proc = _start(args, cache, log)
    _kill_when(proc, lambda: "Lens readouts: text" in _tail(log), log, every=0.05)
    assert proc.returncode == KILL
    assert "Traceback" not in _tail(log)  # the leftover of run 1 was no trouble
    assert _stored_names(corpora) == ["wikipedia.json"]
    assert (corpora / "wikipedia.json").read_bytes() == reference.corpus.read_bytes()
    assert _disk_cache(cache) == {}  # nothing half-computed was stored

    log = tmp_path / "run3"  # uninterrupted: the same as a run that was never killed
    assert _finish(_start(args, cache, log), log) == reference.stdout
    stored, expected = _disk_cache(cache), _disk_cache(reference.cache)
    assert stored.keys() == expected.keys() and len(stored) == 1
    for key, value in expected.items():
        pd.testing.assert_frame_equal(stored[key], value, check_exact=True)


# -- the real server -------------------------------------------------------------------------------------------------
@contextmanager
def _server(cache: Path, log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``streamlit run app.py`` on ``cache`` (as :func:`test_e2e.streamlit_server`, with its process handle, so the
    test can kill it): yields (base URL, process) once it answers; a server still running at the end is killed."""
    port = e2e._free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address",
           "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(cache), stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        e2e._wait_healthy(base, proc, log)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=15)


TRAIN_BUTTON = "Train tuned + affine lenses"
TRAINING = re.compile(r"Training lenses: (Collecting residuals|Least-squares|KL refinement)")


def _open_untrained_lens_page(tab, base: str, model: Path) -> None:
    """The Lens page with the tuned lens chosen for a model without one: no exception, training offered."""
    tab.goto(f"{base}/Lens?model={model}&lens=tuned", timeout=e2e.PAGE_RUN_MS)
    e2e.wait_until_ran(tab)
    main = tab.locator('[data-testid="stMain"]')
    assert tab.locator('[data-testid="stException"]').count() == 0, main.inner_text()[-2000:]
    assert not tab.problems, tab.problems
    assert "No tuned lens for this model yet" in main.inner_text()
    assert tab.get_by_role("button", name=TRAIN_BUTTON).count() == 1


@pytest.mark.e2e
def test_killing_the_server_during_lens_training_leaves_nothing_that_loads(tmp_path: Path, model_dir: Path,
                                                                           reference: Reference,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    e2e._require_browser()
    from playwright.sync_api import sync_playwright

    cache = tmp_path / "cache"
    cache.mkdir()
    corpora, lenses = cache / "corpora", cache / "lenses"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(e2e.CHROMIUM), args=e2e.CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport=e2e.VIEWPORT)
            tab.problems = []
            tab.on("pageerror", lambda err: tab.problems.append(str(err)))

            log = tmp_path / "server1.log"  # killed while the training job writes the corpus it trains on
            with _server(cache, log) as (base, proc):
                _open_untrained_lens_page(tab, base, model_dir)
                tab.get_by_role("button", name=TRAIN_BUTTON).click()
                seen = _kill_when(proc, lambda: _files(corpora), log)
                assert proc.returncode == KILL
            assert not _stored_names(corpora), f"a corpus file at its final name after the kill (seen {seen})"
            assert _leftovers(corpora), f"the kill did not land mid-write (seen {seen})"
            assert not _stored_names(lenses)

            log = tmp_path / "server2.log"  # the next start: no traceback, training offered; killed mid-training
            with _server(cache, log) as (base, proc):
                _open_untrained_lens_page(tab, base, model_dir)
                tab.get_by_role("button", name=TRAIN_BUTTON).click()
                tab.get_by_text(TRAINING).first.wait_for(timeout=e2e.PAGE_RUN_MS)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                assert proc.returncode == KILL
            assert "Traceback" not in log.read_text(errors="replace")
        finally:
            browser.close()
    assert (corpora / "wikipedia.json").read_bytes() == reference.corpus.read_bytes()
    assert not _stored_names(lenses)
    monkeypatch.setenv("LAYERSCOPE_CACHE", str(cache))
    from core.cli.common import load_session
    from core.lenses.learned import load_lenses

    assert load_lenses(load_session(str(model_dir))) is None  # a third start would offer training again

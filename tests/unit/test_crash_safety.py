"""Nothing lost on a crash (issue 17, part 4): files appear whole or not at all; a truncated or corrupted stored
entry is detected, logged and recomputed, never a traceback and never loaded as valid."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from core import atomic, cache
from core.lenses.learned import (AffineLens, TrainedLenses, TunedLens, lens_dir, load_lenses, new_package_lens,
                                 save_lenses)


class Crash(Exception):
    """Stands for the process dying mid-write."""


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(atomic.TEMP_PREFIX))


def test_an_interrupted_file_write_leaves_the_old_content_and_no_temp_file(tmp_path) -> None:
    target = tmp_path / "a.json"
    atomic.write_text(target, "old")
    with pytest.raises(Crash):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise Crash
    assert target.read_text() == "old" and not _leftovers(tmp_path)
    atomic.write_text(target, "new")
    assert target.read_text() == "new" and not _leftovers(tmp_path)


def test_an_interrupted_folder_write_leaves_the_old_folder(tmp_path) -> None:
    folder = tmp_path / "lens"
    atomic.replace_folder(folder, lambda f: (f / "x").write_text("1"))

    def half(f) -> None:
        (f / "x").write_text("2")
        raise Crash

    with pytest.raises(Crash):
        atomic.replace_folder(folder, half)
    assert (folder / "x").read_text() == "1" and not _leftovers(tmp_path)
    atomic.replace_folder(folder, lambda f: (f / "y").write_text("3"))
    assert sorted(p.name for p in folder.iterdir()) == ["y"] and not _leftovers(tmp_path)


def test_a_corrupted_cache_entry_is_recomputed_with_a_log_line(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("LAYERSCOPE_CACHE", str(tmp_path))
    cache.results_cache.cache_clear()
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"values": np.arange(20_000, dtype=np.float64)}  # large: diskcache keeps it in its own file

    try:
        first = cache.cached("crash", compute, x=1)
        stored = [p for p in (tmp_path / "results").rglob("*.val")]
        assert len(stored) == 1
        stored[0].write_bytes(stored[0].read_bytes()[:100])  # truncated, as by a crash or a full disk
        with caplog.at_level(logging.WARNING, logger="layerscope"):
            again = cache.cached("crash", compute, x=1)
        assert len(calls) == 2 and np.array_equal(again["values"], first["values"])
        assert any("cannot be read" in r.getMessage() for r in caplog.records)
        assert cache.cached("crash", compute, x=1)["values"].size == 20_000 and len(calls) == 2  # stored again
    finally:
        cache.results_cache.cache_clear()


def _trained(session) -> TrainedLenses:
    package = new_package_lens(session)
    maps = torch.zeros(session.adapter.n_layers, session.adapter.d_model + 1, session.adapter.d_model)
    return TrainedLenses(TunedLens(session, package), AffineLens(session, maps), {"seconds": 1})


def test_a_crash_while_saving_lenses_leaves_nothing_that_loads(make_session, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LAYERSCOPE_CACHE", str(tmp_path))
    session = make_session("llama")
    import core.lenses.learned as learned

    real = learned.save_file
    written = []

    def dying_save(tensors, path):  # the first file is written, then the process dies
        if written:
            raise Crash
        written.append(path)
        real(tensors, path)

    monkeypatch.setattr(learned, "save_file", dying_save)
    with pytest.raises(Crash):
        save_lenses(session, _trained(session))
    assert load_lenses(session) is None  # nothing half-written is read as trained lenses
    assert not lens_dir(session).exists() and not _leftovers(lens_dir(session).parent)
    monkeypatch.setattr(learned, "save_file", real)
    assert load_lenses(session) is None
    save_lenses(session, _trained(session))
    assert load_lenses(session) is not None


def test_a_truncated_stored_lens_is_logged_and_trained_again(make_session, tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("LAYERSCOPE_CACHE", str(tmp_path))
    session = make_session("llama")
    folder = save_lenses(session, _trained(session))
    params = folder / "params.safetensors"
    params.write_bytes(params.read_bytes()[:40])
    with caplog.at_level(logging.WARNING, logger="layerscope"):
        assert load_lenses(session) is None  # read as "not trained": the page offers training again
    assert any("trained again" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="truncated or corrupted"):  # a folder the user named: a clear message
        load_lenses(session, folder)

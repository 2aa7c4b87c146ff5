"""The disk cache: stable keys, hits, and fingerprints that see weight changes."""

from __future__ import annotations

import torch

from core import cache


def test_stable_key_is_order_independent_and_sensitive() -> None:
    a = cache.stable_key("ns", model="m", n=3, seed=1)
    assert a == cache.stable_key("ns", seed=1, n=3, model="m")
    assert a != cache.stable_key("ns", model="m", n=4, seed=1)
    assert a != cache.stable_key("other", model="m", n=3, seed=1)


def test_cached_computes_once(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LAYERSCOPE_CACHE", str(tmp_path))
    cache.results_cache.cache_clear()
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"value": 42}

    assert cache.cached("t", compute, x=1) == {"value": 42}
    assert cache.cached("t", compute, x=1) == {"value": 42}
    assert cache.cached("t", compute, x=2) == {"value": 42}
    assert len(calls) == 2
    assert (tmp_path / "results").is_dir()
    cache.results_cache.cache_clear()


def test_weight_fingerprint_sees_changes() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    before = cache.weight_fingerprint(model)
    assert before == cache.weight_fingerprint(model)
    with torch.no_grad():
        model[1].bias += 1.0
    assert cache.weight_fingerprint(model) != before

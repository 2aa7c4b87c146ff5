"""Patchscopes, learned lenses and next-token extraction on tiny models (issue 3 invariants)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ARCHS
from numerics import assert_top1_within_ties

from core.analyses.extraction import extraction_rows, qualitative_checks, summarise
from core.lenses.learned import AffineLens, TrainedLenses, TunedLens, load_lenses, new_package_lens, save_lenses
from core.lenses.logit import LogitLens
from core.lenses.patchscope import Patchscope, identity_patchscope, question_patchscope
from core.lenses.stats import lens_stats
from core.lenses.training import TrainingConfig, collect_residuals, fit_closed_form, mean_kl_by_layer, refine_kl

PROMPT = "The capital of France is Paris, and the capital of Italy is"
TEXTS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "A transformer reads tokens and writes into the residual stream, layer after layer.",
    "The quick brown fox jumps over the lazy dog while the capital of Spain is Madrid.",
    "Layers after layers refine the prediction of the next token in the stream.",
] * 3


@pytest.mark.parametrize("arch", ARCHS)
def test_self_patch_reproduces_the_model(make_session, arch: str) -> None:
    """Patching h_l(i) of a prompt into the same prompt at layer l, position i changes nothing."""
    session = make_session(arch)
    ids = session.tokenize(PROMPT)
    position = 7
    prefix = ids[: position + 1]
    trace = session.trace(prefix)
    scope = Patchscope(session, session.tokenizer.decode(prefix), "self")
    scope.target_ids = prefix  # exactly the source tokens
    layers = list(range(trace.n_layers + 1))
    patched = scope.patch_positions(trace.resid[:, -1], layers)  # [layer, vocab]
    with torch.no_grad():
        own = session.model(prefix[None]).logits[0, -1]
    assert torch.allclose(patched, own.expand_as(patched), atol=1e-4, rtol=1e-4)
    # different computations (one batched patched forward per layer vs the model's own forward): the top-1
    # up to near-ties of the model's own logits (numerics.logit_tol)
    assert_top1_within_ties(patched.argmax(-1), own.expand_as(patched))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_patching_changes_the_reading(make_session, arch: str) -> None:
    """A patch at an early layer must actually reach the output (the hooks are live)."""
    session = make_session(arch)
    trace = session.trace(PROMPT)
    scope = identity_patchscope(session)
    unpatched = scope.patch_positions(trace.resid[:1, 0] * 0 + 100.0, [1])
    other = scope.patch_positions(trace.resid[:1, 3], [1])
    assert not torch.allclose(unpatched, other)


def test_patchscope_last_layer_is_the_logit_lens(make_session) -> None:
    """At the last layer the target prompt's remaining blocks are none: the reading is the model's output."""
    session = make_session("llama")
    trace = session.trace(PROMPT)
    n = trace.n_layers
    for scope in (identity_patchscope(session), question_patchscope(session)):
        got = scope.logits(trace.resid[[n], :4], [n])
        want = LogitLens(session.adapter).logits(trace.resid[[n], :4], [n])
        assert torch.allclose(got, want, atol=1e-4)


def test_patchscope_batched_equals_one_patch_at_a_time(make_session) -> None:
    session = make_session("gpt2")
    trace = session.trace(PROMPT)
    scope = identity_patchscope(session)
    layers = list(range(trace.n_layers + 1))
    batched = scope.patch_positions(trace.resid[:, 5], layers)
    single = torch.cat([scope.patch_positions(trace.resid[[layer], 5], [layer]) for layer in layers])
    assert torch.allclose(batched, single, atol=1e-4)


def test_patchscope_hooks_are_removed(make_session) -> None:
    session = make_session("gpt2")
    trace = session.trace(PROMPT)
    scope = identity_patchscope(session)
    scope.patch_positions(trace.resid[:, 2], [0, 1])  # transformers adds hooks of its own on first use

    def hook_ids() -> list[set[int]]:
        return [set(b._forward_hooks) | set(b._forward_pre_hooks) for b in session.adapter.blocks]

    before = hook_ids()
    scope.patch_positions(trace.resid[:, 2], list(range(trace.n_layers + 1)))
    assert hook_ids() == before


@pytest.fixture(scope="module")
def fitted(make_session):
    session = make_session("llama")
    resid = collect_residuals(session, TEXTS, n_tokens=400, seq_len=64)
    package_lens, maps = fit_closed_form(session, resid)
    return session, resid, package_lens, maps


def test_closed_form_lenses_beat_the_logit_lens(fitted) -> None:
    """On its own training data a least-squares lens cannot be worse than the identity map it contains."""
    session, _resid, package_lens, maps = fitted
    n = session.adapter.n_layers
    logit = mean_kl_by_layer(session, LogitLens(session.adapter), TEXTS[:4], 64)
    affine = mean_kl_by_layer(session, AffineLens(session, maps), TEXTS[:4], 64)
    tuned = mean_kl_by_layer(session, TunedLens(session, package_lens), TEXTS[:4], 64)
    assert logit.shape == (n + 1,) and affine[-1] == pytest.approx(0, abs=1e-5)
    assert (tuned[:-1] <= logit[:-1] + 1e-3).all(), (tuned, logit)
    assert tuned.mean() < logit.mean()


def test_kl_refinement_lowers_the_loss(fitted) -> None:
    session, resid, _package_lens, _maps = fitted
    lens = new_package_lens(session)  # identity start: plenty of room to improve
    losses = refine_kl(session, lens, resid, TrainingConfig(kl_seconds=3.0, batch_tokens=32, lr=3e-3))
    assert len(losses) >= 3 and losses[-1] < losses[0]


def test_lenses_round_trip_through_safetensors(fitted, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LAYERSCOPE_CACHE", str(tmp_path))
    session, _resid, package_lens, maps = fitted
    trained = TrainedLenses(TunedLens(session, package_lens), AffineLens(session, maps), {"seconds": 1})
    folder = save_lenses(session, trained)
    assert folder.is_relative_to(tmp_path) and (folder / "params.safetensors").is_file()
    loaded = load_lenses(session)
    trace = session.trace(PROMPT)
    layers = list(range(trace.n_layers + 1))
    for a, b in ((trained.tuned, loaded.tuned), (trained.affine, loaded.affine)):
        assert torch.allclose(a.logits(trace.resid[:, :3], layers), b.logits(trace.resid[:, :3], layers))
    assert loaded.tuned.version == trained.tuned.version


def test_pickled_lens_is_refused(fitted, tmp_path) -> None:
    session = fitted[0]
    (tmp_path / "params.pt").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ValueError, match="pickle"):
        load_lenses(session, tmp_path)
    assert load_lenses(session, tmp_path / "missing") is None


def test_extraction_rows_and_summary(make_session) -> None:
    session = make_session("gpt2")
    lenses = {"logit": LogitLens(session.adapter), "identity": identity_patchscope(session),
              "question": question_patchscope(session)}
    rows = extraction_rows(session, TEXTS[:5], lenses, seed=3)
    n_res = session.adapter.n_layers + 1
    assert len(rows) == 5 * n_res * 3
    summary = summarise(rows)
    assert list(summary.columns) == ["layer", "method", "precision_at_1", "surprisal_patched",
                                     "surprisal_original", "n"]
    last = summary[summary.layer == n_res - 1]
    # exact: same computation (at the last layer every lens's reading is the model's output logits tensor and
    # y* is that tensor's argmax)
    assert (last.precision_at_1 == 1.0).all()  # every method reads the output exactly at the last layer
    assert np.allclose(last.surprisal_original, last.surprisal_original.iloc[0])
    # the definitions: where the lens is right, both surprisals equal -log p(y*) under the same distribution
    right = rows[(rows.layer == n_res - 1)]
    assert np.allclose(right.surprisal_patched, right.surprisal_original, atol=1e-4)
    assert (rows.surprisal_patched >= 0).all() and (rows.surprisal_original >= 0).all()


def test_extraction_is_reproducible_by_seed(make_session) -> None:
    session = make_session("gpt2")
    lenses = {"logit": LogitLens(session.adapter)}
    a = extraction_rows(session, TEXTS[:4], lenses, seed=1)
    b = extraction_rows(session, TEXTS[:4], lenses, seed=1)
    # exact: same computation (same texts, seed, shapes and code)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def _rows(n_texts: int, p: dict[str, Callable[[int], float]], seed: int = 0) -> pd.DataFrame:
    """Constructed per-text rows over layers 0..6: method m is correct at layer l with probability p[m](l)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame([{"text": t, "layer": layer, "method": m, "correct": bool(rng.random() < f(layer))}
                         for t in range(n_texts) for layer in range(7) for m, f in p.items()])


def _key(claim: str) -> str:
    """A claim without its parenthesised detail (the "?" variants keep theirs: sink / bare)."""
    return claim if "patchscope" in claim else claim.split(" (")[0]


def test_qualitative_checks_on_constructed_numbers() -> None:
    clear = {"logit": lambda layer: 1.0 if layer == 6 else layer / 6,
             "identity": lambda layer: 1.0 if layer == 6 else 0.1,
             "question": lambda layer: 1.0 if layer == 6 else 0.6,
             "question_bare": lambda layer: 1.0 if layer == 6 else 0.1}
    checks = {_key(c["claim"]): c for c in qualitative_checks(_rows(200, clear))}
    assert len(checks) == 5
    crossover = [c for k, c in checks.items() if "beats the logit lens from" in k][0]
    assert crossover["verdict"] == "does not hold" and crossover["high"] < 0  # identity 0.1 < logit 0.33-0.83
    check = checks["every method reaches precision@1 = 1.0 at the last layer"]
    assert check["kind"] == "check" and check["holds"] is True
    rises = checks["logit-lens precision@1 rises with depth"]
    assert rises["holds"] is True and rises["verdict"] == "holds" and rises["n"] == 200 and rises["low"] > 0
    assert f"{rises['estimate']:.3f}" in rises["evidence"] and "n = 200" in rises["evidence"]
    seed_variant = [c for k, c in checks.items() if "sink" in k][0]
    assert seed_variant["holds"] is True
    bare = [c for k, c in checks.items() if "bare" in k][0]
    assert bare["holds"] is None and bare["verdict"] == "cannot tell at this n"  # equal rates: the CI straddles 0
    assert bare["low"] < 0 < bare["high"]
    # reversed: the identity scope wins clearly -> does not hold; tiny n -> cannot tell
    reversed_ = dict(clear, question=lambda layer: 1.0 if layer == 6 else 0.0, identity=lambda layer: 0.9)
    checks = {_key(c["claim"]): c for c in qualitative_checks(_rows(200, reversed_))}
    assert [c for k, c in checks.items() if "sink" in k][0]["verdict"] == "does not hold"
    assert [c for k, c in checks.items() if "beats the logit lens from" in k][0]["verdict"] == "holds"
    assert checks["every method reaches precision@1 = 1.0 at the last layer"]["holds"] is False
    # 4 texts: "?" right early where identity is wrong on two, the reverse on the other two -> the interval straddles 0
    mixed = [{"text": t, "layer": layer, "method": m, "correct": layer == 6 or (m == "question") == (t % 2 == 0)}
             for t in range(4) for layer in range(7) for m in ("question", "identity")]
    [check] = [c for c in qualitative_checks(pd.DataFrame(mixed)) if "sink" in c["claim"]]
    assert check["n"] == 4 and check["estimate"] == 0.0 and check["verdict"] == "cannot tell at this n"


def test_affine_lens_verdict_on_constructed_numbers() -> None:
    """Patchscopes' early-layer lead of the affine map over the logit lens: holds / does not hold / cannot tell."""
    def affine_claim(affine: Callable[[int], float], n: int) -> dict:
        rows = _rows(n, {"logit": lambda layer: 1.0 if layer == 6 else 0.3, "affine": affine})
        [claim] = [c for c in qualitative_checks(rows) if c["claim"].startswith("the affine lens")]
        return claim

    assert affine_claim(lambda layer: 1.0 if layer == 6 else 0.8, 200)["verdict"] == "holds"
    assert affine_claim(lambda layer: 1.0 if layer == 6 else 0.0, 200)["verdict"] == "does not hold"
    unclear = affine_claim(lambda layer: 1.0 if layer == 6 else 0.3, 6)
    assert unclear["verdict"] == "cannot tell at this n" and unclear["low"] < 0 < unclear["high"], unclear


def test_lens_stats_accepts_every_lens(make_session) -> None:
    session = make_session("gpt2")
    trace = session.trace(PROMPT)
    stats = lens_stats(session, trace, question_patchscope(session), top_k=3)
    assert stats.kl_to_final[-1].max() < 1e-4


def test_import_lens_folder(fitted, tmp_path, monkeypatch) -> None:
    from core.lenses.learned import import_lenses

    session, _resid, package_lens, maps = fitted
    monkeypatch.setenv("LAYERSCOPE_CACHE", str(tmp_path / "elsewhere"))
    source = save_lenses(session, TrainedLenses(TunedLens(session, package_lens), None, {"seconds": 2}))
    assert not (source / "affine.safetensors").exists()
    monkeypatch.setenv("LAYERSCOPE_CACHE", str(tmp_path / "here"))
    assert load_lenses(session) is None
    stored = import_lenses(session, source)
    assert stored.is_relative_to(tmp_path / "here")
    loaded = load_lenses(session)
    assert loaded.affine is None and loaded.tuned.version == TunedLens(session, package_lens).version
    with pytest.raises(ValueError, match="No lens folder"):
        import_lenses(session, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="params.safetensors"):
        import_lenses(session, tmp_path / "empty")

"""The registries: lenses by name (core.lenses.registry) and analysis sections by name (core.analyses.sections),
with the cache keys of the depth and Top-k sections exactly as they were before the registry (stored results stay
valid), and the torch-free modules the command line parses with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest
import torch

from core.analyses import sections as section_module
from core.analyses.sections import Section, SectionRegistry
from core.lenses import registry
from core.lenses.learned import AffineLens, TrainedLenses, TunedLens, new_package_lens, save_lenses
from core.lenses.logit import LogitLens
from core.lenses.patchscope import IDENTITY_PROMPT, QUESTION_PROMPT, Patchscope
from core.model.session import ModelSession

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def session(make_session: Callable[..., ModelSession]) -> ModelSession:
    return make_session("gpt2")


def _trained(session: ModelSession) -> TrainedLenses:
    """Identity-initialised tuned lens and zero affine maps: real lens objects, no training."""
    d_model, n_layers = session.adapter.d_model, session.adapter.n_layers
    maps = torch.zeros(n_layers, d_model + 1, d_model)  # [layer, d_model + 1, d_model]
    return TrainedLenses(TunedLens(session, new_package_lens(session)), AffineLens(session, maps), {"seconds": 1})


# -- lenses ------------------------------------------------------------------------------------------------------
def test_lens_names_and_labels_are_the_apps() -> None:
    from ui import cached

    assert registry.NAMES == ("logit", "tuned", "affine", "identity", "question", "question_bare")
    assert cached.LENS_NAMES == registry.LABELS
    assert cached.LENS_NAMES["tuned"] == "Tuned lens (Belrose; trained here)"
    assert registry.LEARNED == ("tuned", "affine")
    assert [n for n, e in registry.LENSES.items() if e.takes_prompt] == ["identity", "question", "question_bare"]


def test_build_each_lens_by_name(session: ModelSession) -> None:
    trained = _trained(session)
    assert isinstance(registry.build_lens(session, "logit"), LogitLens)
    for name, default in (("identity", IDENTITY_PROMPT), ("question", QUESTION_PROMPT),
                          ("question_bare", QUESTION_PROMPT)):
        scope = registry.build_lens(session, name)
        assert isinstance(scope, Patchscope) and (scope.name, scope.target_prompt) == (name, default)
        assert registry.build_lens(session, name, "x ->").target_prompt == "x ->"
    assert registry.build_lens(session, "tuned", trained=lambda: trained) is trained.tuned
    assert registry.build_lens(session, "affine", trained=lambda: trained) is trained.affine
    with pytest.raises(ValueError, match="Unknown lens 'bogus'; choose from logit, tuned, affine"):
        registry.build_lens(session, "bogus")


def test_learned_lens_not_trained_says_so(session: ModelSession) -> None:
    with pytest.raises(registry.LensNotTrained, match="The tuned lens is not trained for this model yet"):
        registry.build_lens(session, "tuned", trained=lambda: None)
    without_affine = TrainedLenses(_trained(session).tuned, None)  # an imported tuned lens: no affine maps
    with pytest.raises(registry.LensNotTrained, match="affine lens") as err:
        registry.build_lens(session, "affine", trained=lambda: without_affine)
    assert err.value.with_hint("train it.") == "The affine lens is not trained for this model yet: train it."
    assert isinstance(err.value, ValueError)  # the CLI and the pages show ValueErrors as one line


def test_learned_lenses_default_to_the_stored_ones(session: ModelSession, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERSCOPE_CACHE", str(tmp_path))
    with pytest.raises(registry.LensNotTrained):
        registry.build_lens(session, "tuned")
    trained = _trained(session)
    save_lenses(session, trained)
    loaded = registry.build_lens(session, "tuned")
    assert loaded is not trained.tuned and registry.lens_identity(loaded) == trained.tuned.version


def test_lens_identity_is_the_key_part_used_before_the_registry(session: ModelSession) -> None:
    """Extraction keyed lenses by ``version or target_prompt``, depth by ``version``: the registry's identity is
    that same string for every lens either used, so their stored results stay valid."""
    trained = _trained(session)
    lenses = {name: registry.build_lens(session, name, trained=lambda: trained) for name in registry.NAMES}
    lenses["self"] = Patchscope(session, "a b", "self")  # a lens outside the registry
    for name, lens in lenses.items():
        old = getattr(lens, "version", "") or getattr(lens, "target_prompt", "")
        if getattr(lens, "sink_id", None) is not None:  # the seed's "?" scope: another target than before, another key
            old += f"\x00sink={lens.sink_id}"
        assert registry.lens_identity(lens) == old, name  # exact: the same strings, read the same way
    assert registry.lens_identity(lenses["logit"]) == ""
    assert registry.lens_identity(lenses["question_bare"]) == QUESTION_PROMPT
    assert registry.lens_identity(lenses["tuned"]) == trained.tuned.version != ""
    assert registry.lens_identity(lenses["affine"]) == trained.affine.version != trained.tuned.version


# -- sections ----------------------------------------------------------------------------------------------------
def _frames(*names: str) -> dict[str, pd.DataFrame]:
    return {name: pd.DataFrame({"x": [1]}) for name in names}


def test_section_registry_declares_gets_computes_and_keys() -> None:
    calls: list[tuple] = []

    def a(x: int) -> dict[str, pd.DataFrame]:
        calls.append(("a", x))
        return _frames("rows", "summary")

    reg = SectionRegistry.declare("demo", "demo-ns", {"a": ("rows", "summary"), "b": ("rows",)},
                                  {"a": a, "b": lambda x: _frames("rows")}, version="7")
    assert reg.names == ("a", "b") and reg.tables == {"a": ("rows", "summary"), "b": ("rows",)}
    assert reg.get("a") == Section("a", ("rows", "summary"), a, "7")
    assert list(reg.compute("a", 3)) == ["rows", "summary"] and calls == [("a", 3)]
    assert reg.cache_parts("b", {"model": "m"}) == {"model": "m", "section": "b", "version": "7"}
    with pytest.raises(ValueError, match="Unknown demo section 'c'; choose from a, b."):
        reg.get("c")
    with pytest.raises(ValueError, match="declared"):
        SectionRegistry.declare("demo", "demo-ns", {"a": ("rows",)}, {"b": a})
    unversioned = SectionRegistry("demo", "demo-ns", [Section("a", ("rows",), lambda: _frames("rows"))])
    assert unversioned.cache_parts("a", {"n": 1}) == {"n": 1, "section": "a"}  # "" adds no key part
    wrong = SectionRegistry("demo", "demo-ns", [Section("a", ("rows", "curves"), lambda: _frames("rows"))])
    with pytest.raises(AssertionError):
        wrong.compute("a")


class _Captured:
    """Stands in for core.cache.cached: records the key and computes nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, namespace: str, compute: Callable[[], Any], **parts: Any) -> dict:
        self.calls.append((namespace, parts))
        return {}


class _Identified:
    """A session for key building only: its identity."""

    def identity(self) -> str:
        return "model@fingerprint"


def test_registered_sections_are_the_declared_ones() -> None:
    from core.analyses.depth import params as depth_params
    from core.analyses.depth import sections as depth_sections
    from core.analyses.topk import params as topk_params
    from core.analyses.topk import sections as topk_sections

    assert depth_sections.REGISTRY.names == depth_params.SECTIONS
    assert depth_sections.REGISTRY.tables == depth_params.TABLES
    assert topk_sections.REGISTRY.names == topk_params.SECTIONS
    assert topk_sections.REGISTRY.tables == topk_params.TABLES


def test_depth_cache_keys_are_unchanged(session: ModelSession, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.analyses.depth.sections import run_section

    captured = _Captured()
    monkeypatch.setattr(section_module, "cached", captured)
    trained = _trained(session)
    for lens in (LogitLens(session.adapter), trained.tuned):
        run_section(_Identified(), lens, "facts", 40, 7)  # type: ignore[arg-type]
    # the parts run_section passed to cached() before the registry, literally
    assert captured.calls == [
        ("depth", {"model": "model@fingerprint", "section": "facts", "n": 40, "seed": 7, "lens": "logit",
                   "lens_version": ""}),
        ("depth", {"model": "model@fingerprint", "section": "facts", "n": 40, "seed": 7, "lens": "tuned",
                   "lens_version": trained.tuned.version}),
    ]
    with pytest.raises(ValueError, match="Unknown depth section 'bogus'"):
        run_section(_Identified(), trained.tuned, "bogus", 40)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must be at least 1"):
        run_section(_Identified(), trained.tuned, "pos", 0)  # type: ignore[arg-type]


def test_topk_cache_keys_are_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.analyses.topk.params import SECTION_VERSION, TopkParams
    from core.analyses.topk.sections import run_section

    captured = _Captured()
    monkeypatch.setattr(section_module, "cached", captured)
    params = TopkParams(n=5, k=4)
    for section in ("saturation", "early-exit"):
        run_section(_Identified(), section, params)  # type: ignore[arg-type]
    # the parts run_section passed to cached() before the registry, literally
    assert captured.calls == [("topk-section", {"model": "model@fingerprint", "section": section,
                                                "params": params.__dict__, "version": SECTION_VERSION})
                              for section in ("saturation", "early-exit")]
    with pytest.raises(ValueError, match="Unknown top-k section 'bogus'"):
        run_section(_Identified(), "bogus", TopkParams(k=1))  # type: ignore[arg-type]  # the name is checked first
    with pytest.raises(ValueError, match="k must lie in"):
        run_section(_Identified(), "saturation", TopkParams(k=1))  # type: ignore[arg-type]


# -- torch-free modules ------------------------------------------------------------------------------------------
def test_registries_and_params_import_no_torch() -> None:
    modules = ("core.lenses.registry", "core.lenses.params", "core.analyses.params", "core.analyses.depth.params",
               "core.analyses.topk.params", "core.analyses.topics.params", "core.analyses.attention_mlp.params")
    code = (f"import importlib, sys; [importlib.import_module(m) for m in {modules!r}]; "
            "assert not {'torch', 'transformers', 'pandas', 'scipy'} & set(sys.modules), sorted(sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]

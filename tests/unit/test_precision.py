"""Precision: tiny models of every family in bfloat16 (and float16, which this CPU runs too) against float32.

bfloat16 keeps 8 significant bits (~3 decimal digits, a rounding of up to 2**-9 = 0.2% per operation), and the
roundings add up over the blocks: on these 3-block models the residual differs from float32 by up to ~3% of its
norm and a lens logit by up to ~1.6% of its row's largest |logit| (measured on the Intel AMX kind). The bounds
below allow about twice that; ids and ranks chosen by comparing logits are checked up to those near-ties.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import streamlit as st
import torch
from conftest import ARCHS, tiny_config
from numerics import assert_top1_within_ties
from streamlit.testing.v1 import AppTest

import core.lenses.reduce
import core.lenses.stats as stats
from core.lenses.stats import lens_stats, output_logits
from core.model.loading import ModelSpec, build_random_twin, load_model
from core.model.session import ModelSession

PROMPT = "The capital of France is Paris, and Rome is a city in Italy. The quick brown fox jumps over the lazy dog."
BF16_RESID_RTOL = 0.06
"""Largest |resid_bf16 - resid_fp32| / |resid_fp32| (per layer and position) allowed."""
BF16_LOGIT_RTOL = 0.04
"""Near-tie gap for bfloat16 ids, relative to each row's largest |logit| (numerics.logit_tol's rtol)."""
BF16_PROB_ATOL = 0.02
BF16_ENTROPY_ATOL = 0.05  # nats
BF16_MIN_TOP1_AGREEMENT = 0.95
"""Share of layer x position rows whose bfloat16 top-1 equals the float32 one exactly (the rest: near-ties)."""


def _session(tiny_tokenizer, arch: str, dtype: torch.dtype) -> ModelSession:
    """The seed-0 tiny ``arch`` model in ``dtype`` (the float32 twin rounded: build_random_twin casts)."""
    model = build_random_twin(tiny_config(arch, len(tiny_tokenizer)), seed=0, dtype=dtype).eval()
    dtype_name = str(dtype).removeprefix("torch.")
    return ModelSession(model, tiny_tokenizer, ModelSpec(source=f"tiny-{arch}", dtype=dtype_name))


@pytest.fixture(scope="module")
def pairs(tiny_tokenizer) -> dict[str, tuple[ModelSession, ModelSession]]:
    """arch -> (float32 session, bfloat16 session) of the same weights."""
    return {arch: (_session(tiny_tokenizer, arch, torch.float32), _session(tiny_tokenizer, arch, torch.bfloat16))
            for arch in ARCHS}


def test_twin_in_bfloat16_is_the_float32_twin_rounded(pairs) -> None:
    fp32, bf16 = pairs["llama"]
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    for (name, a), (_, b) in zip(fp32.model.named_parameters(), bf16.model.named_parameters()):
        assert torch.equal(a.to(torch.bfloat16), b), name  # exact: the same cast of the same float32 values


@pytest.mark.parametrize("arch", ARCHS)
def test_trace_in_bfloat16_matches_float32(pairs, arch: str) -> None:
    fp32, bf16 = pairs[arch]
    ref, got = fp32.trace(PROMPT, capture=("attn_patterns",)), bf16.trace(PROMPT, capture=("attn_patterns",))
    assert got.resid.dtype == torch.float32  # captures are stored in float32 whatever the model's dtype
    assert torch.isfinite(got.resid).all()
    rel = (got.resid - ref.resid).norm(dim=-1) / ref.resid.norm(dim=-1).clamp_min(1e-6)  # [layer+1, pos]
    assert float(rel.max()) < BF16_RESID_RTOL
    torch.testing.assert_close(got.attn_patterns, ref.attn_patterns, atol=0.02, rtol=0)
    torch.testing.assert_close(got.attn_patterns.sum(-1), torch.ones_like(got.attn_patterns[..., 0]),
                               atol=0.02, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_lens_in_bfloat16_matches_float32(pairs, arch: str) -> None:
    fp32, bf16 = pairs[arch]
    ref_trace, trace = fp32.trace(PROMPT), bf16.trace(PROMPT)
    ref, got = lens_stats(fp32, ref_trace, top_k=5), lens_stats(bf16, trace, top_k=5)
    for name in ("top_probs", "entropy", "kl_to_final", "target_prob"):
        values = getattr(got, name)
        assert values.dtype == np.float32 and np.isfinite(values).all(), name
    # every layer x position: the bf16 top-1 is a float32 argmax up to bf16 near-ties
    ref_logits = output_logits(fp32.adapter, ref_trace.resid)  # [layer+1, pos, vocab] float32 logit lens
    assert_top1_within_ties(got.top_ids[..., 0], ref_logits, rtol=BF16_LOGIT_RTOL)
    assert (got.top_ids[..., 0] == ref.top_ids[..., 0]).mean() >= BF16_MIN_TOP1_AGREEMENT
    np.testing.assert_allclose(got.top_probs[..., 0], ref.top_probs[..., 0], atol=BF16_PROB_ATOL, rtol=0)
    np.testing.assert_allclose(got.entropy, ref.entropy, atol=BF16_ENTROPY_ATOL, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_last_layer_top1_is_the_bf16_models_own_argmax(pairs, arch: str) -> None:
    bf16 = pairs[arch][1]
    trace = bf16.trace(PROMPT)
    got = lens_stats(bf16, trace, top_k=3)
    with torch.no_grad():
        own = bf16.model(trace.input_ids[None]).logits[0].float()  # [pos, vocab] the model's own bf16 output
    # near-ties at float32's tolerance: the same norm and unembedding in bf16, called with another shape
    assert_top1_within_ties(got.top_ids[-1, :, 0], own)
    np.testing.assert_array_equal(got.target_rank[-1, :, 0], 1)  # exact: the default target is this row's top-1


def test_reductions_run_in_float32(pairs, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every chunk a bf16 lens hands to the reduction is float32 (upcast per chunk, never the whole tensor)."""
    seen: list[torch.dtype] = []
    reduce = core.lenses.reduce.reduce_logits

    def spy(logits, final, target, next_ids, k):
        seen.extend([logits.dtype, *(x.dtype for x in final)])
        return reduce(logits, final, target, next_ids, k)

    monkeypatch.setattr(core.lenses.reduce, "reduce_logits", spy)
    fp32, bf16 = pairs["gpt2"]
    assert bf16.adapter.unembed_module.weight.dtype == torch.bfloat16
    lens_stats(bf16, bf16.trace(PROMPT), top_k=3)
    assert seen and set(seen) == {torch.float32}
    ids, probs = stats.logit_lens_top_k(bf16.adapter, bf16.trace(PROMPT).resid, k=3, with_probs=True)
    assert probs.dtype == np.float32 and np.isfinite(probs).all() and (probs <= 1.0 + 1e-6).all()


@pytest.mark.parametrize("arch", ("gpt2", "llama", "opt"))
def test_float16_runs_on_cpu(tiny_tokenizer, pairs, arch: str) -> None:
    """float16 works on this CPU for the trace and the lens (same bounds as bfloat16: it keeps more bits)."""
    fp32, fp16 = pairs[arch][0], _session(tiny_tokenizer, arch, torch.float16)
    ref_trace, trace = fp32.trace(PROMPT), fp16.trace(PROMPT)
    rel = (trace.resid - ref_trace.resid).norm(dim=-1) / ref_trace.resid.norm(dim=-1).clamp_min(1e-6)
    assert float(rel.max()) < BF16_RESID_RTOL
    got = lens_stats(fp16, trace, top_k=3)
    assert np.isfinite(got.entropy).all()
    assert_top1_within_ties(got.top_ids[..., 0], output_logits(fp32.adapter, ref_trace.resid), rtol=BF16_LOGIT_RTOL)


def test_spec_dtype_loads_that_dtype(tiny_tokenizer, tmp_path) -> None:
    """A float32 folder loaded with dtype=bfloat16 is cast on loading; auto on CPU is float32."""
    model = build_random_twin(tiny_config("llama", len(tiny_tokenizer)), seed=0)
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded, _ = load_model(ModelSpec(source=str(tmp_path), dtype="bfloat16"))
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    for (name, a), (_, b) in zip(model.named_parameters(), loaded.named_parameters()):
        assert torch.equal(a.to(torch.bfloat16), b), name  # exact: one cast of the same stored float32 values
    auto, _ = load_model(ModelSpec(source=str(tmp_path), dtype="auto", device="cpu"))
    assert {p.dtype for p in auto.parameters()} == {torch.float32}


# -- the sidebar ---------------------------------------------------------------------------------------------
HOME = Path(__file__).resolve().parents[2] / "app.py"  # the home page, through st.navigation


@pytest.fixture
def tiny_folder(tiny_tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A tiny llama saved as a local model folder (float32 on disk); Streamlit's caches start empty."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = build_random_twin(tiny_config("llama", len(tiny_tokenizer)), seed=0)
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    st.cache_resource.clear()
    st.cache_data.clear()
    return str(tmp_path)


def _home(model: str) -> AppTest:
    at = AppTest.from_file(str(HOME), default_timeout=60)
    at.query_params["model"] = model
    return at.run()


def _sidebar_box(at: AppTest, label: str):
    [box] = [b for b in at.sidebar.selectbox if b.label == label]
    return box


def test_sidebar_precision_from_the_url(tiny_folder: str) -> None:
    at = _home(f"{tiny_folder},dtype=bfloat16")
    assert not at.exception, [e.message for e in at.exception]
    assert (_sidebar_box(at, "Precision").value, _sidebar_box(at, "Device").value) == ("bfloat16", "cpu")
    [facts] = [c.value for c in at.sidebar.caption if " GB · " in c.value]
    assert facts.endswith(" GB · bfloat16 · cpu")
    assert at.query_params["model"] == f"{tiny_folder},dtype=bfloat16"
    _sidebar_box(at, "Precision").select("float32").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.query_params["model"] == tiny_folder  # the default is left out: the link of old
    assert any(c.value.endswith(" GB · float32 · cpu") for c in at.sidebar.caption)


@pytest.mark.parametrize(("suffix", "message"), [(",dtype=fp8", "Unknown dtype 'fp8'"),
                                                  (",device=tpu", "Unknown device")])
def test_sidebar_bad_precision_in_the_url(tiny_folder: str, suffix: str, message: str) -> None:
    """A link with an unknown dtype or a refused device: one warning line, the model opens in the defaults."""
    at = _home(tiny_folder + suffix)
    assert not at.exception, [e.message for e in at.exception]
    warnings = [w.value for w in at.sidebar.warning]
    assert len(warnings) == 1 and message in warnings[0] and "\n" not in warnings[0]
    assert any(c.value.endswith(" GB · float32 · cpu") for c in at.sidebar.caption)
    assert at.query_params["model"] == tiny_folder

"""Top-k order, intervention and other modalities: the pre-hook implant on tiny models, pair selection on
constructed saturation arrays, ViT / Whisper adapters and end-to-end runs on tiny random-init configs, input
decoding, and the intervention on the bundled model (integration)."""

from __future__ import annotations

import io
import wave

import numpy as np
import pandas as pd
import pytest
import torch
from numerics import assert_top1_saturation_within_ties

import core.lenses.reduce
import core.lenses.stats
from core.analyses.topk import intervention as ti
from core.analyses.topk.intervention import (
    InterventionConfig,
    compute_intervention,
    implant_forward,
    implant_layers,
    lens_top_ids,
    offsets_table,
    select_pairs,
    top1_saturation,
)
from core.analyses.topk.modal_models import load_modal, tiny_vit, tiny_whisper
from core.analyses.topk.modalities import compute_modality, decode_image, decode_wav, generated_images
from core.analyses.topk.saturation import saturation_layers, slot_match_from_top_ids
from core.lenses.logit import LogitLens

TEXT = "The capital of France is Paris. The quick brown fox jumps over the lazy dog and the capital of Italy"


def _clean(session, late: int = 9):
    ids = session.tokenize(TEXT)
    return ids, session.trace(ids)


# -- the implant ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_implanting_a_positions_own_residual_changes_nothing(make_session, arch: str) -> None:
    session = make_session(arch)
    ids, trace = _clean(session)
    late, n_layers = 9, session.adapter.n_layers
    implants = [None] + [(l0, trace.resid[l0 + 1, late]) for l0 in range(n_layers - 1)]
    resid = implant_forward(session, ids, late, implants)  # [row, layer+1, d_model]
    for row in range(1, len(implants)):
        # the trace's state (another pass: float noise only) in place of this pass's own
        torch.testing.assert_close(resid[row], resid[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(resid[0], trace.resid[:, late], atol=1e-5, rtol=1e-5)
    lens = LogitLens(session.adapter)
    with torch.no_grad():
        patched = lens.logits(resid[:, -1:], [n_layers])[:, 0]  # [row, vocab]
        clean = session.model(ids[None, :late + 1]).logits[0, -1]
    torch.testing.assert_close(patched, clean.expand_as(patched), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_implant_before_the_last_block_gives_what_that_state_gives_through_it(make_session, arch: str) -> None:
    """Another position's state after block L-2 implanted into the late token: the final output equals a plain
    forward whose block L-2 output at the late position (only) is edited by a forward hook."""
    session = make_session(arch)
    ids, trace = _clean(session)
    late, donor, n_layers = 9, 3, session.adapter.n_layers
    vector = trace.resid[n_layers - 1, donor]  # after block L-2
    resid = implant_forward(session, ids, late, [(n_layers - 2, vector)])[0]
    assert torch.equal(resid[n_layers - 1], vector)  # exact: the implanted vector itself, copied, not recomputed
    torch.testing.assert_close(resid[:n_layers - 1], trace.resid[:n_layers - 1, late], atol=1e-5, rtol=1e-5)

    def edit(_module, _inputs, output):
        hidden = (output[0] if isinstance(output, tuple) else output).clone()
        hidden[:, late] = vector
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = session.adapter.blocks[n_layers - 2].register_forward_hook(edit)
    try:
        with torch.no_grad():
            expected = session.model(ids[None, :late + 1]).logits[0, -1]
    finally:
        handle.remove()
    got = LogitLens(session.adapter).logits(resid[None, -1:], [n_layers])[0, 0]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, session.model(ids[None, :late + 1]).logits[0, -1], atol=1e-3)


def test_the_cached_prefix_and_the_full_batch_agree_so_only_the_late_position_is_patched(make_session,
                                                                                        monkeypatch) -> None:
    session = make_session("llama")
    ids, trace = _clean(session)
    implants = [(l0, trace.resid[l0 + 1, 2]) for l0 in range(session.adapter.n_layers - 1)]
    cached = implant_forward(session, ids, 9, implants)
    monkeypatch.setattr(ti, "_prefix_cache", lambda *args: None)  # whole prefix in every row, patch at -1
    full = implant_forward(session, ids, 9, implants)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


def test_implant_layers_outside_the_model_are_refused_or_skipped(make_session) -> None:
    session = make_session("gpt2")
    ids, trace = _clean(session)
    n_layers = session.adapter.n_layers
    with pytest.raises(ValueError, match="implant layer"):
        implant_forward(session, ids, 4, [(n_layers - 1, trace.resid[-1, 0])])
    assert implant_layers(1, 3, range(-2, 3)) == ([-1, 0], [-2, 1, 2])  # layers 0..1 of a 3-layer model
    assert implant_layers(10, 30, range(-5, 6)) == (list(range(-5, 6)), [])


# -- saturation and pairs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("call_mb", [0, 64])  # 0: one layer per call, so the reading really stops early
def test_top1_saturation_read_from_the_top_equals_the_full_definition(make_session, monkeypatch, call_mb) -> None:
    monkeypatch.setattr(core.lenses.reduce, "CALL_MB", call_mb)
    session = make_session("llama", seed=3, num_hidden_layers=8)
    _, trace = _clean(session)
    sat, final = top1_saturation(session.adapter, trace.resid[1:])
    full = lens_top_ids(session.adapter, trace.resid[1:], 1)  # [layer, pos, 1]
    # exact: same computation (reading from the top stops early but reads each layer in the same position tiles
    # as lens_top_ids, core.lenses.stats.logit_lens_top_k), so it must give the full definition's answer bit for bit
    np.testing.assert_array_equal(sat, saturation_layers(slot_match_from_top_ids(full))[:, 0])
    np.testing.assert_array_equal(final, full[-1, :, 0])
    # against a different computation (every layer in one call): up to near-ties of its logits
    # (numerics.logit_tol); without near-ties the bounds are one layer, i.e. the definition's answer
    with torch.no_grad():
        reference = LogitLens(session.adapter).logits(trace.resid[1:], list(range(1, trace.n_layers + 1)))
    assert_top1_saturation_within_ties(sat, final, reference)
    assert len(set(sat.tolist())) > 1  # the test means something: saturation differs between positions


def test_pairs_on_constructed_saturation_layers() -> None:
    config = InterventionConfig(min_gap=6, min_sat=6, max_distance=30)
    sat = np.array([6, 20, 12, 7, 25, 6, 29])
    final = np.array([5, 5, 5, 9, 9, 5, 5])
    pairs = set(select_pairs(sat, final, config))
    # token 5 at positions 0, 1, 2, 5, 6; token 9 at 3, 4. (0, 5) share a layer; the rest differ by >= 6
    assert pairs == {(0, 1), (0, 2), (0, 6), (2, 1), (5, 1), (1, 6), (5, 2), (2, 6), (5, 6), (3, 4)}
    assert set(select_pairs(sat, final, config.replace(max_distance=1))) == {(0, 1), (2, 1), (3, 4), (5, 6)}
    assert set(select_pairs(sat, final, config.replace(min_sat=7))) == {(2, 1), (1, 6), (2, 6), (3, 4)}
    assert set(select_pairs(sat, final, config.replace(min_gap=15))) == {(0, 6), (2, 6), (5, 6), (3, 4)}


def test_pairs_gap_is_inclusive_and_early_is_the_smaller_saturation() -> None:
    config = InterventionConfig(min_gap=6, min_sat=6, max_distance=30)
    assert select_pairs(np.array([20, 14]), np.array([1, 1]), config) == [(1, 0)]
    assert select_pairs(np.array([20, 15]), np.array([1, 1]), config) == []
    with pytest.raises(ValueError):
        select_pairs(np.array([1, 2]), np.array([1]), config)


def test_config_scales_the_papers_constants_with_depth() -> None:
    assert InterventionConfig.for_depth(48) == InterventionConfig()
    scaled = InterventionConfig.for_depth(30)
    assert (scaled.min_gap, scaled.min_sat, scaled.max_distance, scaled.n_adjacent) == (6, 6, 30, 5)
    assert InterventionConfig.for_depth(3).min_gap == 1
    with pytest.raises(ValueError, match="min_gap"):
        scaled.replace(min_gap=0)


def test_offsets_table_shares_sem_and_half_maxima() -> None:
    pairs = pd.DataFrame({"offset": [-1, -1, 0, 0, 0, 1], "success": [False, True, True, True, False, True]})
    table = offsets_table(pairs, {-1: 0, 0: 0, 1: 2}, [-1, 0, 1]).set_index("offset")
    assert table.loc[-1, "share"] == 0.5 and table.loc[0, "share"] == pytest.approx(2 / 3)
    assert table.loc[0, "sem"] == pytest.approx(np.sqrt(2 / 3 * 1 / 3 / 3))
    assert table.loc[1, "skipped"] == 2 and table.loc[1, "n"] == 1
    assert table.loc[-1, "half_max"] == 0.5 and table.loc[0, "half_max"] == 1.0


def test_compute_intervention_on_a_tiny_model_is_consistent(make_session) -> None:
    session = make_session("llama", seed=1, num_hidden_layers=8)
    texts = [TEXT, "Paris is a city in France; Rome is a city in Italy. The capital of Spain is Madrid, Paris."]
    config = InterventionConfig(min_gap=1, min_sat=1, max_distance=30, n_adjacent=2, max_pairs_per_text=4)
    frames = compute_intervention(session, texts, 0, config)
    pairs, offsets = frames["pairs"], frames["offsets"]
    assert len(pairs) > 0
    # exact: same computation (columns of the same frame, one derived from the others)
    assert (pairs.success == (pairs.prediction_unchanged & (pairs.new_sat == pairs.implant_layer))).all()
    # residual layers: an implant lands on layers 1..L-1 (was block indices 0..L-2 before the relabelling)
    assert (pairs.implant_layer == pairs.e + pairs.offset).all() and pairs.implant_layer.between(1, 7).all()
    assert (pairs.s_late - pairs.e >= config.min_gap).all()
    n_pairs = frames["texts"].pairs.sum()
    assert ((offsets.n + offsets.skipped) == n_pairs).all()
    assert frames["config"].n_layers.iloc[0] == 8
    assert frames["config"].min_sat_layer.iloc[0] == config.min_sat + 1  # the 0-based min_sat as a layer


def test_intervention_frames_are_in_residual_layers_and_the_pairs_are_the_0_based_selection(make_session) -> None:
    """Only the labels shift: the pairs are those select_pairs picks on the 0-based saturation arrays, and each
    layer column is that array's block index + 1 (never 0: no block output is the embeddings)."""
    session = make_session("llama", seed=1, num_hidden_layers=8)
    config = InterventionConfig(min_gap=1, min_sat=1, max_distance=30, n_adjacent=2, max_pairs_per_text=6)
    pairs = compute_intervention(session, [TEXT], 0, config)["pairs"]
    ids = session.tokenize(TEXT)[:min(config.max_tokens, session.max_tokens)]
    sat, final = top1_saturation(session.adapter, session.trace(ids).resid[1:])  # [pos] block indices
    candidates = set(select_pairs(sat, final, config))
    assert len(pairs) > 0 and set(zip(pairs.early_pos, pairs.late_pos)) <= candidates
    # exact: same computation (the frame's layers are the same integer block indices, shifted by one)
    assert (pairs.e == sat[pairs.early_pos] + 1).all() and (pairs.s_late == sat[pairs.late_pos] + 1).all()
    for column in ("e", "s_late", "implant_layer", "new_sat"):
        assert pairs[column].between(1, 8).all(), column
    assert (pairs.e >= config.min_sat + 1).all()  # the paper's 0-based bound min_sat, read as a layer


# -- other modalities ----------------------------------------------------------------------------------------------
def test_vit_last_layer_lens_is_the_models_own_logits() -> None:
    mm = tiny_vit(seed=2)
    pixels = torch.randn(3, 3, 32, 32)
    resid = mm.trace_images(pixels)  # [layer+1, image, d_model]
    assert resid.shape == (13, 3, mm.adapter.d_model)
    got = LogitLens(mm.adapter).logits(resid[-1:], [12])[0]
    torch.testing.assert_close(got, mm.model(pixel_values=pixels).logits, atol=1e-5, rtol=1e-5)


def test_whisper_last_layer_lens_is_the_models_own_logits() -> None:
    mm = tiny_whisper(seed=2)
    audio = np.sin(np.arange(16_000) / 7.0).astype(np.float32)
    features = mm.preprocess(audio, sampling_rate=16_000, return_tensors="pt").input_features
    ids = torch.tensor([1, 17, 300, 42, 9])
    resid = mm.trace_audio(features, ids)  # [layer+1, pos, d_model]
    assert resid.shape == (13, 5, mm.adapter.d_model)
    got = LogitLens(mm.adapter).logits(resid[-1:], [12])[0]
    want = mm.model(input_features=features, decoder_input_ids=ids[None]).logits[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_vit_saturation_order_and_probe_end_to_end() -> None:
    frames = compute_modality("vit", None, 90, 2, 0)
    sat = frames["saturation"]
    assert len(frames["inputs"]) == 90 and (frames["inputs"].positions == 1).all()
    # residual layers 1..12 of the 12-layer ViT (block indices 0..11 before the relabelling)
    assert sat.sat_layer.between(1, 12).all() and set(sat["rank"]) == {1, 2}
    assert list(frames["rank_order"]["rank"]) == [1, 2]
    probe = frames["probe"].query("task == -1 and metric == 'balanced_accuracy'").set_index("features")
    assert set(probe.index) == {"residual", "control"} and probe["mean"].between(0, 1).all()
    assert probe["chance"].iloc[0] == 0.5
    assert bool(frames["summary"].random_init.iloc[0]) and "random-init" in frames["summary"].model.iloc[0]


def test_whisper_runs_on_generated_audio_and_an_uploaded_wav() -> None:
    wav = _wav(np.sin(np.arange(8000) / 3.0) * 0.4, rate=8000)
    frames = compute_modality("whisper", None, 6, 3, 0, files=[("mine.wav", wav)])
    inputs = frames["inputs"]
    assert list(inputs.source) == ["generated"] * 6 + ["uploaded"] and inputs.name.iloc[-1] == "mine.wav"
    assert (inputs.positions >= 13).all()  # 12..24 made-up ids after the start token
    assert len(frames["saturation"]) == inputs.positions.sum() * 3
    tau = frames["kendall"].iloc[0]
    assert tau.n_perm == 1000 and (np.isnan(tau.p) or 0 < tau.p <= 1)
    assert "made-up token ids" in frames["summary"].notes.iloc[0]


def test_generated_images_are_seeded() -> None:
    a, b = generated_images(6, 1), generated_images(6, 1)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))  # exact: same computation (same seed)
    assert not np.array_equal(a[0][1], generated_images(6, 2)[0][1])
    assert {name.split("-")[0] for name, _ in a} == {"gradient", "shapes", "noise"}


def _wav(samples: np.ndarray, rate: int, width: int = 2, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(width)
        handle.setframerate(rate)
        scale = 2 ** (8 * width - 1) - 1
        ints = np.round(np.repeat(samples[:, None], channels, 1) * scale).astype(np.int64)
        if width == 3:
            raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints.reshape(-1))
        else:
            raw = ints.astype({2: "<i2", 4: "<i4"}[width]).tobytes()
        handle.writeframes(raw)
    return buffer.getvalue()


@pytest.mark.parametrize("width", [2, 3, 4])
def test_wav_decoding_resamples_to_16k_and_keeps_the_signal(width: int) -> None:
    t = np.arange(8000) / 8000
    data = _wav(0.5 * np.sin(2 * np.pi * 200 * t), rate=8000, width=width, channels=2)
    audio = decode_wav("x.wav", data)
    assert audio.dtype == np.float32 and len(audio) == 16_000
    expected = 0.5 * np.sin(2 * np.pi * 200 * np.arange(16_000) / 16_000)
    assert np.abs(audio[200:-200] - expected[200:-200]).max() < 0.02


def test_float_wav_is_read_through_scipy() -> None:
    from scipy.io import wavfile

    buffer = io.BytesIO()
    wavfile.write(buffer, 16_000, (0.25 * np.ones(1600)).astype(np.float32))
    audio = decode_wav("float.wav", buffer.getvalue())
    assert len(audio) == 1600 and np.allclose(audio, 0.25)


def test_bad_uploads_name_the_file() -> None:
    with pytest.raises(ValueError, match="broken.png: not a readable PNG/JPEG"):
        decode_image("broken.png", b"\x89PNG not really")
    with pytest.raises(ValueError, match="noise.wav: not a readable WAV"):
        decode_wav("noise.wav", b"RIFF....WAVEjunk")
    buffer = io.BytesIO()
    from PIL import Image

    Image.new("L", (5, 4), 128).save(buffer, format="PNG")
    assert decode_image("grey.png", buffer.getvalue()).shape == (4, 5, 3)


def test_missing_or_wrong_models_give_clear_messages(tmp_path) -> None:
    with pytest.raises(ValueError, match="offline"):
        load_modal("vit", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="offline"):  # a hub id that is not in the local cache
        load_modal("vit", "layerscope-test/no-such-vit")
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ValueError, match="'gpt2' model"):
        load_modal("whisper", str(tmp_path))
    with pytest.raises(ValueError, match="modality"):
        load_modal("audio")


def test_real_weights_load_from_a_local_folder(tmp_path) -> None:
    """A saved ViT folder (as a user's checkpoint) loads through the same path as hub weights."""
    mm = tiny_vit(seed=4)
    mm.model.save_pretrained(tmp_path)
    loaded = load_modal("vit", str(tmp_path))
    assert not loaded.random_init and loaded.identity.startswith(str(tmp_path))
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.trace_images(pixels), mm.trace_images(pixels))

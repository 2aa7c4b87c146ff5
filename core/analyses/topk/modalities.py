"""Top-k order, section 7: the same saturation, ordering and probing analyses for ViT and Whisper.

ViT (``ViTForImageClassification``): per encoder layer the class token's residual goes through the final
layernorm and the classifier head (the "logit lens" of an image classifier); one position per image.
Whisper (``WhisperForConditionalGeneration``): per decoder layer, every transcript position's residual goes
through the decoder's final layer norm and ``proj_out``, teacher-forced on the transcript's token ids, the
encoder reading log-mel features of the audio. The top-k ids per layer then feed the definitions of
:mod:`core.analyses.topk` unchanged: saturation layers, the 0.85·L filter, rank order, strict Kendall's
tau with its permutation test, and the task probe (ViT: k tasks, chance 1/k; Whisper: 4 tasks, chance 25 %,
as in the paper) against the random-feature control. As there, the arrays are 0-based block indices inside and
the frames give residual layers (``sat_layer`` 1..L: the class token / position after encoder or decoder layer l).

Inputs: seeded generated images (gradients, shapes, noise) or audio (tones, chirps, noise), plus uploads
(PNG/JPEG; WAV with a transcript each). The tiny random-init demo has no tokenizer, so its transcripts are
made-up token ids.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
import wave
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from core.analyses.topk.intervention import lens_top_ids
from core.analyses.topk.modal_models import SAMPLE_RATE, ModalModel, load_modal
from core.analyses.topk.ordering import permutation_test, rank_order_table, strict_kendall_tau
from core.analyses.topk.probes import (
    MIN_LAYER_FOR_PROBING,
    evaluate_probe,
    probe_dataset,
    random_feature_control,
    summarise_probe,
    task_labels,
)
from core.analyses.topk.saturation import keep_mask, saturation_layers, slot_match_from_top_ids
from core.cache import cached, is_cached
from core.layers import layer_of_block, layers_of_block_array
from core.progress import Progress, no_progress

WHISPER_TASKS = 4
IMAGE_KINDS = ("gradient", "shapes", "noise")
AUDIO_KINDS = ("tone", "chirp", "noise")
MAX_UPLOADS = 200
IMAGE_BATCH = 16


# -- generated inputs ----------------------------------------------------------------------------------------
def generated_images(n: int, seed: int, size: int = 64) -> list[tuple[str, np.ndarray]]:
    """``n`` seeded RGB images [H, W, 3] uint8, cycling through gradients, shapes and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)  # [H, W] in [0, 1]
    images = []
    for i in range(n):
        kind = IMAGE_KINDS[i % len(IMAGE_KINDS)]
        if kind == "gradient":
            angle = rng.uniform(0, 2 * np.pi)
            t = (np.cos(angle) * xx + np.sin(angle) * yy)
            t = (t - t.min()) / max(1e-9, np.ptp(t))
            a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            img = a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None]
        elif kind == "shapes":
            img = np.ones((size, size, 3)) * rng.uniform(0, 255, 3)
            for _ in range(rng.integers(1, 5)):
                cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.35)
                mask = ((xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2) if rng.random() < 0.5 else \
                    ((abs(xx - cx) < r) & (abs(yy - cy) < r * rng.uniform(0.3, 1.0)))
                img[mask] = rng.uniform(0, 255, 3)
        else:
            block = int(rng.choice([1, 4, 8]))
            coarse = rng.uniform(0, 255, (size // block + 1, size // block + 1, 3))
            img = np.repeat(np.repeat(coarse, block, 0), block, 1)[:size, :size]
        images.append((f"{kind}-{i}", img.clip(0, 255).astype(np.uint8)))
    return images


def generated_audio(n: int, seed: int, seconds: float) -> list[tuple[str, np.ndarray, str]]:
    """``n`` seeded mono clips at 16 kHz (float32 in [-1, 1]) with a made-up description as transcript."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    clips = []
    for i in range(n):
        kind = AUDIO_KINDS[i % len(AUDIO_KINDS)]
        if kind == "tone":
            freq = float(rng.uniform(120, 2000))
            wave, text = np.sin(2 * np.pi * freq * t), f"a steady tone at {freq:.0f} hertz"
        elif kind == "chirp":
            f0, f1 = sorted(rng.uniform(100, 4000, 2))
            wave = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds)))
            text = f"a rising sweep from {f0:.0f} to {f1:.0f} hertz"
        else:
            wave, text = rng.normal(0, 0.3, t.shape), "a burst of noise"
        clips.append((f"{kind}-{i}", (0.5 * wave).astype(np.float32), text))
    return clips


# -- uploads ---------------------------------------------------------------------------------------------------
def decode_image(name: str, data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> [H, W, 3] uint8; ValueError naming the file when it cannot be read."""
    try:
        from PIL import Image  # heavy optional: only image input needs Pillow
    except ImportError as err:  # pragma: no cover - Pillow ships with the requirements
        raise ValueError("Reading images needs Pillow, which is not installed in .venv.") from err
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as err:  # noqa: BLE001 - every decoder failure becomes one message
        raise ValueError(f"{name}: not a readable PNG/JPEG image ({type(err).__name__}).") from err


def decode_wav(name: str, data: bytes) -> np.ndarray:
    """WAV bytes -> mono float32 at 16 kHz. Integer PCM through ``wave``; float WAV through scipy."""
    try:
        rate, samples = _read_wav(data)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{name}: not a readable WAV file ({type(err).__name__}: {str(err)[:80]}).") from err
    if samples.ndim == 2:
        samples = samples.mean(1)
    if samples.size == 0:
        raise ValueError(f"{name}: the WAV file holds no samples.")
    if rate != SAMPLE_RATE:
        from scipy.signal import resample_poly  # heavy optional: only this statistic needs SciPy

        g = math.gcd(int(rate), SAMPLE_RATE)
        samples = resample_poly(samples, SAMPLE_RATE // g, int(rate) // g)
    return samples.astype(np.float32)


def _read_wav(data: bytes) -> tuple[int, np.ndarray]:
    try:
        with wave.open(io.BytesIO(data)) as handle:
            width, channels, rate = handle.getsampwidth(), handle.getnchannels(), handle.getframerate()
            raw = handle.readframes(handle.getnframes())
    except wave.Error:  # not integer PCM (e.g. IEEE float): scipy reads those

        from scipy.io import wavfile  # heavy optional: only this statistic needs SciPy

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rate, samples = wavfile.read(io.BytesIO(data))
        return int(rate), np.asarray(samples, np.float32)
    if width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        values = (b[:, 0].astype(np.int32) | b[:, 1].astype(np.int32) << 8 | b[:, 2].astype(np.int32) << 16)
        values = np.where(values >= 2 ** 23, values - 2 ** 24, values) / 2.0 ** 23
    else:
        dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
        values = np.frombuffer(raw, dtype).astype(np.float64)
        values = (values - 128) / 128 if width == 1 else values / float(2 ** (8 * width - 1))
    return rate, values.reshape(-1, channels).astype(np.float32)


# -- per-layer top-k and residuals -----------------------------------------------------------------------------
def vit_states(mm: ModalModel, images: Sequence[np.ndarray], progress: Progress) -> torch.Tensor:
    """images -> [layer, image, d_model] class-token block outputs (pre-final-norm)."""
    out = []
    for start in range(0, len(images), IMAGE_BATCH):
        progress(start / len(images), f"image {start + 1} of {len(images)}")
        pixels = mm.preprocess(images=list(images[start:start + IMAGE_BATCH]), return_tensors="pt")["pixel_values"]
        out.append(mm.trace_images(pixels)[1:])  # [layer, batch, d_model]
    return torch.cat(out, dim=1)


def transcript_ids(mm: ModalModel, text: str, seed: int) -> torch.Tensor:
    """[pos] decoder ids: the tokenizer's (with Whisper's prefix tokens) or, for the tiny demo, made-up ids."""
    if mm.tokenizer is not None:
        ids = mm.tokenizer(text).input_ids
        limit = mm.model.config.max_target_positions
        if len(ids) > limit:
            raise ValueError(f"A transcript is {len(ids)} tokens; this decoder reads at most {limit}.")
        return torch.tensor(ids)
    rng = np.random.default_rng(seed)
    body = rng.integers(3, mm.adapter.d_vocab, int(rng.integers(12, 25)))
    return torch.tensor([mm.model.config.decoder_start_token_id, *body.tolist()])


def whisper_states(mm: ModalModel, clips: Sequence[tuple[np.ndarray, torch.Tensor]],
                   progress: Progress) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(audio, ids) clips -> ([layer, pos, d_model] decoder block outputs over all clips, [pos] clip index,
    [pos] position within its clip)."""
    states, clip_of, pos_of = [], [], []
    for index, (audio, ids) in enumerate(clips):
        progress(index / len(clips), f"clip {index + 1} of {len(clips)}")
        features = mm.preprocess(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        states.append(mm.trace_audio(features, ids)[1:])  # [layer, pos, d_model]
        clip_of += [index] * len(ids)
        pos_of += list(range(len(ids)))
    return torch.cat(states, dim=1), np.asarray(clip_of), np.asarray(pos_of)


# -- the analyses ----------------------------------------------------------------------------------------------
def order_frames(sat: np.ndarray, keep: np.ndarray, n_layers: int, seed: int) -> dict[str, pd.DataFrame]:
    """[pos, k] saturation layers + [pos] filter -> "rank_order" and "kendall" frames."""
    kept = sat[keep]
    taus = strict_kendall_tau(kept, n_layers)
    actual, permuted, p = (permutation_test(kept, n_layers, seed=seed) if len(kept)
                           else (math.nan, np.array([]), math.nan))
    kendall = pd.DataFrame([{"positions": int(len(kept)), "evaluated": int(np.isfinite(taus).sum()),
                             "mean_tau": actual, "perm_mean": float(np.nanmean(permuted)) if len(permuted) and
                             np.isfinite(permuted).any() else math.nan, "p": p, "n_perm": int(len(permuted))}])
    return {"rank_order": rank_order_table(kept, n_layers), "kendall": kendall}


def probe_frame(features: np.ndarray, sat: np.ndarray, keep: np.ndarray, n_layers: int, n_tasks: int,
                seed: int) -> tuple[pd.DataFrame, list[str]]:
    """[layer, pos, d] features + [pos, k] saturation (block indices) -> probe summary (residual vs control, with
    chance). The first labelled block index is the paper's 5, or L // 3 (at least 1) for a shallow model."""
    min_layer = min(MIN_LAYER_FOR_PROBING, max(1, n_layers // 3))  # 0-based block index
    labels = task_labels(sat, n_layers, n_tasks, min_layer=min_layer, keep=keep)
    X, y, _ = probe_dataset(features, labels, n_tasks)
    notes = [f"probe: {len(y)} balanced examples, {n_tasks} tasks, layers from {layer_of_block(min_layer)} on"]
    frames = []
    try:
        for name, data in (("residual", X), ("control", random_feature_control(X, y, seed))):
            summary = summarise_probe(evaluate_probe(data, y, n_tasks, folds=5, seed=seed))
            frames.append(summary.assign(features=name))
    except ValueError as err:
        notes.append(f"probe skipped: {err}")
    columns = ["features", "task", "metric", "mean", "sem", "folds", "chance"]
    if not frames:
        return pd.DataFrame(columns=columns), notes
    return pd.concat(frames, ignore_index=True).assign(chance=1.0 / n_tasks)[columns], notes


def saturation_frame(top_ids: np.ndarray, sat: np.ndarray, keep: np.ndarray, input_of: np.ndarray,
                     pos_of: np.ndarray, mm: ModalModel) -> pd.DataFrame:
    """One row per (position, rank): input, position, rank, id, label, sat_layer (residual layer 1..L), kept.
    ``sat`` [pos, k] holds block indices."""
    n_pos, k = sat.shape
    final = top_ids[-1]  # [pos, k]
    return pd.DataFrame({
        "input": np.repeat(input_of, k), "position": np.repeat(pos_of, k), "rank": np.tile(np.arange(1, k + 1), n_pos),
        "id": final.reshape(-1), "label": [mm.class_name(i) for i in final.reshape(-1)],
        "sat_layer": layers_of_block_array(sat.reshape(-1)), "kept": np.repeat(keep, k)})


def paper_tasks(kind: str, k: int) -> int:
    """The paper's number of probing tasks: k for ViT (chance 1/k), 4 for Whisper (chance 25 %), at most k."""
    return min(k, WHISPER_TASKS) if kind == "whisper" else k


def analyse(mm: ModalModel, states: torch.Tensor, input_of: np.ndarray, pos_of: np.ndarray, k: int,
            seed: int, n_tasks: int | None = None) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """[layer, pos, d_model] block outputs -> saturation, rank order, Kendall and probe frames."""
    n_layers = mm.n_layers
    if not 1 <= k <= mm.adapter.d_vocab:
        raise ValueError(f"k must lie in 1..{mm.adapter.d_vocab} (this model's number of outputs).")
    top_ids = lens_top_ids(mm.adapter, states, k)  # [layer, pos, k]
    sat = saturation_layers(slot_match_from_top_ids(top_ids))  # [pos, k]
    keep = keep_mask(sat, n_layers)
    frames = {"saturation": saturation_frame(top_ids, sat, keep, input_of, pos_of, mm),
              **order_frames(sat, keep, n_layers, seed)}
    n_tasks = paper_tasks(mm.kind, k) if n_tasks is None else int(n_tasks)
    if not 2 <= n_tasks <= k:
        raise ValueError(f"The probe needs 2..k = 2..{k} tasks; got {n_tasks}.")
    frames["probe"], notes = probe_frame(states.numpy(), sat, keep, n_layers, n_tasks, seed)
    notes.insert(0, f"{int(keep.sum())} of {len(keep)} positions kept by the 0.85·L top-1 filter")
    return frames, notes


def compute_modality(kind: str, model: str | None, n: int, k: int, seed: int, progress: Progress = no_progress,
                     files: Sequence[tuple[str, bytes]] = (), transcripts: Sequence[str] = (),
                     n_tasks: int | None = None) -> dict[str, pd.DataFrame]:
    """-> frames "inputs", "saturation", "rank_order", "kendall", "probe", "summary" (see the module doc)."""
    if n < 0 or n + len(files) < 1:
        raise ValueError("Analyse at least one input: generate some (n >= 1) or upload files.")
    if len(files) > MAX_UPLOADS:
        raise ValueError(f"At most {MAX_UPLOADS} uploaded files at once.")
    if k < 2 or (n_tasks is not None and not 2 <= n_tasks <= k):
        raise ValueError(f"Use k >= 2 and 2..k probing tasks (got k = {k}, tasks = {n_tasks}).")
    mm = load_modal(kind, (model or "").strip() or None)
    progress(0.02, f"{mm.label} loaded")
    if kind == "vit":
        inputs = generated_images(n, seed) + [(name, decode_image(name, data)) for name, data in files]
        states = vit_states(mm, [img for _, img in inputs], lambda f, m: progress(0.05 + 0.7 * f, m))
        input_of, pos_of = np.arange(len(inputs)), np.zeros(len(inputs), np.int64)
        sources = ["generated"] * n + ["uploaded"] * len(files)
    else:
        clips, sources, names, notes_in = _whisper_inputs(mm, n, seed, files, transcripts)
        states, input_of, pos_of = whisper_states(mm, clips, lambda f, m: progress(0.05 + 0.7 * f, m))
        inputs = list(zip(names, [c[0] for c in clips]))
    progress(0.8, "saturation, order and probes")
    frames, notes = analyse(mm, states, input_of, pos_of, k, seed, n_tasks)
    if kind == "whisper":
        notes = notes_in + notes
    sat = frames["saturation"]
    top1 = sat[(sat["rank"] == 1)].groupby("input")["label"].last()
    frames["inputs"] = pd.DataFrame({"input": range(len(inputs)), "name": [name for name, _ in inputs],
                                     "source": sources, "positions": np.bincount(input_of, minlength=len(inputs)),
                                     "prediction": [top1.get(i, "") for i in range(len(inputs))]})
    frames["summary"] = pd.DataFrame([{"model": mm.label, "kind": kind, "random_init": mm.random_init,
                                       "n_layers": mm.n_layers, "k": k, "notes": "; ".join(notes)}])
    progress(1.0, "done")
    return frames


def _whisper_inputs(mm: ModalModel, n: int, seed: int, files: Sequence[tuple[str, bytes]],
                    transcripts: Sequence[str]) -> tuple[list, list[str], list[str], list[str]]:
    seconds = 1.5 if mm.random_init else 3.0
    clips, sources, names, notes = [], [], [], []
    for i, (name, audio, text) in enumerate(generated_audio(n, seed, seconds)):
        clips.append((audio, transcript_ids(mm, text, seed * 100_003 + i)))
        sources.append("generated"), names.append(name)
    if files and mm.tokenizer is not None and len(transcripts) < len(files):
        raise ValueError(f"Give one transcript per WAV file ({len(files)} files, {len(transcripts)} transcripts).")
    for i, (name, data) in enumerate(files):
        text = transcripts[i] if i < len(transcripts) else ""
        if mm.tokenizer is not None and not text.strip():
            raise ValueError(f"{name}: its transcript is empty; the decoder is teacher-forced on it.")
        clips.append((decode_wav(name, data), transcript_ids(mm, text, seed * 100_003 + n + i)))
        sources.append("uploaded"), names.append(name)
    if mm.tokenizer is None:
        notes.append("the tiny demo has no tokenizer: transcripts are made-up token ids")
    return clips, sources, names, notes


def run_modality_cached(kind: str, model: str | None, n: int, k: int, seed: int, progress: Progress,
                        files: tuple[tuple[str, bytes], ...], transcripts: tuple[str, ...],
                        version: str, n_tasks: int | None = None) -> dict[str, pd.DataFrame]:
    """:func:`compute_modality` in the disk cache (model identity, inputs' digest, n, k, seed, version)."""

    return cached("topk-modality",
                  lambda: compute_modality(kind, model, n, k, seed, progress, files, transcripts, n_tasks),
                  **modality_parts(kind, model, n, k, seed, files, transcripts, version, n_tasks))


def modality_parts(kind: str, model: str | None, n: int, k: int, seed: int, files: tuple[tuple[str, bytes], ...],
                   transcripts: tuple[str, ...], version: str, n_tasks: int | None = None) -> dict:
    """The disk-cache key parts of :func:`run_modality_cached` (loads the model for its identity)."""
    if kind not in ("vit", "whisper"):
        raise ValueError(f"Unknown modality {kind!r}; choose 'vit' or 'whisper'.")
    mm = load_modal(kind, (model or "").strip() or None)
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    for text in transcripts:
        digest.update(text.encode() + b"\0")
    return {"model": mm.identity, "kind": kind, "n": n, "k": k, "seed": seed, "inputs": digest.hexdigest(),
            "n_tasks": n_tasks, "version": version}


def modality_is_cached(kind: str, model: str | None, n: int, k: int, seed: int,
                       files: tuple[tuple[str, bytes], ...], transcripts: tuple[str, ...], version: str,
                       n_tasks: int | None = None) -> bool:
    """Whether :func:`run_modality_cached` would read its result from the disk cache (False when the model does
    not load: the job then says why)."""
    try:
        parts = modality_parts(kind, model, n, k, seed, files, transcripts, version, n_tasks)
    except (ValueError, OSError):
        return False
    return is_cached("topk-modality", **parts)

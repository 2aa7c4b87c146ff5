"""Top-k order page, the Intervention and Other-modalities tabs: controls, background jobs, figures, tables.

Widget keys start with ``w_topk_`` and button keys with ``run_topk_<section>`` so they never clash with the
other tabs. Every number in the captions is read from the computed frames; layers are residual layers (l = after
block l), and the paper's constants (0-based block indices) are converted by :mod:`core.layers`. The charts are
built in :mod:`ui.charts.topk`.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import pandas as pd
import streamlit as st

from core.analyses.topk.cached_runs import (
    VERSION,
    intervention_is_cached,
    modality_cached,
    run_intervention,
    run_modality,
)
from core.analyses.topk.intervention import InterventionConfig
from core.analyses.topk.modalities import MAX_UPLOADS, decode_image, decode_wav
from core.cache import stable_key
from core.layers import block_of_layer, layer_of_block, paper_layer_note
from core.validate import model_source, path_kind, user_path
from ui import cached, hosting
from ui import job_panel as jobs
from ui.charts import topk as charts
from ui.downloads import show_chart, tables_expander
from ui.format import p_text
from ui.state import bound
from ui.views.topk import clamp, method_note

KIND_LABELS = {"vit": "ViT image classifier", "whisper": "Whisper decoder"}
UPLOAD_TYPES = {"vit": ["png", "jpg", "jpeg"], "whisper": ["wav"]}
# every setting of both tabs (not the uploads and their transcripts: files cannot travel in a link)
URL_KEYS = ["topk_int_n", "topk_int_seed", "topk_int_pairs", "topk_int_gap", "topk_int_minsat", "topk_int_dist",
            "topk_int_adj", "topk_mod_kind", "topk_mod_model", "topk_mod_n", "topk_mod_k", "topk_mod_tasks",
            "topk_mod_seed"]


# -- shared job plumbing ---------------------------------------------------------------------------------------
def _job(key: str, section: str, label: str, work: Callable[[Any], dict[str, pd.DataFrame]],
         disabled: bool = False, start_now: bool = False) -> dict[str, pd.DataFrame] | None:
    """Run button / live progress / error with retry for one job; its frames once computed (None before).
    ``start_now``: the result is on disk (a link to a stored run shows it without a Run click)."""
    return jobs.job_panel(key, label, work, button_key=f"run_topk_{section}", disabled=disabled,
                          start_now=start_now and not disabled,
                          caption="Results are cached on disk: a second run with the same settings is instant.")


def _int(col: Any, name: str, default: int, label: str, low: int, high: int, help: str | None = None,
         samples: bool = False) -> int:
    """A number input bound to the URL (clamped into low..high first: a link made for another model)."""
    clamp(name, default, low, high)
    return int(bound(col.number_input, name, default, label, parse=int, min_value=low, max_value=high, help=help,
                     samples=samples))


# -- the intervention tab ----------------------------------------------------------------------------------------
def _intervention_controls(n_layers: int) -> tuple[int, int, InterventionConfig]:
    base, paper = InterventionConfig.for_depth(n_layers), InterventionConfig()  # paper: GPT2-XL's constants
    c = st.columns(3)
    n = _int(c[0], "topk_int_n", 20, "Texts", 1, 2000,
             "Bundled Wikipedia evaluation paragraphs; up to 'pairs per text' pairs each.")
    seed = _int(c[1], "topk_int_seed", 0, "Seed", 0, 2**31 - 1)
    per_text = _int(c[2], "topk_int_pairs", base.max_pairs_per_text, "Pairs per text (max)", 1, 200)
    with st.expander(f"Pair selection (the paper's GPT2-XL constants, layer distances scaled by L/48 = {n_layers}/48)"):
        d = st.columns(4)
        gap = _int(d[0], "topk_int_gap", base.min_gap, "Min saturation gap", 1, n_layers,
                   f"Paper: {paper.min_gap} layers of 48 (a difference of layers: the same in the paper's 0-based "
                   "numbering and here).")
        min_sat_layer = _int(
            d[1], "topk_int_minsat", layer_of_block(base.min_sat), "Min saturation layer", 1, n_layers,
            f"Both tokens' top-1 must saturate at or after this layer (l = after block l). Paper: {paper.min_sat} of "
            f"48 on 0-based block indices ({paper_layer_note(paper.min_sat)}), scaled by L/48 to block index "
            f"{base.min_sat} = layer {layer_of_block(base.min_sat)}.")
        dist = _int(d[2], "topk_int_dist", base.max_distance, "Max token distance", 1, 2048)
        adj = _int(d[3], "topk_int_adj", base.n_adjacent, "Offsets ±", 1, n_layers)
    config = base.replace(min_gap=gap, min_sat=block_of_layer(min_sat_layer), max_distance=dist, n_adjacent=adj,
                          max_pairs_per_text=per_text)  # the config keeps the paper's 0-based min_sat
    return n, seed, config


def intervention_tab(spec_key: str) -> dict[str, pd.DataFrame] | None:
    """Implant the early token's state around its saturation layer into the late token; share per offset.
    Returns the frames once computed."""
    session = cached.get_session(spec_key)
    st.caption(
        "Pairs of positions in one text with the same final top-1 token whose top-1 saturation layers differ by at "
        "least the gap. With e the early token's saturation layer (layer l = after block l), its residual at layer "
        "e+o (after block e+o, pre-final-norm) replaces the late token's residual entering block e+o+1 (a pre-hook "
        "on that block, late position only). Success at offset o: the late token's new top-1 saturation layer is "
        "e+o and its prediction is unchanged. The paper expects ≈0 before the saturation layer (o < 0) and a high "
        "share from it on (o ≥ 0).")
    n, seed, config = _intervention_controls(session.adapter.n_layers)
    key = stable_key("topk-more-job", model=session.identity(), section="intervention", n=n, seed=seed,
                     config=repr(config), version=VERSION)
    frames = _job(key, "intervention", "Top-k: intervention",
                  lambda progress: run_intervention(session, n, seed, progress, config=config),
                  start_now=intervention_is_cached(session, n, seed, config))
    if frames is not None:
        show_intervention(frames)
    method_note("intervention")
    return frames


def show_intervention(frames: dict[str, pd.DataFrame]) -> None:
    offsets, pairs, texts = frames["offsets"], frames["pairs"], frames["texts"]
    n_pairs = int(pairs.groupby(["text", "early_pos", "late_pos"]).ngroups) if len(pairs) else 0
    if n_pairs == 0:
        st.warning(f"No pair met the selection in {len(texts)} texts: use more texts or a smaller gap.")
        tables_expander(frames, "topk_intervention")
        return
    before, after = offsets[offsets.offset < 0], offsets[offsets.offset >= 0]
    st.caption(
        f"{n_pairs} pairs from {int((texts.pairs > 0).sum())} of {len(texts)} texts "
        f"({int(texts.candidate_pairs.sum())} candidate pairs). Success share: max {_pct(before.share.max())} before "
        f"the saturation layer (o < 0), max {_pct(after.share.max())} from it on (o ≥ 0); prediction unchanged in "
        f"{pairs.prediction_unchanged.mean():.1%} of implants; {int(offsets.skipped.sum())} offsets skipped (implant "
        "layer outside 1 to L−1: block e+o+1 must exist). Bars: ± one binomial SEM.")
    show_chart(charts.intervention_chart(offsets), offsets, "topk_intervention")
    tables_expander(frames, "topk_intervention")


# -- the other-modalities tab ------------------------------------------------------------------------------------
def _uploads(kind: str) -> tuple[list[tuple[str, bytes]], list[str], list[str]]:
    """-> (files, transcripts, errors): files that decode, their transcripts, and one message per bad file."""
    what = "PNG/JPEG images" if kind == "vit" else "WAV files"
    if hosting.hosted():
        return [], [], []
    uploaded = st.file_uploader(f"Your {what} (optional)", type=UPLOAD_TYPES[kind], accept_multiple_files=True,
                                key=f"w_topk_mod_files_{kind}") or []
    transcripts: list[str] = []
    if kind == "whisper":
        text = st.text_area("Transcripts, one line per WAV file in upload order (needed for real models)",
                            key="w_topk_mod_transcripts", height=80)
        transcripts = [line.strip() for line in text.splitlines() if line.strip()]
    files, errors = [], []
    for item in uploaded:
        data = item.getvalue()
        try:
            (decode_image if kind == "vit" else decode_wav)(item.name, data)
        except ValueError as err:
            errors.append(str(err))
            continue
        files.append((item.name, data))
    return files, transcripts, errors


def _folder_stamp(model: str) -> float:
    """Latest modification time in a local model folder (0 otherwise), so new weights there start a new job."""
    folder = user_path(model) if model else None
    if folder is None or path_kind(folder) != "dir":  # no folder, or a name no file can have (too long, a NUL)
        return 0.0
    try:
        return max((f.stat().st_mtime for f in folder.iterdir() if f.is_file()), default=0.0)
    except OSError:  # unreadable: the model field's check says why
        return 0.0


def _input_problems(kind: str, model: str, files: list, transcripts: list[str]) -> list[str]:
    """What keeps the job from running, said before it starts: a model field that names no model here,
    too many files, WAV files without transcripts for real weights."""
    problems = []
    if model:
        try:
            model_source(model)
        except ValueError as err:
            problems.append(str(err))
    if len(files) > MAX_UPLOADS:
        problems.append(f"At most {MAX_UPLOADS} uploaded files at once ({len(files)} given).")
    if kind == "whisper" and model and len(transcripts) < len(files):
        problems.append(f"Give one transcript per WAV file ({len(files)} files, {len(transcripts)} transcripts).")
    return problems


def _pct(value: float) -> str:
    return f"{value:.1%}" if pd.notna(value) else "n/a (no offset evaluated)"


def modalities_tab() -> tuple[str, dict[str, pd.DataFrame] | None]:
    """Saturation, rank order, strict τ and probing for a ViT or a Whisper decoder (tiny demo or your weights).
    Returns (the model kind, its frames once computed)."""
    st.caption(
        "The same definitions for other modalities. ViT: the class token after every encoder layer through the final "
        "layernorm and the classifier head (one position per image). Whisper: every transcript position after every "
        "decoder layer through the decoder's final layer norm and proj_out, teacher-forced on the transcript, the "
        "encoder reading the audio's log-mel features. Inputs: seeded generated images (gradients, shapes, noise) "
        "or audio (tones, chirps, noise), plus your uploads.")
    c = st.columns([2, 3, 1, 1, 1, 1])
    kind = bound(c[0].radio, "topk_mod_kind", "vit", "Model", options=list(KIND_LABELS), format_func=KIND_LABELS.get)
    if hosting.hosted():
        model = ""
        c[1].caption(f"Weights: the tiny random-init demo. Other weights: {hosting.OFF_HOSTED}")
    else:
        model = str(bound(c[1].text_input, "topk_mod_model", "", "Weights: hub id or local folder (blank = tiny "
                          "random-init demo)",
                          placeholder="e.g. google/vit-base-patch16-224 or ./whisper-tiny")).strip()
    n = _int(c[2], "topk_mod_n", 100, "Generated inputs", 0, 5000, samples=True)
    k = _int(c[3], "topk_mod_k", 5, "k", 2, 20)
    tasks = _int(c[4], "topk_mod_tasks", 3, "Probing tasks", 2, 20,
                 "The paper: 5 for ViT-L (chance 20 %), 4 for Whisper (25 %). The tiny demo rarely orders more than 3 "
                 "ranks, so fewer tasks give a probe at all.")
    seed = _int(c[5], "topk_mod_seed", 0, "Seed", 0, 2**31 - 1)
    tasks = min(tasks, k)
    if not model:
        st.info("Blank weights: a tiny random-init model (random-init demo: no weights offline). Its numbers show "
                "the method at work, not what a trained model does. Give a local folder (or a model already in the "
                "Hugging Face cache) for real weights; nothing can be downloaded here.")
    files, transcripts, errors = _uploads(kind)
    errors += _input_problems(kind, model, files, transcripts)
    for message in errors:
        st.error(message)
    if n + len(files) < 1:
        st.warning("Nothing to analyse: generate at least one input or upload files.")
    digest = hashlib.sha256(b"".join(hashlib.sha256(d).digest() for _, d in files) + "\n".join(transcripts).encode())
    key = stable_key("topk-more-job", section=kind, model=model, stamp=_folder_stamp(model), n=n, k=k, tasks=tasks,
                     seed=seed, inputs=digest.hexdigest(), version=VERSION)
    disabled = bool(errors) or n + len(files) < 1
    frames = _job(key, kind, f"Top-k: {KIND_LABELS[kind]}",
                  lambda progress: run_modality(kind, model or None, n, k, seed, progress, files=files,
                                                transcripts=transcripts, n_tasks=tasks),
                  disabled=disabled,
                  start_now=not disabled and modality_cached(kind, model or None, n, k, seed, files, transcripts,
                                                             tasks))
    if frames is not None:
        show_modality(frames, kind)
    method_note("modalities")
    return kind, frames


def _num(value: float) -> str:
    return f"{value:.3f}" if pd.notna(value) else "n/a"


def show_modality(frames: dict[str, pd.DataFrame], kind: str) -> None:
    s, tau = frames["summary"].iloc[0], frames["kendall"].iloc[0]
    if s.random_init:
        st.warning(f"{s.model}: untrained weights, for demonstration only.")
    st.caption(f"{s.model}, {int(s.n_layers)} layers, k = {int(s.k)}, {len(frames['inputs'])} inputs. {s.notes}. "
               f"Strict Kendall's τ over {int(tau.evaluated)} kept positions with k\\* ≥ 3: **mean τ = "
               f"{_num(tau.mean_tau)}**, permuted mean {_num(tau.perm_mean)}, **p = {p_text(tau.p)}** "
               f"({int(tau.n_perm)} permutations).")
    left, right = st.columns(2)
    with left:
        st.markdown("**Rank vs saturation order** (kept positions)")
        show_chart(charts.modal_rank_chart(frames["rank_order"]), frames["rank_order"], f"topk_{kind}_rank_order",
                   stretch=True)
    with right:
        st.markdown("**Task probe: residual vs random-feature control** (dashed: chance)")
        if len(frames["probe"]):
            show_chart(charts.modal_probe_chart(frames["probe"]), frames["probe"], f"topk_{kind}_probe", stretch=True)
        else:
            st.info("Too few labelled examples for the probe: use more inputs (or a smaller k).")
    tables_expander(frames, f"topk_{kind}")

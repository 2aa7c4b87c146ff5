"""The panel that trains (or shows) the tuned and affine lenses of the current model."""

from __future__ import annotations

from typing import Callable

import pandas as pd
import streamlit as st

from core.cache import stable_key
from core.data import CORPORA
from core.lenses.learned import import_lenses, lens_dir, save_lenses
from core.lenses.training import TrainingConfig, train_lenses, training_split
from core.progress import Progress
from ui import cached, hosting
from ui import job_panel as jobs
from ui.charts.lens_training import kl_chart
from ui.downloads import show_chart


def _work(spec_key: str, cfg: TrainingConfig) -> Callable[[Progress], dict]:
    """The background job that trains both learned lenses, saves them and returns the training report."""

    def run(progress: Progress) -> dict:
        session = cached.get_session(spec_key)
        train, held = training_split(cfg)
        trained = train_lenses(session, train, held, cfg, progress)
        save_lenses(session, trained)
        cached.trained_lenses.clear()  # the next read loads the new lenses from cache/lenses
        return trained.report
    return run


def kl_frame(report: dict) -> pd.DataFrame:
    """A training report -> tidy rows (layer, lens, kl): the held-out KL of each learned lens per layer."""
    rows = [{"layer": layer, "lens": lens, "kl": kl}
            for lens, values in report.get("heldout_kl", {}).items() for layer, kl in enumerate(values)]
    return pd.DataFrame(rows)


def panel(spec_key: str) -> None:
    """Status of the learned lenses, the KL curves, and a button to (re)train them."""
    trained = cached.trained_lenses(spec_key)
    key = stable_key("train-lenses", model=cached.get_session(spec_key).identity())
    job = cached.job_registry().get(key)
    if job is not None and not job.done:
        jobs.watch(key)
        jobs.cancel_button(job, "cancel_train_lenses")
        return
    if job is not None and job.error:
        st.error(f"Lens training failed: {job.error}")
    if trained is not None and trained.report:
        report = trained.report
        st.success(f"Tuned and affine lenses trained in {report.get('seconds', '?')} s "
                   f"({report.get('kl_steps', '?')} KL steps) on {report.get('config', {}).get('corpus', '?')}; "
                   f"stored in {lens_dir(cached.get_session(spec_key))}.")
        frame = kl_frame(report)
        show_chart(kl_chart(frame), frame, "heldout_kl")
    else:
        st.info("No tuned lens for this model yet. Training takes about 4 minutes on 2 CPU cores: "
                f"residuals of ~12K tokens of the {CORPORA['wikipedia']}, a least-squares fit per layer, "
                "then two minutes of KL refinement; then the held-out KL is measured.")
    with st.popover("Use a pretrained lens folder"):
        if hosting.hosted():
            st.caption(hosting.OFF_HOSTED)
            folder = ""
        else:
            folder = st.text_input("Folder with params.safetensors + config.json", key="w_lens_folder",
                                   help="Pickled params.pt files are refused: they can run code when loaded.")
        if not hosting.hosted() and st.button("Load", key="load_lens_folder") and folder.strip():
            try:
                saved = import_lenses(cached.get_session(spec_key), folder.strip())
                cached.trained_lenses.clear()
                st.success(f"Stored in {saved}.")
            except (ValueError, OSError) as err:
                st.error(str(err))
    if trained is not None and hosting.hosted():
        return  # the stored lenses are every visitor's: a hosted server does not let one visitor replace them
    label = "Retrain lenses" if trained is not None else "Train tuned + affine lenses"
    if st.button(label, key="train_lenses"):
        cached.job_registry().forget(key)
        cached.job_registry().start(key, "Training lenses", _work(spec_key, TrainingConfig()))
        st.rerun()

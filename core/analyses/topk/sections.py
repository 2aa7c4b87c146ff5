"""Top-k order page, text sections: saturation + ordering, the random-init baseline, and the cached run of a
section by name."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from core.analyses.sections import Section, SectionRegistry
from core.analyses.topk.collect import TextRecord, pooled_saturation, records_for, text_counts
from core.analyses.topk.early_exit import better_lm_section, early_exit_section
from core.analyses.topk.ordering import permutation_test, rank_order_table, strict_kendall_tau
from core.analyses.topk.params import BASELINE_VERSION, SECTION_VERSION, TABLES, TopkParams
from core.analyses.topk.probing import probing_frames, probing_section
from core.analyses.topk.saturation import keep_mask
from core.layers import layer_of_block, layers_of_block_array
from core.model.loading import ModelSpec
from core.model.session import ModelSession
from core.progress import Progress, no_progress

log = logging.getLogger(__name__)


# -- saturation and ordering --------------------------------------------------------------------------------
def ordering_frames(records: list[TextRecord], params: TopkParams, model: str) -> dict[str, pd.DataFrame]:
    """Saturation, filter, rank order, strict tau and its permutation test over the records' positions.

    The maths runs on 0-based block indices (the paper's); the frames carry residual layers: saturation_layer
    (1 = held after every block, L = settled only at the output) and max_top1_layer, the filter's bound
    int(ratio·L) (a 0-based block index in the paper) as a residual layer, int(ratio·L) + 1."""
    n_layers = records[0].n_layers
    sat, index = pooled_saturation(records)  # [pos, k] block indices
    keep = keep_mask(sat, n_layers, params.ratio)
    kept = sat[keep]
    taus = strict_kendall_tau(kept, n_layers) if len(kept) else np.array([])
    actual, permuted, p = (permutation_test(kept, n_layers, params.n_perm, params.seed) if len(kept)
                           else (math.nan, np.array([]), math.nan))
    long = index.loc[np.repeat(np.arange(len(index)), params.k)].reset_index(drop=True)
    long = long.assign(model=model, rank=np.tile(np.arange(1, params.k + 1), len(index)),
                       saturation_layer=layers_of_block_array(sat.ravel()), kept=np.repeat(keep, params.k))
    summary = {"model": model, "layers": n_layers, **text_counts(records), "positions": int(len(sat)),
               "kept": int(keep.sum()), "fraction_kept": float(keep.mean()) if len(keep) else math.nan,
               "max_top1_layer": layer_of_block(int(params.ratio * n_layers)), "mean_tau": actual,
               "tau_positions": int(np.isfinite(taus).sum()),
               "mean_tau_nan_as_zero": float(np.nan_to_num(taus).mean()) if len(taus) else math.nan,
               "perm_mean_tau": float(np.mean(permuted)) if len(permuted) else math.nan,
               "perm_p": p, "n_perm": params.n_perm}
    return {
        "summary": pd.DataFrame([summary]),
        "rank_order": rank_order_table(kept, n_layers).assign(model=model) if len(kept)
        else pd.DataFrame(columns=["rank", "mean_order", "sem", "n", "p_vs_next", "stars", "model"]),
        "saturation": long,
        "tau": index[keep].reset_index(drop=True).assign(model=model, tau=taus),
        "permutation": pd.DataFrame({"model": model, "permutation": np.arange(len(permuted)), "mean_tau": permuted}),
        "histogram": saturation_histogram(long, n_layers, model),
    }


def saturation_histogram(long: pd.DataFrame, n_layers: int, model: str) -> pd.DataFrame:
    """Share of positions (all, before the filter) whose rank-r token saturates at each (residual) layer;
    relative_depth = layer / L."""
    counts = long.groupby(["rank", "saturation_layer"]).size().rename("count").reset_index()
    totals = long.groupby("rank").size()
    counts["share"] = counts["count"] / counts["rank"].map(totals)
    counts["relative_depth"] = counts.saturation_layer / n_layers  # residual layer l = block index + 1
    return counts.assign(model=model)


def saturation_section(session: ModelSession, params: TopkParams,
                       progress: Progress = no_progress) -> dict[str, pd.DataFrame]:
    """Section 1: saturation layers, the 0.85·L filter, rank-order bars, strict tau + permutation test."""
    records = records_for(session, params, progress)
    return ordering_frames(records, params, session.spec.label())


# -- the random-init twin -----------------------------------------------------------------------------------
def twin_session(session: ModelSession) -> ModelSession:
    """The untrained twin of ``session``'s model (ModelSpec ``random:<spec>``), loaded offline."""

    if session.spec.random_init:
        raise ValueError("This model is already a random-init twin: pick the trained model to compare.")
    return ModelSession.load(ModelSpec.parse("random:" + session.spec.key()))


def baseline_section(session: ModelSession, params: TopkParams, progress: Progress = no_progress,
                     twin: ModelSession | None = None) -> dict[str, pd.DataFrame]:
    """Section 2: the same ordering analyses and pooled probe on the model and on its random-init twin."""

    twin = twin or twin_session(session)
    out: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLES["baseline"]}
    for i, (which, sess) in enumerate((("trained", session), ("random-init twin", twin))):
        sub = _sub_progress(progress, i / 2, 1 / 2)
        records = records_for(sess, params, lambda f, m: sub(0.6 * f, m), label=f"{which}: ")
        frames = ordering_frames(records, params, which)
        for name in ("summary", "rank_order", "permutation", "tau"):
            out[name].append(frames[name])
        try:
            probe = probing_frames(sess, records, params, lambda f, m: sub(0.6 + 0.4 * f, m), per_layer=False)
        except ValueError as err:  # e.g. too few labelled examples for the twin: say so, keep the ordering
            log.warning("baseline probe skipped for the %s model: %s", which, err)
            continue
        out["probe"].append(probe["summary"].assign(model=which))
    empty_probe = pd.DataFrame(columns=["task", "metric", "mean", "sem", "folds", "source", "model"])
    return {name: pd.concat(frames, ignore_index=True) if frames else empty_probe for name, frames in out.items()}


def _sub_progress(progress: Progress, start: float, span: float) -> Progress:
    return lambda fraction, message: progress(start + span * fraction, message)


# -- the registry + cache ----------------------------------------------------------------------------------
# Each section: (session, params, progress) -> its named frames (core.analyses.topk.params.TABLES).
_COMPUTE = {"saturation": saturation_section, "baseline": baseline_section, "probing": probing_section,
            "early-exit": early_exit_section, "better-lm": better_lm_section}
REGISTRY = SectionRegistry("top-k", "topk-section", [
    Section(name, tables, _COMPUTE[name], BASELINE_VERSION if name == "baseline" else SECTION_VERSION)
    for name, tables in TABLES.items()])  # the baseline alone gained a table: the others keep their stored runs


def compute_section(session: ModelSession, section: str, params: TopkParams,
                    progress: Progress = no_progress) -> dict[str, pd.DataFrame]:
    """One section -> its named frames (see :data:`TABLES`)."""
    return REGISTRY.compute(section, session, params, progress)


def run_section(session: ModelSession, section: str, params: TopkParams,
                progress: Progress = no_progress) -> dict[str, pd.DataFrame]:
    """:func:`compute_section`, stored in the disk cache (model identity, section, every parameter, version)."""
    REGISTRY.get(section)  # an unknown section fails before the parameters are checked
    params.check()
    return REGISTRY.run(section, _cache_key(session, params), session, params, progress)


def _cache_key(session: ModelSession, params: TopkParams) -> dict:
    return {"model": session.identity(), "params": params.__dict__}


def section_is_cached(session: ModelSession, section: str, params: TopkParams) -> bool:
    """Whether :func:`run_section` would read this section from the disk cache (a link reopens it, no Run click)."""
    return REGISTRY.is_cached(section, _cache_key(session, params))

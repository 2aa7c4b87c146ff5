"""Attention -> MLP, the whole pipeline: neurons -> max-activating prompts -> head attributions -> ablation.

Used by the page (as background jobs, one step at a time) and the CLI (end to end). Every step is
disk-cached by model identity, inputs, parameters and :data:`core.analyses.attention_mlp.neurons.VERSION`.
Blocks are 1-based everywhere here (core/layers.py: block l writes layer l), in arguments and in every frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pandas as pd

from core.analyses.attention_mlp.heads import (
    RULES,
    context_share,
    head_summary,
    ks_tests,
    neuron_ablation,
    neuron_attributions,
)
from core.analyses.attention_mlp.neurons import VERSION, next_token_neurons, random_neurons
from core.analyses.attention_mlp.params import (  # torch-free settings (the CLI reads them)
    DEFAULT_N_TEXTS,
    DEFAULT_PER_LAYER,
    DEFAULT_SEED,
    PRESETS,
    HeadParams,
    preset_block_list,
)
from core.analyses.attention_mlp.prompts import (
    TRIM_VERSION,
    DEFAULT_REJECT,
    ScanParams,
    corpus_hash,
    corpus_windows,
    scan_top_windows,
    select_prompts,
    trimmed_rows,
)
from core.cache import cached, is_cached
from core.model.session import ModelSession
from core.progress import Progress, no_progress

MIN_PROMPTS = 4  # fewer prompts make the 25-75 % band meaningless


def corpus_sample(texts: list[str], n_texts: int) -> list[str]:
    """``n_texts`` texts spread evenly over the corpus (deterministic, so the cache key is stable): the bundled
    paragraphs come article by article, so the first n would cover only a few articles."""
    if n_texts < 1:
        raise ValueError("Use at least one text.")
    if n_texts >= len(texts):
        return list(texts)
    step = len(texts) / n_texts
    return [texts[int(i * step)] for i in range(n_texts)]


def choose_neurons(session: ModelSession, blocks: list[int], per_layer: int = DEFAULT_PER_LAYER,
                   control: bool = False, seed: int = 0, reject: tuple[str, ...] = ()) -> pd.DataFrame:
    """Next-token neurons of the 1-based ``blocks`` (``reject`` adds to the default reject list) or, with
    ``control``, the random-neuron control; cached."""
    rejected = DEFAULT_REJECT | frozenset(r.strip() for r in reject if r.strip())

    def compute() -> pd.DataFrame:
        if control:
            return random_neurons(session, blocks, per_layer, seed)
        return next_token_neurons(session, blocks, per_layer, rejected)

    return cached("attention-mlp-neurons", compute, model=session.identity(), blocks=sorted(blocks),
                  per_layer=per_layer, control=control, seed=seed, reject=sorted(rejected), version=VERSION)


def _neuron_key(neurons: pd.DataFrame) -> list[tuple[int, int, int]]:
    return sorted((int(r.block), int(r.neuron), int(r.token_id)) for r in neurons.itertuples())


def scan_corpus(session: ModelSession, neurons: pd.DataFrame, texts: list[str], params: ScanParams,
                progress: Progress = no_progress) -> pd.DataFrame:
    """The top windows of every neuron in ``neurons`` (one pass per window for all of them), cached."""
    if neurons.empty:
        raise ValueError("No neurons to scan: choose other blocks or a larger count.")
    return cached("attention-mlp-scan", lambda: scan_top_windows(
        session, corpus_windows(session, texts, params.window), neurons, params.top, progress),
        **_scan_parts(session, neurons, texts, params))


def _scan_parts(session: ModelSession, neurons: pd.DataFrame, texts: list[str], params: ScanParams) -> dict:
    return dict(model=session.identity(), corpus=corpus_hash(texts), neurons=_neuron_key(neurons),
                window=params.window, top=params.top, version=VERSION)


def _trim_parts(session: ModelSession, row: pd.DataFrame, texts: list[str], params: ScanParams) -> dict:
    return dict(model=session.identity(), corpus=corpus_hash(texts), neuron=_neuron_key(row), params=asdict(params),
                version=VERSION, trim=TRIM_VERSION)


def _heads_parts(session: ModelSession, prompts: pd.DataFrame, params: HeadParams) -> dict:
    key = [(int(r.block), int(r.neuron), int(r.token_id), [int(i) for i in r.ids]) for r in prompts.itertuples()]
    return dict(model=session.identity(), prompts=key, params=asdict(params), version=VERSION)


def neuron_prompts(session: ModelSession, neurons: pd.DataFrame, texts: list[str], params: ScanParams,
                   block: int, neuron: int, progress: Progress = no_progress) -> pd.DataFrame:
    """The trimmed max-activating prompts of ``neuron`` of 1-based ``block``; the scan is shared by every neuron
    in ``neurons``."""
    row = neurons[(neurons.block == block) & (neurons.neuron == neuron)]
    if row.empty:
        raise ValueError(f"Neuron {neuron} of block {block} is not in the table.")
    tops = scan_corpus(session, neurons, texts, params, lambda f, m: progress(0.6 * f, m))
    tops = tops[(tops.block == block) & (tops.neuron == neuron)]

    def compute() -> pd.DataFrame:
        windows = corpus_windows(session, texts, params.window)
        rows = trimmed_rows(session, windows, tops, row, params, lambda f, m: progress(0.6 + 0.4 * f, m))
        return select_prompts(rows, params)

    return cached("attention-mlp-trim", compute, **_trim_parts(session, row, texts, params))


def max_activating_prompts(session: ModelSession, neurons: pd.DataFrame, texts: list[str],
                           params: ScanParams = ScanParams(), progress: Progress = no_progress) -> pd.DataFrame:
    """Every neuron's trimmed prompts (per-neuron cache entries the page shares)."""
    scan_corpus(session, neurons, texts, params, lambda f, m: progress(0.5 * f, m))
    frames = []
    for k, r in enumerate(neurons.itertuples()):
        step = lambda f, m, k=k: progress(0.5 + 0.5 * (k + f) / len(neurons), f"neuron {k + 1}/{len(neurons)}: {m}")
        frames.append(neuron_prompts(session, neurons, texts, params, int(r.block), int(r.neuron), step))
    return pd.concat(frames, ignore_index=True)


def compute_neuron_heads(session: ModelSession, prompts: pd.DataFrame, params: HeadParams
                         ) -> dict[str, pd.DataFrame]:
    """One neuron: attributions (both rules), terms, and ablation of its context-dependent heads."""
    attr, terms = neuron_attributions(session, prompts, params.include_own)
    ablation = pd.DataFrame()
    if params.ablate:
        dependent = attr[attr[[f"context_{r}" for r in RULES]].any(axis=1)]
        heads = sorted({(int(r.head_block), int(r.head)) for r in dependent.itertuples()})
        ablation = neuron_ablation(session, prompts, attr, heads)
    return {"attributions": attr, "terms": terms, "ablation": ablation}


def neuron_heads(session: ModelSession, prompts: pd.DataFrame, params: HeadParams = HeadParams()
                 ) -> dict[str, pd.DataFrame]:
    """:func:`compute_neuron_heads` for one neuron's prompts, cached on their token ids."""
    if len(prompts) < MIN_PROMPTS:
        raise ValueError(f"This neuron has {len(prompts)} prompts; the 25-75 % rule needs at least "
                         f"{MIN_PROMPTS}: scan more texts.")
    return cached("attention-mlp-heads", lambda: compute_neuron_heads(session, prompts, params),
                  **_heads_parts(session, prompts, params))


def neuron_is_cached(session: ModelSession, neurons: pd.DataFrame, texts: list[str], scan: ScanParams,
                     heads: HeadParams, block: int, neuron: int) -> bool:
    """Whether the neuron's prompts and heads (1-based ``block``) would come from the disk cache (no model work):
    a link to a stored run then shows it without a Run click."""
    row = neurons[(neurons.block == block) & (neurons.neuron == neuron)]
    if row.empty or not is_cached("attention-mlp-scan", **_scan_parts(session, neurons, texts, scan)) \
            or not is_cached("attention-mlp-trim", **_trim_parts(session, row, texts, scan)):
        return False
    prompts = neuron_prompts(session, neurons, texts, scan, block, neuron)  # two disk reads
    return len(prompts) < MIN_PROMPTS or is_cached("attention-mlp-heads", **_heads_parts(session, prompts, heads))


def summary_is_cached(session: ModelSession, neurons: pd.DataFrame, texts: list[str], scan: ScanParams,
                      heads: HeadParams) -> bool:
    """Whether every neuron of the table is cached (:func:`neuron_is_cached`), so the summary needs no model work."""
    return not neurons.empty and all(neuron_is_cached(session, neurons, texts, scan, heads, int(r.block),
                                                      int(r.neuron)) for r in neurons.itertuples())


def compute_heads(session: ModelSession, prompts: pd.DataFrame, params: HeadParams = HeadParams(),
                  progress: Progress = no_progress) -> dict[str, pd.DataFrame]:
    """All neurons: attributions, terms, head summary, ablation, KS tests and the context-dependent share.
    Neurons with fewer than MIN_PROMPTS prompts are left out (listed in ``skipped``)."""
    groups = list(prompts.groupby(["block", "neuron"]))
    kept = [(key, frame) for key, frame in groups if len(frame) >= MIN_PROMPTS]
    if not kept:
        raise ValueError(f"No neuron has {MIN_PROMPTS} or more prompts: scan more texts.")
    parts = []
    for k, ((block, neuron), frame) in enumerate(kept):
        progress(k / len(kept), f"neuron {k + 1}/{len(kept)} (block {block}, neuron {neuron})")
        parts.append(neuron_heads(session, frame, params))
    progress(1.0, "done")
    out = {name: pd.concat([p[name] for p in parts], ignore_index=True)
           for name in ("attributions", "terms", "ablation")}
    out["heads"] = head_summary(out["attributions"])
    out["ks"] = ks_tests(out["ablation"])
    out["context_share"] = context_share(out["heads"])
    out["skipped"] = pd.DataFrame([{"block": b, "neuron": n, "prompts": len(f)} for (b, n), f in groups
                                   if len(f) < MIN_PROMPTS], columns=["block", "neuron", "prompts"])
    return out


run_heads = compute_heads  # per-neuron results are cached inside


def summarise(session: ModelSession, neurons: pd.DataFrame, texts: list[str], scan: ScanParams,
              heads: HeadParams, progress: Progress = no_progress) -> dict[str, pd.DataFrame]:
    """Every neuron of the table: :func:`compute_heads`' tables plus ``prompts`` (what the page's summary and the
    verdicts read); each step through the disk cache."""
    prompts = max_activating_prompts(session, neurons, texts, scan, lambda f, m: progress(0.5 * f, m))
    return {**compute_heads(session, prompts, heads, lambda f, m: progress(0.5 + 0.5 * f, m)), "prompts": prompts}


@dataclass(frozen=True)
class RunConfig:
    """Everything one end-to-end run depends on (``blocks`` 1-based: block l writes layer l)."""

    blocks: list[int]
    per_layer: int = DEFAULT_PER_LAYER
    n_texts: int = DEFAULT_N_TEXTS
    control: bool = False
    seed: int = DEFAULT_SEED
    scan: ScanParams = field(default_factory=ScanParams)
    heads: HeadParams = field(default_factory=HeadParams)


def preset_config(preset: str, n_layers: int) -> RunConfig:
    """A preset of :data:`core.analyses.attention_mlp.params.PRESETS` ("quick", "paper") for a model of ``n_layers``
    blocks."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose from {', '.join(PRESETS)}.")
    p = PRESETS[preset]
    scan = ScanParams(window=p["window"], top=p["top"], keep=p["keep"], max_tokens=p["max_tokens"], trim=p["trim"])
    return RunConfig(blocks=preset_block_list(p, n_layers), per_layer=p["per_layer"],
                     n_texts=p["n_texts"], control=p["control"], scan=scan,
                     heads=HeadParams(include_own=p["include_own"]))


def run_attention_mlp(session: ModelSession, texts: list[str], config: RunConfig,
                      progress: Progress = no_progress) -> dict[str, pd.DataFrame]:
    """Neurons -> prompts -> heads for ``texts`` (``config.n_texts`` of them, spread evenly): every table of the
    page."""
    neurons = choose_neurons(session, config.blocks, config.per_layer, config.control, config.seed)
    progress(0.0, f"{len(neurons)} neurons chosen; scanning {config.n_texts} texts")
    sample = corpus_sample(texts, config.n_texts)
    prompts = max_activating_prompts(session, neurons, sample, config.scan, lambda f, m: progress(0.6 * f, m))
    results = run_heads(session, prompts, config.heads, lambda f, m: progress(0.6 + 0.4 * f, m))
    return {"neurons": neurons, "prompts": prompts, **results,
            "config": pd.DataFrame([{"corpus_hash": corpus_hash(sample), "n_texts": len(sample),
                                     **{k: str(v) for k, v in asdict(config).items()}}])}

"""Top-k order, section 4: the intervention, done right (RESEARCH.md §1a(iv), §1e).

Within one text, take pairs of positions that end with the same top-1 token but whose top-1 saturation
layers differ by a wide margin. The "early" token's pre-final-norm residual after block e+o (its trace's
``resid[e+o+1]``) replaces the "late" token's residual *entering* block e+o+1 (a forward PRE-hook on that
block, at the late position only), for offsets o = -a..+a around the early token's saturation layer e.
The rest of the model runs; the late token's new top-1 saturation layer is read off the patched run.
Success at offset o: the new saturation layer equals the implant layer e+o AND the prediction is unchanged.

Inside, layers are 0-based block-output indices l0 = 0..L-1 (as in :mod:`core.analyses.topk`); an implant at
l0 puts the vector where the output of blocks[l0] was, so it can only land on l0 = 0..L-2 (blocks[l0+1] must
exist). The frames give residual layers (l0 + 1, :mod:`core.layers`): e, s_late, implant_layer and new_sat lie
in 1..L, an implant lands on layers 1..L-1 (the stream after block e+o, read by block e+o+1, blocks 1-based), and
offsets, being differences, are the same in both numberings. :class:`InterventionConfig` keeps the paper's
constants as the paper states them (min_sat: a 0-based block index); its frame column is ``min_sat_layer``.
The reference code's bugs are not repeated: its post-hook returned the block's inputs (skipping the block for
every position) and it implanted post-final-norm vectors.

All offsets of one pair run in ONE batched forward pass: the shared prefix (tokens before the late position,
which a causal model computes identically in every row) runs once with a key/value cache, and only the late
token runs in a batch of one row per offset, each row with its own implant.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from core.analyses.topk.saturation import saturation_layers, slot_match_from_top_ids
from core.data import evaluation_texts, sample_texts, wikipedia_paragraphs
from core.layers import layer_of_block
from core.lenses.stats import layer_groups, logit_lens_top_k, position_tiles
from core.model.executors import Pass
from core.model.hooks import Patch, residual_captures
from core.model.session import ModelSession
from core.progress import Progress, no_progress

# The paper's constants for GPT2-XL (L = 48): pairs >= 10 layers apart, both saturating at >= 10, <= 30 tokens
# apart, offsets -5..+5. Layer distances are scaled by L / 48 for other depths; token distance and offsets stay.
PAPER_LAYERS = 48
PAPER_MIN_GAP = 10
PAPER_MIN_SAT = 10
MAX_TOKEN_DISTANCE = 30
N_ADJACENT = 5
MAX_PAIRS_PER_TEXT = 10  # the reference samples num_pairs // 10 texts: about ten pairs per text
MAX_TOKENS = 512


@dataclass(frozen=True)
class InterventionConfig:
    """Pair selection and offsets. ``for_depth(L)`` scales the paper's layer constants to L layers."""

    min_gap: int = PAPER_MIN_GAP
    min_sat: int = PAPER_MIN_SAT
    max_distance: int = MAX_TOKEN_DISTANCE
    n_adjacent: int = N_ADJACENT
    max_pairs_per_text: int = MAX_PAIRS_PER_TEXT
    max_tokens: int = MAX_TOKENS

    @classmethod
    def for_depth(cls, n_layers: int, **overrides: int) -> "InterventionConfig":
        """GPT2-XL's 10-layer gap and minimum saturation layer scaled by L/48 (L = 30 -> 6), at least 1."""
        scaled = max(1, round(PAPER_MIN_GAP * n_layers / PAPER_LAYERS))
        config = cls(min_gap=scaled, min_sat=max(1, round(PAPER_MIN_SAT * n_layers / PAPER_LAYERS)))
        return config.replace(**overrides) if overrides else config

    def replace(self, **changes: int) -> "InterventionConfig":
        values = {**asdict(self), **changes}
        for name, value in values.items():
            if int(value) < (0 if name == "min_sat" else 1):
                raise ValueError(f"The intervention setting {name} must be at least "
                                 f"{0 if name == 'min_sat' else 1}; got {value}.")
        return InterventionConfig(**{k: int(v) for k, v in values.items()})

    @property
    def offsets(self) -> list[int]:
        return list(range(-self.n_adjacent, self.n_adjacent + 1))


# -- the logit lens, top-1, read from the last layer downward ---------------------------------------------------
def lens_top_ids(adapter, states: torch.Tensor, k: int) -> np.ndarray:
    """[layer, pos, d_model] pre-norm states -> int [layer, pos, k] lens top-k ids
    (:func:`core.lenses.stats.logit_lens_top_k`: one [tile, vocab] product at a time)."""
    return logit_lens_top_k(adapter, states, k)[0]


def top1_saturation(adapter, blocks_out: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """[layer, pos, d_model] block outputs (l0 = 0..L-1, pre-norm) -> (int [pos] top-1 saturation layer,
    int [pos] final top-1 id).

    Reads the fixed layer groups of :func:`core.lenses.stats.layer_groups` from the last one down and stops, per
    position, after the first layer whose top-1 differs from the final one (the definition only needs the
    trailing run). Each position tile stops on its own, reading whole groups by the same calls as
    :func:`lens_top_ids`, so the ids are those of reading every layer. Layers never read
    hold -1 (a mismatch), so :func:`core.analyses.topk.saturation_layers` gives exactly the definition's answer.
    """
    n_layer, n_pos, _ = blocks_out.shape
    top = np.full((n_layer, n_pos, 1), -1, np.int64)
    for ps in position_tiles(n_pos):
        active = np.ones(ps.stop - ps.start, bool)  # positions of this tile still held since the last layer
        for group in reversed(layer_groups(n_layer, ps.stop - ps.start, adapter.d_vocab)):
            read = lens_top_ids(adapter, blocks_out[group, ps], 1)  # [group, tile, 1]
            top[group, ps] = np.where(active[None, :, None], read, -1)
            active &= (top[group, ps, 0] == top[-1, ps, 0]).all(0)
            if not active.any():
                break
    sat = saturation_layers(slot_match_from_top_ids(top))[:, 0]
    return sat, top[-1, :, 0]


# -- pairs -----------------------------------------------------------------------------------------------------
def select_pairs(sat: np.ndarray, final_top1: np.ndarray, config: InterventionConfig) -> list[tuple[int, int]]:
    """[pos] top-1 saturation layers, [pos] final top-1 ids -> (early, late) position pairs.

    A pair (i < j) has the same final top-1, |s_i - s_j| >= min_gap, j - i <= max_distance and both
    saturation layers >= min_sat; "early" is the position whose top-1 saturates first."""
    sat, final_top1 = np.asarray(sat), np.asarray(final_top1)
    if sat.shape != final_top1.shape or sat.ndim != 1:
        raise ValueError("Saturation layers and final ids must both be [pos].")
    pairs = []
    for i in range(len(sat)):
        for j in range(i + 1, min(len(sat), i + config.max_distance + 1)):
            if (final_top1[i] == final_top1[j] and abs(int(sat[i]) - int(sat[j])) >= config.min_gap
                    and min(sat[i], sat[j]) >= config.min_sat):
                pairs.append((i, j) if sat[i] < sat[j] else (j, i))
    return pairs


def implant_layers(early_sat: int, n_layers: int, offsets: Sequence[int]) -> tuple[list[int], list[int]]:
    """-> (offsets whose implant layer e+o lies in 0..L-2, offsets skipped because it does not)."""
    valid = [o for o in offsets if 0 <= early_sat + o <= n_layers - 2]
    return valid, [o for o in offsets if o not in valid]


# -- the patched forward -----------------------------------------------------------------------------------------
@torch.no_grad()
def implant_forward(session: ModelSession, ids: torch.Tensor, late: int,
                    implants: Sequence[tuple[int, torch.Tensor] | None]) -> torch.Tensor:
    """[pos] ids, one implant per row -> [row, layer+1, d_model] residual at position ``late`` (pre-norm).

    Row r with implant (l0, vector [d_model]) has ``vector`` replace the residual entering block l0+1 at
    ``late`` only; ``None`` is a clean row. Entry l0+1 of a patched row holds the implanted vector (what
    block l0+1 read), so the returned stack is the late token's residual stream as the model saw it.
    """
    n_layers = session.adapter.n_layers
    for implant in implants:
        if implant is not None and not 0 <= implant[0] <= n_layers - 2:
            raise ValueError(f"An implant layer must lie in 0..{n_layers - 2} (block l0+1 must exist).")
    n_rows = len(implants)
    by_block: dict[int, list[int]] = {}
    for row, implant in enumerate(implants):
        if implant is not None:
            by_block.setdefault(implant[0] + 1, []).append(row)
    # the input of block l0+1 (0-based) at the pass's last position (the late token), in the rows implanting l0
    patches = [Patch("resid_pre", block, torch.stack([implants[r][1] for r in rows]),  # type: ignore[index]
                     position=-1, rows=tuple(rows)) for block, rows in by_block.items()]
    layers = range(n_layers + 1)
    with session.lock:  # the prefix's cache and the pass that continues it, with no other pass between
        past = _prefix_cache(session, ids[:late], n_rows)
        tokens = ids[late:late + 1] if past is not None else ids[:late + 1]
        got = session.run(Pass(tokens[None].expand(n_rows, -1), captures=residual_captures(layers, position=-1),
                               patches=tuple(patches), past_key_values=past)).captured
    resid = got.residual(layers).transpose(0, 1).contiguous()  # [layer+1, row, d_model] -> [row, layer+1, d_model]
    for row, implant in enumerate(implants):
        if implant is not None:
            resid[row, implant[0] + 1] = implant[1].float().cpu()
    return resid


def _prefix_cache(session: ModelSession, prefix: torch.Tensor, n_rows: int):
    """The key/value cache of ``prefix`` repeated for ``n_rows`` rows; None (no prefix, an executor that cannot
    hand a cache on -- nnsight, NDIF --, or a model whose cache cannot be repeated) means: run the whole prefix in
    every row instead (the same numbers, more work)."""
    if prefix.numel() == 0 or not session.executor.kv_cache:
        return None
    past = session.run(Pass(prefix[None], keep_cache=True)).past_key_values
    if past is None or not hasattr(past, "batch_repeat_interleave"):
        return None
    past.batch_repeat_interleave(n_rows)
    return past


def patched_outcomes(session: ModelSession, ids: torch.Tensor, late: int,
                     implants: Sequence[tuple[int, torch.Tensor]]) -> tuple[np.ndarray, np.ndarray]:
    """-> (int [row] the late token's new top-1 saturation layer, int [row] its new final top-1 id)."""
    resid = implant_forward(session, ids, late, implants)  # [row, layer+1, d_model]
    top = lens_top_ids(session.adapter, resid[:, 1:].transpose(0, 1), 1)  # [layer, row, 1]
    return saturation_layers(slot_match_from_top_ids(top))[:, 0], top[-1, :, 0]


# -- the section -----------------------------------------------------------------------------------------------
def pair_rows(session: ModelSession, ids: torch.Tensor, resid: torch.Tensor, sat: np.ndarray,
              final: np.ndarray, pair: tuple[int, int], config: InterventionConfig) -> tuple[list[dict], int]:
    """One pair -> (one row per evaluated offset, number of offsets skipped). ``sat`` [pos] holds block indices;
    the rows' layers (e, s_late, implant_layer, new_sat) are residual layers."""
    early, late = pair
    e = int(sat[early])
    valid, skipped = implant_layers(e, session.adapter.n_layers, config.offsets)
    if not valid:
        return [], len(skipped)
    implants = [(e + o, resid[e + o + 1, early]) for o in valid]  # early's state after block e+o
    new_sat, new_final = patched_outcomes(session, ids, late, implants)
    token = session.vocab_strings()[int(final[late])]
    rows = []
    for o, s_new, pred in zip(valid, new_sat, new_final):
        unchanged = bool(pred == final[late])
        rows.append({"early_pos": early, "late_pos": late, "token": token, "e": layer_of_block(e),
                     "s_late": layer_of_block(sat[late]), "offset": o, "implant_layer": layer_of_block(e + o),
                     "new_sat": layer_of_block(s_new), "prediction_unchanged": unchanged,
                     "success": bool(unchanged and s_new == e + o)})
    return rows, len(skipped)


def offsets_table(pairs: pd.DataFrame, skipped: dict[int, int], offsets: Sequence[int]) -> pd.DataFrame:
    """Per offset: share of successful pairs, n, SEM (binomial), skipped, and each half's max (the step line)."""
    rows = []
    for o in offsets:
        hits = pairs.loc[pairs.offset == o, "success"] if len(pairs) else pd.Series(dtype=bool)
        n = int(len(hits))
        share = float(hits.mean()) if n else math.nan
        sem = math.sqrt(share * (1 - share) / n) if n else math.nan
        rows.append({"offset": o, "share": share, "n": n, "sem": sem, "skipped": int(skipped.get(o, 0))})
    table = pd.DataFrame(rows, columns=["offset", "share", "n", "sem", "skipped"])
    half = np.where(table.offset < 0, "before", "at or after")
    table["half"] = half
    table["half_max"] = table.groupby("half")["share"].transform("max")
    return table


def intervention_texts(n_texts: int, seed: int) -> list[str]:
    """``n_texts`` bundled Wikipedia evaluation paragraphs (seeded), as the other sections draw them."""

    if n_texts < 1:
        raise ValueError("Use at least one text.")
    return sample_texts(evaluation_texts(wikipedia_paragraphs()), n_texts, seed)


def compute_intervention(session: ModelSession, texts: Sequence[str], seed: int, config: InterventionConfig,
                         progress: Progress = no_progress) -> dict[str, pd.DataFrame]:
    """The intervention over ``texts`` -> frames "pairs", "offsets", "texts", "config"."""
    rng = random.Random(seed)
    n_layers = session.adapter.n_layers
    pair_frames, text_rows, skipped = [], [], {o: 0 for o in config.offsets}
    for index, text in enumerate(texts):
        progress(index / max(1, len(texts)), f"text {index + 1} of {len(texts)}")
        ids = session.tokenize(text)[:min(config.max_tokens, session.max_tokens)]
        resid = session.trace(ids).resid  # [layer+1, pos, d_model], pre-final-norm
        sat, final = top1_saturation(session.adapter, resid[1:])
        candidates = select_pairs(sat, final, config)
        chosen = sorted(rng.sample(candidates, min(len(candidates), config.max_pairs_per_text)))
        for done, pair in enumerate(chosen):
            progress((index + done / len(chosen)) / len(texts),
                     f"text {index + 1} of {len(texts)}: pair {done + 1} of {len(chosen)}")
            rows, _ = pair_rows(session, ids, resid, sat, final, pair, config)
            valid = {row["offset"] for row in rows}
            for o in config.offsets:
                skipped[o] += int(o not in valid)
            if rows:
                pair_frames.append(pd.DataFrame(rows).assign(text=index))
        text_rows.append({"text": index, "tokens": int(ids.numel()), "candidate_pairs": len(candidates),
                          "pairs": len(chosen), "start": text[:80]})
    progress(1.0, "done")
    columns = ["text", "early_pos", "late_pos", "token", "e", "s_late", "offset", "implant_layer", "new_sat",
               "prediction_unchanged", "success"]
    pairs = pd.concat(pair_frames, ignore_index=True)[columns] if pair_frames else pd.DataFrame(columns=columns)
    constants = asdict(config)
    constants["min_sat_layer"] = layer_of_block(constants.pop("min_sat"))  # the paper's block index as a layer
    settings = pd.DataFrame([{"n_layers": n_layers, **constants, "texts": len(texts), "seed": seed}])
    return {"pairs": pairs, "offsets": offsets_table(pairs, skipped, config.offsets),
            "texts": pd.DataFrame(text_rows), "config": settings}

"""Depth: the per-layer readout at the last prompt position and the earliest layer with rank <= k."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from core.lenses.base import Lens
from core.lenses.stats import output_logits, readout_logits
from core.model.batch import last_residuals
from core.model.session import ModelSession

CURVE_COLUMNS = ["group", "k", "mean_layer", "std_layer", "n"]


# -- the per-layer readout at the last position ------------------------------------------------------
@dataclass(frozen=True)
class Readout:
    """What one prompt yields at its last position (L+1 = number of residual layers).

    ranks  [layer, target]  1 + #tokens with strictly higher probability than each target
    probs  [layer, target]  lens probability of each target
    guess  [layer]          lens top-1 id per layer
    final_id                the model's greedy next token (top-1 at the last layer)
    """

    ranks: np.ndarray
    probs: np.ndarray
    guess: np.ndarray
    final_id: int


def ranks_from_probs(probs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[layer, vocab] probabilities, [target] ids -> ([layer, target] ranks, [layer, target] probs)."""
    target_p = probs[:, targets]  # [layer, target]
    ranks = 1 + (probs[:, None, :] > target_p[:, :, None]).sum(-1)  # [layer, target]
    return ranks, target_p


def final_tokens(session: ModelSession, prompts: Sequence[str | torch.Tensor]) -> list[tuple[int, torch.Tensor]]:
    """Prompts (text or [pos] ids) -> per prompt (greedy next id, [layer+1, 1, d_model] residual at the last
    position), from batched passes (:func:`core.model.batch.last_residuals`).

    The id is the argmax of :func:`core.lenses.stats.output_logits` on the same [1, d_model] state that
    :func:`readout` reads, so it is exactly the readout's ``final_id``.
    """
    resids = last_residuals(session, prompts)  # [layer+1, 1, d_model] each
    return [(int(output_logits(session.adapter, resid[-1])[0].argmax()), resid) for resid in resids]


def readout(lens: Lens, resid: torch.Tensor, targets: Sequence[int] | None = None) -> Readout:
    """[layer+1, 1, d_model] last-position residual -> :class:`Readout` (targets default: final top-1).

    The last layer's row is the model's output for every lens (:func:`core.lenses.stats.readout_logits`), so the
    final rank of the default target is 1 by construction.
    """
    probs = torch.softmax(readout_logits(lens.adapter, lens, resid)[:, 0], -1)  # [layer, vocab]
    final_id = int(probs[-1].argmax())
    wanted = torch.tensor([final_id] if targets is None else list(targets), dtype=torch.long)
    ranks, target_p = ranks_from_probs(probs, wanted)
    return Readout(ranks.cpu().numpy(), target_p.cpu().numpy(), probs.argmax(-1).cpu().numpy(), final_id)


def readout_rows(out: Readout, **labels: object) -> pd.DataFrame:
    """One row per layer: labels, layer, rank, prob (of the first target), guess."""
    n = out.ranks.shape[0]
    return pd.DataFrame({**labels, "layer": np.arange(n), "rank": out.ranks[:, 0], "prob": out.probs[:, 0],
                         "guess": out.guess})


# -- definitions --------------------------------------------------------------------------------------
def k_grid(vocab: int, top: int = 10001, n: int = 200) -> np.ndarray:
    """The paper's POS grid unique(logspace(0, log10(top), n).astype(int)), clipped to ``vocab``."""
    grid = np.unique(np.logspace(0, np.log10(top), n).astype(int))
    return grid[grid <= vocab]


def earliest_layer(ranks: np.ndarray, k: int) -> float:
    """[layer] ranks -> min{layer : rank <= k} (first hit, need not stay), NaN if never."""
    hits = np.flatnonzero(np.asarray(ranks) <= k)
    return float(hits[0]) if hits.size else float("nan")


def earliest_layer_curves(rows: pd.DataFrame, group_col: str, vocab: int = 10001) -> pd.DataFrame:
    """Tidy rows (group_col, example, layer, rank) -> mean/std over examples of l*(k) per group and k.

    Examples that never reach rank <= k are left out of that k's mean (n says how many counted).
    """
    out = []
    grid = k_grid(vocab)
    for group, frame in rows.groupby(group_col, sort=True):
        per_example = [f.sort_values("layer")["rank"].to_numpy() for _, f in frame.groupby("example")]
        for k in grid:
            values = np.array([earliest_layer(r, int(k)) for r in per_example])
            values = values[~np.isnan(values)]
            out.append({"group": group, "k": int(k), "mean_layer": values.mean() if values.size else np.nan,
                        "std_layer": values.std() if values.size else np.nan, "n": int(values.size)})
    return pd.DataFrame(out, columns=CURVE_COLUMNS)

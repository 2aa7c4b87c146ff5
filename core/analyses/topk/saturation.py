"""Top-k order: saturation layers of the top-k slots and the 0.85 L filter (Lioubashevski et al.).

Layer numbering. The arrays in this package are indexed like the hooks and the paper: a [layer, ...] stack holds
the lens at block index b = 0..L-1 (the output of block b+1), and a saturation layer s is such an index (the
paper's definitions and thresholds, e.g. s_0 <= int(0.85·L), are stated on it, so the maths here stays literally
the paper's). Every frame that leaves :mod:`core.analyses.topk` speaks residual layers instead (layer l = the
stream after block l, 1..L; :mod:`core.layers`): the frame builders convert with
:func:`core.layers.layers_of_block_array` / :func:`core.layers.layer_of_block`, s -> s + 1, and nowhere else.
"""

from __future__ import annotations

import numpy as np

from core.analyses.topk.params import MAX_TOP1_SATURATION_RATIO


# -- saturation ---------------------------------------------------------------------------------------------
def slot_match_from_top_ids(top_ids: np.ndarray) -> np.ndarray:
    """[layer, pos, k] top-k ids per block output (last layer = the model's output) -> bool [layer, pos, k]:
    True where slot i at that layer holds the final slot-i token."""
    top_ids = np.asarray(top_ids)
    if top_ids.ndim != 3 or top_ids.shape[0] < 1:
        raise ValueError(f"top_ids must be [layer, pos, k] with at least one layer; got shape {top_ids.shape}.")
    return top_ids == top_ids[-1][None]


def saturation_layers(slot_match: np.ndarray) -> np.ndarray:
    """bool [layer, pos, k] -> int [pos, k]: the earliest layer l0 from which slot i holds its final token
    at every later layer (held everywhere -> 0; only at the last layer -> L-1)."""
    slot_match = np.asarray(slot_match, dtype=bool)
    if slot_match.ndim != 3 or slot_match.shape[0] < 1:
        raise ValueError(f"slot_match must be [layer, pos, k]; got shape {slot_match.shape}.")
    if not slot_match[-1].all():
        raise ValueError("The last layer must hold every final slot (it defines them): build slot_match with "
                         "slot_match_from_top_ids, whose last layer is the model's own output.")
    n_layers = slot_match.shape[0]
    mismatch_rev = ~slot_match[::-1]  # [layer, pos, k], last layer first
    trailing = np.where(mismatch_rev.any(0), mismatch_rev.argmax(0), n_layers)  # [pos, k] layers held at the end
    return (n_layers - trailing).astype(np.int64)


def keep_mask(sat: np.ndarray, n_layers: int, ratio: float = MAX_TOP1_SATURATION_RATIO) -> np.ndarray:
    """[pos, k] saturation layers -> bool [pos]: the top-1 saturates early enough, s_0 <= int(ratio * L)."""
    sat = _check_sat(sat, n_layers)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"The filter ratio must lie in (0, 1]; got {ratio}.")
    return sat[:, 0] <= int(ratio * n_layers)


def _check_sat(sat: np.ndarray, n_layers: int) -> np.ndarray:
    sat = np.asarray(sat)
    if sat.ndim != 2:
        raise ValueError(f"Saturation layers must be [pos, k]; got shape {sat.shape}.")
    if n_layers < 1 or (sat.size and (sat.min() < 0 or sat.max() > n_layers - 1)):
        raise ValueError(f"Saturation layers must lie in 0..{n_layers - 1} for a {n_layers}-layer model.")
    return sat.astype(np.int64)


# -- ordering: rank vs saturation order -----------------------------------------------------------------------
def saturation_order(sat: np.ndarray, n_layers: int) -> np.ndarray:
    """[pos, k] -> float [pos, k]: 1 + the index of s_j among the position's sorted saturation layers (ties:
    first occurrence); NaN where s_j = L-1 (settled only at the output), as the paper's bars exclude them."""
    sat = _check_sat(sat, n_layers)
    ordered = np.sort(sat, axis=1)  # [pos, k]
    order = np.stack([np.searchsorted(row, values, side="left") for row, values in zip(ordered, sat)]) \
        if len(sat) else np.zeros(sat.shape, np.int64)
    return np.where(sat < n_layers - 1, order + 1.0, np.nan)

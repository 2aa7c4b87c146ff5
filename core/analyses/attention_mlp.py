"""Attention -> MLP (Neo, Cohen & Barez 2024), part 1: next-token neurons and their max-activating prompts.

* :func:`next_token_neurons` — congruence of each neuron's output direction with the unembedding, with the
  paper's weight processing done explicitly on the model's own weights (final-norm gain folded into W_U,
  W_U centred over the vocabulary, W_out centred over d_model for LayerNorm models only).
* :func:`max_activating_prompts` — one pass over a corpus in windows, keeping the top prompts per neuron,
  trimmed to the shortest suffix that keeps more than 0.8 of the activation.

Head attributions and ablations live in :mod:`core.analyses.attention_mlp_heads`.
Shapes: layer, pos, head, d_model, d_mlp, vocab.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from core.analyses.attention_mlp_pass import content_ids, neuron_acts
from core.progress import Progress, no_progress
from core.trace import ModelSession

VERSION = "2"
DEFAULT_PER_LAYER = 20
DEFAULT_TOP_PROMPTS = 20
DEFAULT_WINDOW = 128
TRIM_KEEP = 0.8
MAX_TRIMMED_TOKENS = 100
VERIFY_PROBES = 3  # extra probes checking the binary search's monotonicity assumption
DEFAULT_REJECT = frozenset({" SolidGoldMagikarp", " TheNitromeFan", " davidjl", " petertodd", " RandomRedditor"})
_CHUNK = 256  # neurons per block of the congruence product


def default_layers(n_layers: int) -> list[int]:
    """The last few blocks (0-based): 3 for models up to 24 layers, else 4 (GPT-2 small: 9-11; 30: 26-29)."""
    k = min(n_layers, 3 if n_layers <= 24 else 4)
    return list(range(n_layers - k, n_layers))


def check_layers(session: ModelSession, layers: list[int]) -> list[int]:
    """Sorted unique 0-based block indices; ValueError when one is outside the model."""
    n = session.adapter.n_layers
    if not layers:
        raise ValueError("Choose at least one layer.")
    bad = [layer for layer in layers if not 0 <= int(layer) < n]
    if bad:
        raise ValueError(f"Layers {bad} are outside this model's blocks 0..{n - 1}.")
    return sorted({int(layer) for layer in layers})


def uses_layernorm(norm: nn.Module) -> bool:
    """True for a centring LayerNorm (GPT-2, NeoX, GPT-J, OPT); False for RMSNorm (Llama family)."""
    name = type(norm).__name__.lower()
    return isinstance(norm, nn.LayerNorm) or ("layernorm" in name and "rms" not in name)


def processed_unembedding(session: ModelSession) -> torch.Tensor:
    """[d_model, vocab]: W_U with the final norm's gain folded in, centred over the vocabulary.

    The final norm's bias (LayerNorm) folds into the unembedding *bias*, which adds the same vector to every
    neuron's row of C and so cannot change congruence; it is left out.
    """
    adapter = session.adapter
    w_u = adapter.unembed_module.weight.detach().float().T  # [d_final, vocab]
    if adapter.final_proj is not None:  # OPT's project_out: d_model -> d_final
        from core.adapters import _linear_weight_in_out

        w_u = _linear_weight_in_out(adapter.final_proj).detach().float() @ w_u  # [d_model, vocab]
    gain = getattr(adapter.final_norm_module, "weight", None)
    if gain is not None:
        w_u = gain.detach().float()[:, None] * w_u
    return w_u - w_u.mean(dim=1, keepdim=True)


def processed_out_directions(session: ModelSession, layer: int) -> torch.Tensor:
    """[d_mlp, d_model]: neuron output directions, centred over d_model only when the model's norms centre."""
    w_out = session.adapter.neuron_out_weight(layer).detach().float()
    if uses_layernorm(session.adapter.final_norm_module):
        w_out = w_out - w_out.mean(dim=1, keepdim=True)
    return w_out


def congruence_top(session: ModelSession, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> ([d_mlp] max_t C[n, t], [d_mlp] argmax_t), C = W_out · W_U computed in blocks of neurons."""
    w_u = processed_unembedding(session)  # [d_model, vocab]
    w_out = processed_out_directions(session, layer)  # [d_mlp, d_model]
    values, tokens = [], []
    for start in range(0, w_out.shape[0], _CHUNK):
        block = w_out[start:start + _CHUNK] @ w_u  # [chunk, vocab]
        top = block.max(dim=1)
        values.append(top.values)
        tokens.append(top.indices)
    return torch.cat(values), torch.cat(tokens)


def space_marker(session: ModelSession) -> str:
    """The tokenizer's word-start marker: 'Ġ' (byte-level BPE) or '▁' (SentencePiece); ' ' otherwise."""
    vocab = session.tokenizer.get_vocab()
    counts = {m: sum(tok.startswith(m) for tok in vocab) for m in ("Ġ", "▁", " ")}
    return max(counts, key=counts.get)


def passes_filter(raw: str, text: str, marker: str, reject: frozenset[str]) -> bool:
    """The paper's filter: starts with the space marker, >= 2 characters after it, not on the reject list
    (compared without surrounding spaces, so ' foo' and 'foo' both reject the token ' foo')."""
    stripped = {r.strip() for r in reject}
    return raw.startswith(marker) and len(raw) - len(marker) >= 2 and text.strip() not in stripped


def next_token_neurons(session: ModelSession, layers: list[int], per_layer: int = DEFAULT_PER_LAYER,
                       reject: frozenset[str] = DEFAULT_REJECT) -> pd.DataFrame:
    """Tidy [neuron] table: layer, neuron, token_id, token, congruence, rank (by congruence in its layer).

    Per layer, neurons sorted by congruence descending, kept while their top token passes the filter, until
    ``per_layer`` are found.
    """
    if per_layer < 1:
        raise ValueError("Neurons per layer must be at least 1.")
    layers = check_layers(session, layers)
    marker, vocab = space_marker(session), session.vocab_strings()
    raw_tokens = session.tokenizer.convert_ids_to_tokens(list(range(len(vocab))))
    rows = []
    for layer in layers:
        values, tokens = congruence_top(session, layer)
        order = torch.argsort(values, descending=True).tolist()
        kept = 0
        for rank, neuron in enumerate(order, 1):
            tok = int(tokens[neuron])
            raw = raw_tokens[tok] if tok < len(raw_tokens) and raw_tokens[tok] else ""
            if not passes_filter(raw, vocab[tok], marker, reject):
                continue
            rows.append({"layer": layer, "neuron": neuron, "token_id": tok, "token": vocab[tok],
                         "congruence": float(values[neuron]), "rank": rank, "kind": "next-token"})
            kept += 1
            if kept == per_layer:
                break
    return pd.DataFrame(rows, columns=["layer", "neuron", "token_id", "token", "congruence", "rank", "kind"])


def random_neurons(session: ModelSession, layers: list[int], per_layer: int = DEFAULT_PER_LAYER,
                   seed: int = 0) -> pd.DataFrame:
    """The paper's control: neurons drawn uniformly per layer, whatever their top token; same columns."""
    layers = check_layers(session, layers)
    rng, vocab = random.Random(seed), session.vocab_strings()
    rows = []
    for layer in layers:
        values, tokens = congruence_top(session, layer)
        rank = torch.empty_like(values, dtype=torch.long)
        rank[torch.argsort(values, descending=True)] = torch.arange(1, values.numel() + 1)
        for neuron in sorted(rng.sample(range(values.numel()), min(per_layer, values.numel()))):
            tok = int(tokens[neuron])
            rows.append({"layer": layer, "neuron": neuron, "token_id": tok, "token": vocab[tok],
                         "congruence": float(values[neuron]), "rank": int(rank[neuron]), "kind": "random"})
    return pd.DataFrame(rows, columns=["layer", "neuron", "token_id", "token", "congruence", "rank", "kind"])


# -- max-activating prompts -------------------------------------------------------------------


@dataclass(frozen=True)
class ScanParams:
    """How the corpus is scanned and prompts trimmed (all settable; defaults are the paper's)."""

    window: int = DEFAULT_WINDOW
    top: int = DEFAULT_TOP_PROMPTS
    keep: float = TRIM_KEEP
    max_tokens: int = MAX_TRIMMED_TOKENS
    trim: str = "binary"  # or "linear": the exact shortest-first scan

    def __post_init__(self) -> None:
        if self.window < 2 or self.top < 1 or self.max_tokens < 1:
            raise ValueError("The window needs at least 2 tokens; prompts kept and the length cap at least 1.")
        if not 0 < self.keep < 1:
            raise ValueError("The kept fraction must lie strictly between 0 and 1.")
        if self.trim not in ("binary", "linear"):
            raise ValueError("The trimming method is 'binary' or 'linear'.")


def corpus_windows(session: ModelSession, texts: list[str], window: int) -> list[list[int]]:
    """Each text's tokens (no special tokens) cut into consecutive windows of at most ``window`` tokens."""
    if window < 2:
        raise ValueError("The window must hold at least 2 tokens.")
    out = []
    for text in texts:
        ids = content_ids(session, text)
        out.extend(ids[i:i + window] for i in range(0, len(ids), window) if len(ids[i:i + window]) >= 2)
    if not out:
        raise ValueError("The corpus produced no windows of at least 2 tokens.")
    return out


def corpus_hash(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", errors="replace") + b"\x00")
    return digest.hexdigest()[:16]


def scan_top_windows(session: ModelSession, windows: list[list[int]], neurons: pd.DataFrame, top: int,
                     progress: Progress = no_progress) -> pd.DataFrame:
    """One pass per window, all chosen neurons at once -> [neuron x top] rows: layer, neuron, activation,
    window, position (content index of the max position in that window; one entry per window)."""
    groups = {layer: torch.tensor(sorted(frame.neuron.unique())) for layer, frame in neurons.groupby("layer")}
    best = {layer: (torch.full((len(idx), 0), float("-inf")), torch.zeros((len(idx), 0), dtype=torch.long))
            for layer, idx in groups.items()}
    positions = {layer: torch.zeros((len(idx), 0), dtype=torch.long) for layer, idx in groups.items()}
    for w, ids in enumerate(windows):
        acts = neuron_acts(session, ids, list(groups))  # layer -> [pos, d_mlp]
        for layer, idx in groups.items():
            peak = acts[layer][:, idx].max(dim=0)  # [n]
            vals = torch.cat([best[layer][0], peak.values[:, None]], dim=1)
            wins = torch.cat([best[layer][1], torch.full((len(idx), 1), w)], dim=1)
            pos = torch.cat([positions[layer], peak.indices[:, None]], dim=1)
            keep = vals.topk(min(top, vals.shape[1]), dim=1).indices
            best[layer] = (vals.gather(1, keep), wins.gather(1, keep))
            positions[layer] = pos.gather(1, keep)
        if w % 10 == 0 or w == len(windows) - 1:
            progress((w + 1) / len(windows), f"scanning window {w + 1}/{len(windows)}")
    rows = []
    for layer, idx in groups.items():
        for i, neuron in enumerate(idx.tolist()):
            for k in range(best[layer][0].shape[1]):
                rows.append({"layer": layer, "neuron": neuron, "activation": float(best[layer][0][i, k]),
                             "window": int(best[layer][1][i, k]), "position": int(positions[layer][i, k])})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Trim:
    """The shortest kept suffix ``ids[start:]`` of a prompt truncated at its max-activating token."""

    start: int
    activation: float  # at the last token of the kept suffix
    original: float  # at the last token of the untrimmed prompt
    method: str  # "binary", "linear" (asked for, or a verification probe contradicted monotonicity), "none"
    passes: int


def trim_prompt(session: ModelSession, ids: list[int], layer: int, neuron: int, keep: float = TRIM_KEEP,
               method: str = "binary", checks: int = VERIFY_PROBES) -> Trim:
    """[pos] content ids ending at the max-activating token -> the shortest suffix whose activation at its
    last token is > keep x the original.

    ``method="linear"`` scans suffixes shortest first (exact by definition). ``"binary"`` searches the start
    assuming longer suffixes keep more, then verifies that assumption with ``checks`` extra probes spread
    over the shorter suffixes; if any of them also passes, it falls back to the linear scan."""
    if not 0 < keep < 1:
        raise ValueError("The kept fraction must lie strictly between 0 and 1.")
    if method not in ("binary", "linear"):
        raise ValueError("The trimming method is 'binary' or 'linear'.")
    probes: dict[int, float] = {}

    def act(start: int) -> float:
        if start not in probes:
            probes[start] = float(neuron_acts(session, ids[start:], [layer])[layer][-1, neuron])
        return probes[start]

    original, n = act(0), len(ids)
    if original <= 0:  # nothing positive to keep: leave the prompt whole
        return Trim(0, original, original, "none", len(probes))
    threshold = keep * original
    if method == "binary":
        lo, hi = 0, n  # act(lo) > threshold; the empty suffix (hi = n) is not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if act(mid) > threshold else (lo, mid)
        shorter = range(lo + 2, n)  # lo + 1 = hi was probed by the search
        step = max(1, len(shorter) // checks) if checks else len(shorter) + 1
        if not any(act(start) > threshold for start in list(shorter)[::-1][::step][:checks]):
            return Trim(lo, probes[lo], original, "binary", len(probes))
    for start in range(n - 1, -1, -1):
        if act(start) > threshold:
            return Trim(start, probes[start], original, "linear", len(probes))
    raise AssertionError("act(0) > threshold, so the scan always returns")


def trimmed_rows(session: ModelSession, windows: list[list[int]], tops: pd.DataFrame,
                  neurons: pd.DataFrame, params: ScanParams, progress: Progress) -> list[dict]:
    vocab = session.vocab_strings()
    tokens = {(r.layer, r.neuron): (r.token_id, r.token) for r in neurons.itertuples()}
    rows, total = [], max(1, len(tops))
    for k, top in enumerate(tops.sort_values(["layer", "neuron", "activation"],
                                             ascending=[True, True, False]).itertuples()):
        progress(k / total, f"trimming prompt {k + 1}/{total} (layer {top.layer}, neuron {top.neuron})")
        ids = windows[top.window][:top.position + 1]
        trim = trim_prompt(session, ids, top.layer, top.neuron, params.keep, params.trim)
        kept = ids[trim.start:]
        token_id, token = tokens[(top.layer, top.neuron)]
        rows.append({"layer": top.layer, "neuron": top.neuron, "token_id": token_id, "token": token,
                     "activation": trim.original, "trimmed_activation": trim.activation,
                     "kept_fraction": trim.activation / trim.original if trim.original else float("nan"),
                     "n_tokens": len(kept), "window": top.window, "position": top.position,
                     "start": trim.start, "trim_method": trim.method, "ids": list(kept),
                     "text": "".join(vocab[i] for i in kept), "last_token": vocab[kept[-1]]})
    return rows


def select_prompts(rows: list[dict], params: ScanParams) -> pd.DataFrame:
    """Drop prompts longer than ``max_tokens`` after trimming or not positive, and repeated trimmed texts;
    keep the first ``top`` per neuron (highest activation first)."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame[(frame.n_tokens <= params.max_tokens) & (frame.activation > 0)]
    frame = frame.drop_duplicates(subset=["layer", "neuron", "text"])  # repeated passages would weigh twice
    frame = frame.groupby(["layer", "neuron"], group_keys=False).head(params.top).copy()
    frame["prompt"] = frame.groupby(["layer", "neuron"]).cumcount()
    return frame.reset_index(drop=True)


def compute_prompts(session: ModelSession, neurons: pd.DataFrame, texts: list[str], params: ScanParams,
                    progress: Progress = no_progress) -> pd.DataFrame:
    """Tidy [neuron x prompt] table of trimmed max-activating prompts (no cache; the cached form is
    :func:`core.analyses.attention_mlp_run.max_activating_prompts`)."""
    if neurons.empty:
        raise ValueError("No neurons to scan: choose other layers or a larger count.")
    windows = corpus_windows(session, texts, params.window)
    tops = scan_top_windows(session, windows, neurons, params.top,
                            lambda f, m: progress(0.7 * f, m))
    rows = trimmed_rows(session, windows, tops, neurons, params, lambda f, m: progress(0.7 + 0.3 * f, m))
    progress(1.0, "done")
    return select_prompts(rows, params)

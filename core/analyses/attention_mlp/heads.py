"""Attention -> MLP, part 2: which attention heads switch a neuron on (direct attribution), the two
"active head" rules, context-dependent heads, and the head-ablation check with the KS test.

The neuron's input direction is W_in column n (GPT-2-style MLPs) or **W_gate row n** (SwiGLU: the neuron
is act(W_gate x) * (W_up x); attribution is onto the gate pre-activation), with the pre-MLP norm's gain
folded in and, for LayerNorm, centred over d_model (which applies the norm's centring exactly). Then, at
the last token, the residual entering the MLP decomposes linearly:

    resid_mid . w = emb . w + sum_{j<b} (sum_h o_{j,h} + b_O) . w + sum_{j<b} mlp_j . w
                    + (sum_h o_{b,h} + b_O) . w                (block b's own attention; sequential blocks)
    pre-activation = resid_mid . w / scale + const    (scale = RMS or std of resid_mid; const = beta.w + b_in)

with b the neuron's 0-based block index (the tensors' index). ``attr(h) = o_h . w`` ignores the per-prompt
scale, as the paper does. Shapes: layer, pos, head, d_model.

Frames follow the app's convention (core/layers.py): ``block`` is the neuron's 1-based block (block l writes
layer l), ``head_block`` the 1-based block of a head, and a head is labelled ``B{head_block}H{head}`` (a 0-based
"L25H3" in TransformerLens' numbering is B26H3 here); functions that index tensors take 0-based indices and say so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core.analyses.attention_mlp.neurons import uses_layernorm
from core.analyses.attention_mlp.params import CONTEXT_BAND, RULE_WORDS
from core.analyses.attention_mlp.passes import ablated_token_probs, model_input
from core.layers import block_of_layer, blocks_of_layers
from core.model.arch import module_weight
from core.model.session import ModelSession

CAPTURE = ("head_z", "attn_out", "mlp_out", "neurons")
ACTIVE_LOW, ACTIVE_HIGH = CONTEXT_BAND
RULES = RULE_WORDS  # code -> words: "top3" (the paper's v1), "sigma2" (v2)


@dataclass(frozen=True)
class NeuronInput:
    """What a neuron reads: ``direction`` [d_model] = gain ⊙ input weight (centred for LayerNorm)."""

    block_index: int  # 0-based (the tensors' index); the frames' block is block_index + 1
    neuron: int
    direction: torch.Tensor  # [d_model]
    constant: float  # beta . w + b_in (LayerNorm), b_in (RMSNorm with a biased projection), else 0
    layernorm: bool
    eps: float
    reads_block_input: bool  # parallel blocks: the MLP reads the block input, not resid after attention


def neuron_input(session: ModelSession, block_index: int, neuron: int) -> NeuronInput:
    """The input direction of ``neuron`` of 0-based block ``block_index``, with the pre-MLP norm folded in
    (see the module docstring)."""
    adapter = session.adapter
    if not adapter.pre_norm:
        raise ValueError("This OPT model normalises after each sublayer (opt-350m style): the residual "
                         "decomposition does not apply to it.")
    if not 0 <= neuron < adapter.d_mlp:
        raise ValueError(f"Neuron {neuron} is outside 0..{adapter.d_mlp - 1}.")
    norm = adapter.mlp_norm(block_index)
    w = adapter.mlp_in_weight(block_index)[:, neuron].detach().float()  # [d_model]
    gain = module_weight(norm).detach().float().to(w.device) if getattr(norm, "weight", None) is not None else None
    folded = w * gain if gain is not None else w.clone()
    layernorm = uses_layernorm(adapter)
    constant = 0.0
    bias = getattr(adapter.mlp_in_modules(block_index)[0], "bias", None)
    if bias is not None:
        constant += float(bias.detach().float()[neuron])
    beta = getattr(norm, "bias", None)
    if beta is not None:
        constant += float(beta.detach().float() @ w)
    if layernorm:
        folded = folded - folded.mean()
    eps = float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-5)))
    return NeuronInput(block_index, neuron, folded, constant, layernorm, eps, adapter.mlp_reads_block_input())


@dataclass(frozen=True)
class Decomposition:
    """One prompt, one neuron, last token. ``heads`` [block_src, head] = attr of heads in the earlier blocks."""

    heads: torch.Tensor
    own_heads: torch.Tensor  # [head] the neuron's own block's attention (zeros for parallel blocks)
    terms: dict[str, float]  # embeddings, attn_bias, mlp, own_attn_bias
    dot: float  # resid_mid . direction (= sum of everything above)
    scale: float
    preact: float  # dot / scale + constant: the neuron's (gate) pre-activation
    activation: float  # the neuron's activation (input of the down projection) from the same pass


def _last_head_writes(session: ModelSession, trace, block_index: int) -> torch.Tensor:
    """[head, d_model] each head of 0-based block ``block_index``: its write into the residual, last position."""
    adapter = session.adapter
    z = trace.head_z[block_index, -1].reshape(adapter.n_heads, adapter.d_head)  # [head, d_head]
    return torch.einsum("hd,hdm->hm", z, adapter.head_out_weight(block_index).detach().float())


def decompose(session: ModelSession, ids: list[int], target: NeuronInput) -> Decomposition:
    """Run ``ids`` (content ids; BOS prepended when the tokenizer uses one) and split the neuron's
    pre-activation at the last token into per-head and other terms."""
    full, _ = model_input(session, ids)
    trace = session.trace(full, capture=CAPTURE)
    w, b = target.direction, target.block_index  # b: 0-based; trace.resid[b] is the stream entering block b
    heads = torch.stack([_last_head_writes(session, trace, j) @ w for j in range(b)]) if b else \
        torch.zeros(0, session.adapter.n_heads)  # [block_src, head]
    attn_total = sum(float(trace.attn_out[j, -1] @ w) for j in range(b))
    terms = {"embeddings": float(trace.resid[0, -1] @ w), "attn_bias": attn_total - float(heads.sum()),
             "mlp": sum(float(trace.mlp_out[j, -1] @ w) for j in range(b))}
    resid_mid = trace.resid[b, -1]  # [d_model]
    own = torch.zeros(session.adapter.n_heads)
    terms["own_attn_bias"] = 0.0
    if not target.reads_block_input:
        resid_mid = resid_mid + trace.attn_out[b, -1]
        own = _last_head_writes(session, trace, b) @ w
        terms["own_attn_bias"] = float(trace.attn_out[b, -1] @ w) - float(own.sum())
    if target.layernorm:
        scale = float(torch.sqrt(resid_mid.var(unbiased=False) + target.eps))
    else:
        scale = float(torch.sqrt(resid_mid.pow(2).mean() + target.eps))
    dot = float(resid_mid @ w)
    return Decomposition(heads, own, terms, dot, scale, dot / scale + target.constant,
                         float(trace.neurons[b, -1, target.neuron]))


# -- active heads -------------------------------------------------------------------------------


def active_top_k(attr: np.ndarray, k: int = 3) -> np.ndarray:
    """[prompt, head] attributions -> [prompt, head] bool: the k largest per prompt (v1)."""
    order = np.argsort(-attr, axis=1, kind="stable")[:, :k]
    active = np.zeros_like(attr, dtype=bool)
    np.put_along_axis(active, order, True, axis=1)
    return active


def active_sigma(attr: np.ndarray, n_sigma: float = 2.0) -> np.ndarray:
    """[prompt, head] -> bool: attr > mean + n_sigma x std over the prompt's heads (v2; sample std, ddof 1)."""
    mean = attr.mean(axis=1, keepdims=True)
    std = attr.std(axis=1, ddof=1, keepdims=True) if attr.shape[1] > 1 else np.zeros_like(mean)
    return attr > mean + n_sigma * std


def active_by_rule(attr: np.ndarray, rule: str) -> np.ndarray:
    if rule == "top3":
        return active_top_k(attr, 3)
    if rule == "sigma2":
        return active_sigma(attr, 2.0)
    raise ValueError(f"Unknown active rule {rule!r}; choose from {', '.join(RULES)}.")


def context_dependent(active: np.ndarray, low: float = ACTIVE_LOW, high: float = ACTIVE_HIGH
                      ) -> tuple[np.ndarray, np.ndarray]:
    """[prompt, head] bool -> ([head] share of prompts active, [head] low <= share <= high)."""
    share = active.mean(axis=0) if active.shape[0] else np.zeros(active.shape[1])
    return share, (share >= low) & (share <= high)


# -- per neuron, over its prompts ----------------------------------------------------------------


def head_label(head_block: int, head: int) -> str:
    """1-based block and head -> 'B{block}H{head}' (the tables' and charts' name of a head)."""
    return f"B{int(head_block)}H{int(head)}"


def head_labels(block: int, n_heads: int) -> list[tuple[int, int]]:
    """(head_block, head), 1-based blocks, of every head in the blocks before 1-based ``block``, in the order of
    the attribution columns."""
    return [(j, h) for j in range(1, block) for h in range(n_heads)]


def neuron_attributions(session: ModelSession, prompts: pd.DataFrame, include_own: bool = False
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One neuron's trimmed prompts -> (long [prompt x head] attributions with both rules' active flags
    and the share/context-dependence columns, [prompt] other terms, scale, pre-activation, activation).

    ``include_own`` adds the neuron's own block's attention heads as candidates (the paper uses the earlier
    blocks only; by default they are reported in the terms table as ``own_heads``)."""
    block, neuron = int(prompts.block.iloc[0]), int(prompts.neuron.iloc[0])
    target = neuron_input(session, block_of_layer(block), neuron)
    n_heads = session.adapter.n_heads
    labels = head_labels(block, n_heads) + ([(block, h) for h in range(n_heads)] if include_own else [])
    if not labels:
        raise ValueError(f"Block {block} has no earlier heads: choose a later block or include its own heads.")
    attrs, term_rows = [], []
    for row in prompts.itertuples():
        dec = decompose(session, list(row.ids), target)
        attrs.append(torch.cat([dec.heads.reshape(-1)] + ([dec.own_heads] if include_own else [])).numpy())
        term_rows.append({"block": block, "neuron": neuron, "prompt": row.prompt, **dec.terms,
                          "own_heads": float(dec.own_heads.sum()), "heads": float(dec.heads.sum()),
                          "resid_dot": dec.dot, "scale": dec.scale, "preact": dec.preact, "activation": dec.activation})
    attr = np.stack(attrs)  # [prompt, head]
    frame = pd.DataFrame({"block": block, "neuron": neuron,
                          "prompt": np.repeat(prompts.prompt.to_numpy(), len(labels)),
                          "head_block": [j for j, _ in labels] * len(prompts),
                          "head": [h for _, h in labels] * len(prompts), "attr": attr.reshape(-1)})
    frame["head_label"] = [head_label(j, h) for j, h in labels] * len(prompts)
    for rule in RULES:
        active = active_by_rule(attr, rule)
        share, dependent = context_dependent(active)
        frame[f"active_{rule}"] = active.reshape(-1)
        frame[f"share_{rule}"] = np.tile(share, len(prompts))
        frame[f"context_{rule}"] = np.tile(dependent, len(prompts))
    return frame, pd.DataFrame(term_rows)


def head_summary(attributions: pd.DataFrame) -> pd.DataFrame:
    """[neuron x head]: mean attribution, share of prompts active and context dependence per rule."""
    keys = ["block", "neuron", "head_block", "head", "head_label"]
    agg = {"mean_attr": ("attr", "mean"), "n_prompts": ("prompt", "nunique")}
    for rule in RULES:
        agg[f"share_{rule}"] = (f"share_{rule}", "first")
        agg[f"context_{rule}"] = (f"context_{rule}", "first")
    return attributions.groupby(keys, as_index=False).agg(**agg)


def neuron_ablation(session: ModelSession, prompts: pd.DataFrame, attributions: pd.DataFrame,
                    heads: list[tuple[int, int]]) -> pd.DataFrame:
    """[prompt x head] drop in p(neuron token) at the last position when the head's z is zeroed, with the
    head's active flags on that prompt. ``heads`` are (head_block, head) with 1-based blocks. The token is the
    neuron's own vocabulary entry (the paper's ``encode(token)[0]`` first sub-token is the same id whenever the
    string re-encodes to it)."""
    if not heads:
        return pd.DataFrame()
    flags = attributions.set_index(["prompt", "head_block", "head"])
    indexed = list(zip(blocks_of_layers(j for j, _ in heads), (h for _, h in heads)))  # 0-based for the hooks
    rows = []
    for row in prompts.itertuples():
        clean, ablated = ablated_token_probs(session, list(row.ids), int(row.token_id), indexed)
        for (j, h), p in zip(heads, ablated):
            hit = flags.loc[(row.prompt, j, h)]
            rows.append({"block": row.block, "neuron": row.neuron, "token": row.token, "prompt": row.prompt,
                         "head_block": j, "head": h, "head_label": head_label(j, h), "p_clean": clean,
                         "p_ablated": p, "drop": clean - p,
                         **{f"active_{rule}": bool(hit[f"active_{rule}"]) for rule in RULES}})
    return pd.DataFrame(rows)


def ks_tests(ablation: pd.DataFrame) -> pd.DataFrame:
    """Per rule: two-sample KS test of drops on active vs inactive prompts, pooled over neuron-heads."""
    from scipy.stats import ks_2samp  # heavy optional: only this statistic needs SciPy

    rows = []
    for rule in RULES:
        if ablation.empty:
            continue
        active = ablation.loc[ablation[f"active_{rule}"], "drop"].to_numpy()
        inactive = ablation.loc[~ablation[f"active_{rule}"], "drop"].to_numpy()
        row = {"rule": rule, "n_active": len(active), "n_inactive": len(inactive),
               "mean_drop_active": float(active.mean()) if len(active) else float("nan"),
               "mean_drop_inactive": float(inactive.mean()) if len(inactive) else float("nan"),
               "ks_d": float("nan"), "p_value": float("nan")}
        if len(active) and len(inactive):
            test = ks_2samp(active, inactive)
            row.update(ks_d=float(test.statistic), p_value=float(test.pvalue))
        rows.append(row)
    return pd.DataFrame(rows)


def context_share(heads: pd.DataFrame) -> pd.DataFrame:
    """Per rule: share of neurons with at least one context-dependent head."""
    rows = []
    for rule in RULES:
        per_neuron = heads.groupby(["block", "neuron"])[f"context_{rule}"].any()
        rows.append({"rule": rule, "neurons": int(per_neuron.size), "with_context_heads": int(per_neuron.sum()),
                     "share": float(per_neuron.mean()) if per_neuron.size else float("nan")})
    return pd.DataFrame(rows)

"""Contributions: what wrote the residual stream at one cell, how much each part pushes a token's logit, and the
information-flow graph that led there.

Layers follow :mod:`core.layers`: residual layer 0 is the embeddings, layer l the stream after block l; blocks are
1-based in every frame (block l writes layer l) and 0-based only where tensors are indexed.

**Decomposition.** In every supported (pre-norm) architecture the residual at (layer l, position p) is a sum:

    resid[l, p] = embeddings[p] + sum_{b <= l} (attn_out[b, p] + mlp_out[b, p])
    attn_out[b, p] = sum_h z[b, p, h] W_O^h + b_O                  (head h's write, plus the output bias)

The "attn" rows are the whole attention writes; the "head" and "attn_bias" rows refine them (the frame's ``whole``
column marks the rows that sum to the residual without double counting; ``fine`` the partition with heads).

**Direct logit attribution (DLA), frozen final-norm scale.** The readout of a residual x is
logit_t = W_U[t] . P(norm(x)) + b_U[t] (P: OPT's ``project_out``, else the identity). The norm is made linear by
freezing its scale at the value the *actual* residual x of the cell has: for LayerNorm sigma = sqrt(var(x) + eps),
part c -> (c - mean(c)) / sigma * gain; for RMSNorm rms = sqrt(mean(x^2) + eps), c -> c / rms * gain. Each part's
DLA is W_U[t] . P(that), and the norm's bias plus the unembedding bias form one separate "constant" part. The DLAs
then sum exactly to the logit lens logit of the cell (the model's real logit at the last layer). Post-norm OPT
(``do_layer_norm_before`` False, opt-350m) normalises after each sublayer, so its stream is no such sum:
ValueError.

**Contribution graph** (after the LLM Transparency Tool, Tufanov et al. 2024, with the proximity weights of
Ferrando & Voita 2024, "Information flow routes"). Each block l is read in two stages, both exact sums:

    attention stage: mid[l, p]   = resid[l-1, p] + sum_{j <= p} a[l, p, j]
                     a[l, p, j]  = sum_h alpha[h, p, j] v_j^h W_O^h + mean_h(alpha[h, p, j]) b_O
    MLP stage:       resid[l, p] = mid[l, p] + mlp_out[l, p]

(the bias is shared among the sources in proportion to the heads' mean attention, so the shares sum to b_O; v_j^h
includes the value bias). A component c of a sum y weighs max(0, ||y||_1 - ||y - c||_1) (proximity), normalised
over the components of y, so the incoming weights of every node sum to 1 (uniform in the degenerate case where all
are 0). Nodes are (layer, position, kind): "resid" (the stream after block ``layer``; 0 = embeddings), "mid" (after
block ``layer``'s attention, before its MLP) and "mlp" (block ``layer``'s MLP output, whose single input edge of
weight 1 comes from what the MLP reads: "mid", or the block input in parallel blocks, GPT-J / NeoX, where "mid" is
the same arithmetic split though the model never holds it). The graph keeps the nodes reached from the target node
by walking back through edges of weight >= the threshold.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core.analyses.lens import resolve_target
from core.layers import layer_label
from core.model.arch import Adapter, module_bias, module_weight, norm_parameters
from core.model.executors import Pass
from core.model.hooks import Capture, residual_site
from core.model.session import ModelSession, Trace

PART_COLUMNS = ["part", "block", "head", "kind", "whole", "fine", "norm", "dla"]
KINDS = ("embed", "attn", "head", "attn_bias", "mlp", "const")
CONSTANT_LABEL = "constant (final-norm bias + unembedding bias)"
FROZEN_NOTE = ("Direct logit attribution through the final norm with its scale frozen at the actual residual's value "
               "(each part is normalised with the residual's own σ / RMS); the norm's bias and the unembedding's bias "
               "form the constant part.")
GRAPH_METHOD = ("Two stages per block (attention: residual skip + one edge per source position, making the "
                "mid-residual; MLP: mid-residual + MLP output, making the block output), each weighted by proximity "
                "max(0, ‖y‖₁ − ‖y − c‖₁) normalised over the stage's components (Ferrando & Voita 2024).")
DEFAULT_THRESHOLD = 0.04
MAX_GRAPH_TOKENS = 512
"""The graph holds every block's attention weights (blocks x heads x positions², float32) and about
blocks x positions² / 2 edges: longer prompts are refused before the pass."""
NODE_KINDS = ("resid", "mid", "mlp")
EDGE_COLUMNS = ["source_layer", "source_position", "source_kind", "target_layer", "target_position", "target_kind",
                "kind", "weight"]
_TILE_FLOATS = 16_000_000  # floats per [blocks, target positions, source, d_model] tile of the proximity products


def check_post_norm(adapter: Adapter) -> None:
    """ValueError for a model whose norms sit after the sublayers (OPT with do_layer_norm_before False)."""
    if not adapter.pre_norm:
        raise ValueError("This OPT model normalises after each sublayer (do_layer_norm_before = False, opt-350m "
                         "style): its residual stream is not a sum of the sublayers' writes, so it cannot be "
                         "decomposed. Use a pre-norm model (e.g. opt-125m, GPT-2, Llama).")


# -- the frozen readout -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrozenReadout:
    """The final norm with its scale frozen at one residual, then OPT's project_out and the unembedding: a linear
    map of a part's vector to logits, plus one constant per token."""

    gain: torch.Tensor  # [d_model]
    bias: torch.Tensor | None  # [d_model] the norm's bias (LayerNorm), None for RMSNorm
    scale: float  # sigma (LayerNorm) or RMS (RMSNorm) of the residual, eps included
    centre: bool  # LayerNorm: parts are centred over d_model
    proj: torch.Tensor | None  # [d_model, d_final] OPT's project_out, else None
    adapter: Adapter

    def normed(self, parts: torch.Tensor) -> torch.Tensor:
        """[..., d_model] -> [..., d_final]: what each part adds to what the unembedding reads (no bias)."""
        x = parts.float()
        if self.centre:
            x = x - x.mean(-1, keepdim=True)
        x = x * self.gain / self.scale
        return x if self.proj is None else x @ self.proj

    def direction(self, token_id: int) -> torch.Tensor:
        """[d_model] g with part . g = that part's DLA to ``token_id``."""
        u = self.adapter.unembed_weight()[int(token_id)].detach().float().cpu()  # [d_final]
        if self.proj is not None:
            u = self.proj @ u
        g = u * self.gain / self.scale
        return g - g.mean() if self.centre else g

    def constant(self, token_id: int) -> float:
        """The norm's bias and the unembedding's bias read as ``token_id``'s logit."""
        value = 0.0
        if self.bias is not None:
            b = self.bias if self.proj is None else self.bias @ self.proj
            value += float(b @ self.adapter.unembed_weight()[int(token_id)].detach().float().cpu())
        ub = module_bias(self.adapter.unembed_module)
        if ub is not None:
            value += float(ub[int(token_id)])
        return value

    def logits(self, vector: torch.Tensor) -> torch.Tensor:
        """[d_model] one part -> [vocab] its direct logit contributions (no constant)."""
        weight = self.adapter.unembed_weight()
        y = self.normed(vector).to(weight.device)
        return (weight.float() @ y).cpu()


def frozen_readout(adapter: Adapter, resid: torch.Tensor) -> FrozenReadout:
    """The readout linearised at the residual ``resid`` [d_model] (its norm scale frozen)."""
    check_post_norm(adapter)
    adapter.weights_here("Direct logit attribution")
    gain, bias, eps = norm_parameters(adapter.final_norm_module)
    x = resid.detach().float().cpu()
    if adapter.layernorm:
        scale = float(torch.sqrt(x.var(unbiased=False) + eps))
    else:
        scale = float(torch.sqrt((x * x).mean() + eps))
    proj = None
    if adapter.final_proj is not None:
        proj = module_weight(adapter.final_proj).detach().float().cpu().T  # nn.Linear [out, in] -> [in, out]
    return FrozenReadout(gain.detach().float().cpu(), None if bias is None else bias.detach().float().cpu(), scale,
                         adapter.layernorm, proj, adapter)


def lens_logits(adapter: Adapter, resid: torch.Tensor) -> torch.Tensor:
    """[d_model] a residual -> [vocab] its logit lens logits (the real final norm and unembedding, float32 CPU)."""
    weight = adapter.unembed_weight()
    with torch.no_grad():
        normed = adapter.final_norm(resid[None].to(adapter.unembed_device, weight.dtype))
        return adapter.unembed(normed)[0].float().cpu()


# -- input checks -------------------------------------------------------------------------------------------------
def _ids(session: ModelSession, prompt_or_trace: str | Trace | torch.Tensor) -> torch.Tensor:
    if isinstance(prompt_or_trace, Trace):
        return prompt_or_trace.input_ids
    if isinstance(prompt_or_trace, torch.Tensor):
        return session._check_ids(prompt_or_trace)
    return session.tokenize(prompt_or_trace)


def check_layer(layer: int, n_layers: int, lowest: int = 0) -> int:
    """``layer`` in lowest..n_layers (0 = embeddings, l = after block l), else ValueError."""
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise ValueError(f"The layer must be a whole number; got {layer!r}.")
    if not lowest <= int(layer) <= n_layers:
        raise ValueError(f"The layer must lie in {lowest}..{n_layers} (layer l = the residual after block l; 0 is "
                         f"the embeddings); got {layer}.")
    return int(layer)


def check_position(position: int, n_pos: int) -> int:
    """``position`` in -n_pos..n_pos-1 (negative from the end) -> its index 0..n_pos-1, else ValueError."""
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
        raise ValueError(f"The position must be a whole number; got {position!r}.")
    if not -n_pos <= int(position) < n_pos:
        raise ValueError(f"The prompt has {n_pos} tokens: the position must lie in 0..{n_pos - 1} (or -{n_pos}..-1 "
                         f"from the end); got {position}.")
    return int(position) % n_pos


def token_id_of(session: ModelSession, token: str | int | None) -> int | None:
    """A typed token (first token of the text) or an id -> a token id (None stays None); ValueError otherwise."""
    if token is None:
        return None
    if isinstance(token, (int, np.integer)) and not isinstance(token, bool):
        if not 0 <= int(token) < session.adapter.d_vocab:
            raise ValueError(f"Token ids lie in 0..{session.adapter.d_vocab - 1}; got {token}.")
        return int(token)
    return resolve_target(session, str(token)).token_id


# -- the decomposition --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decomposition:
    """The residual at (``layer``, ``position``) as parts, with their DLA to ``target`` (and ``other``).

    frame    one row per part (columns :data:`PART_COLUMNS`, + ``dla_other``, ``dla_diff`` with an other token):
             part label, block (1-based; None for embeddings and the constant), head (None unless kind "head"),
             kind (embed, attn, head, attn_bias, mlp, const), whole (rows summing to the residual / logit: embed,
             attn, mlp, const), fine (the same with attn split into head + attn_bias rows), norm (L2 of the part's
             vector; NaN for the constant), dla (logit contribution to the target).
    vectors  [row, d_model] each row's vector (zeros for the constant row)
    logit    the target's logit lens logit at the cell (the real logit at the last layer); ``sum(dla[whole])``
    scale    the frozen final-norm scale (sigma or RMS of the residual)
    residual_error  max |sum of whole parts - residual| / max |residual| (float32 rounding)
    """

    layer: int
    position: int
    token: str
    target_id: int
    target: str
    other_id: int | None
    other: str | None
    frame: pd.DataFrame
    vectors: torch.Tensor
    residual: torch.Tensor
    logit: float
    logit_other: float | None
    scale: float
    residual_error: float
    note: str = FROZEN_NOTE

    def parts(self, heads: bool = False) -> pd.DataFrame:
        """The rows that make the whole: blocks' attention and MLP (``heads``: attention split into heads + bias)."""
        return self.frame[self.frame["fine" if heads else "whole"]].reset_index(drop=True)


def _captures_at(position: int, requests: dict[str, set[int]]) -> tuple[Capture, ...]:
    return tuple(Capture(site, tuple(sorted(blocks)), position=position, row=0) for site, blocks in requests.items()
                 if blocks)


def decompose(session: ModelSession, prompt_or_trace: str | Trace | torch.Tensor, layer: int, position: int,
              target: str | int | None = None, other: str | int | None = None) -> Decomposition:
    """The residual at residual layer ``layer`` (0 = embeddings, l = after block l) and ``position`` (negative from
    the end) split into embeddings, each block's attention (each head's write and the output bias) and MLP, with
    each part's direct logit attribution to ``target`` (typed text, first token; or an id; default: the model's
    final top-1 at the position) and, with ``other``, to ``other`` and the logit difference target - other.

    DLA goes through the final norm with its scale frozen at the cell's actual residual (module docstring): the
    "whole" parts' DLAs sum to the cell's logit lens logit, the model's real logit at the last layer. One forward
    pass, captured at that position only and stopped after the last block it needs. ValueError for bad input
    (before the pass) and for post-norm OPT.
    """
    adapter = session.adapter
    check_post_norm(adapter)
    session.require_local("The contributions analysis")
    n = adapter.n_layers
    layer = check_layer(layer, n)
    ids = _ids(session, prompt_or_trace)
    position = check_position(position, ids.numel())
    target_id, other_id = token_id_of(session, target), token_id_of(session, other)
    requests: dict[str, set[int]] = {"resid_pre": {0}, "resid_post": set(), "attn_z": set(range(layer)),
                                     "attn_out": set(range(layer)), "mlp_out": set(range(layer))}
    site, block = residual_site(layer)
    requests[site].add(block)
    if target_id is None:
        requests["resid_post"].add(n - 1)
    got = session.run(Pass(ids[None], captures=_captures_at(position, requests), stop_early=True)).captured
    resid = got.get(site, block).float()  # [d_model]
    if target_id is None:
        target_id = int(lens_logits(adapter, got.get("resid_post", n - 1)).argmax())
    readout = frozen_readout(adapter, resid)

    labels, blocks, heads, kinds, vectors = ["embeddings"], [None], [None], ["embed"], [got.get("resid_pre", 0)]
    for b in range(layer):
        attn = got.get("attn_out", b)
        z = got.get("attn_z", b).reshape(adapter.n_heads, adapter.d_head)
        w_o = adapter.head_out_weight(b).detach().float().cpu()  # [head, d_head, d_model]
        head_vecs = torch.einsum("hd,hdm->hm", z.float(), w_o)
        bias = adapter.attn_out_bias(b)
        bias = torch.zeros_like(attn) if bias is None else bias.detach().float().cpu()
        labels.append(f"B{b + 1} attention")
        blocks.append(b + 1), heads.append(None), kinds.append("attn"), vectors.append(attn)
        for h in range(adapter.n_heads):
            labels.append(f"B{b + 1}H{h}")
            blocks.append(b + 1), heads.append(h), kinds.append("head"), vectors.append(head_vecs[h])
        labels.append(f"B{b + 1} attn bias")
        blocks.append(b + 1), heads.append(None), kinds.append("attn_bias"), vectors.append(bias)
        labels.append(f"B{b + 1} MLP")
        blocks.append(b + 1), heads.append(None), kinds.append("mlp"), vectors.append(got.get("mlp_out", b))
    vecs = torch.stack([v.float().cpu() for v in vectors] + [torch.zeros_like(resid)])  # + the constant row
    labels.append(CONSTANT_LABEL)
    blocks.append(None), heads.append(None), kinds.append("const")
    kind = np.array(kinds)
    whole = np.isin(kind, ("embed", "attn", "mlp", "const"))
    fine = np.isin(kind, ("embed", "head", "attn_bias", "mlp", "const"))

    def dla(token_id: int) -> tuple[np.ndarray, float]:
        values = (vecs @ readout.direction(token_id)).numpy().astype(float)
        values[-1] = readout.constant(token_id)
        return values, float(lens_logits(adapter, resid)[token_id])

    dla_target, logit = dla(target_id)
    norms = vecs.norm(dim=-1).numpy().astype(float)
    norms[-1] = np.nan
    frame = pd.DataFrame({"part": labels, "block": pd.array(blocks, dtype="Int64"),
                          "head": pd.array(heads, dtype="Int64"), "kind": kinds, "whole": whole, "fine": fine,
                          "norm": norms, "dla": dla_target})
    logit_other = None
    if other_id is not None:
        dla_other, logit_other = dla(other_id)
        frame["dla_other"] = dla_other
        frame["dla_diff"] = dla_target - dla_other
    recon = vecs[torch.from_numpy(whole)].sum(0)
    error = float((recon - resid).abs().max() / resid.abs().max().clamp_min(1e-12))
    vocab = session.vocab_strings()
    return Decomposition(layer=layer, position=position, token=vocab[int(ids[position])], target_id=target_id,
                         target=vocab[target_id], other_id=other_id,
                         other=None if other_id is None else vocab[other_id], frame=frame, vectors=vecs,
                         residual=resid, logit=logit, logit_other=logit_other, scale=readout.scale,
                         residual_error=error)


def top_tokens(session: ModelSession, vector: torch.Tensor, readout: FrozenReadout, k: int = 10) -> pd.DataFrame:
    """The ``k`` tokens a vector promotes most and the ``k`` it suppresses most, read through the frozen readout:
    columns direction (promoted / suppressed), rank, token_id, token, logit (its direct logit contribution)."""
    if not 1 <= int(k) <= 100:
        raise ValueError(f"k must lie in 1..100; got {k}.")
    logits = readout.logits(vector)
    vocab = session.vocab_strings()
    rows = []
    for direction, values in (("promoted", logits.topk(int(k))), ("suppressed", (-logits).topk(int(k)))):
        for rank, (value, i) in enumerate(zip(values.values.tolist(), values.indices.tolist()), start=1):
            rows.append((direction, rank, int(i), vocab[int(i)], float(logits[i])))
    return pd.DataFrame(rows, columns=["direction", "rank", "token_id", "token", "logit"])


# -- per-source attention contributions ---------------------------------------------------------------------------
def _graph_pass(session: ModelSession, ids: torch.Tensor, layer: int) -> tuple:
    """One eager pass: residuals, attention inputs and outputs, MLP outputs of blocks 1..layer, and their attention
    weights -> (resid [layer+1, pos, d], attn_in, attn_out, mlp_out [layer, pos, d], alpha per block
    [head, pos, pos])."""
    blocks = tuple(range(layer))
    captures = (Capture("resid_pre", (0,), row=0), Capture("resid_post", blocks, row=0),
                Capture("attn_in", blocks, row=0), Capture("attn_out", blocks, row=0),
                Capture("mlp_out", blocks, row=0))
    out = session.run(Pass(ids[None], captures=captures, attentions=True))
    got = out.captured
    resid = torch.stack([got.get("resid_pre", 0)] + [got.get("resid_post", b) for b in blocks]).float()
    return (resid, got.stack("attn_in", blocks).float(), got.stack("attn_out", blocks).float(),
            got.stack("mlp_out", blocks).float(), [out.attentions[b][0] for b in blocks])


def _head_writes(adapter: Adapter, block_index: int, attn_in: torch.Tensor) -> torch.Tensor:
    """[pos, head, d_model] u[j, h] = v_j^h W_O^h: what head h writes per unit of attention to source j."""
    values = adapter.head_values(block_index, attn_in)  # [pos, head, d_head]
    w_o = adapter.head_out_weight(block_index).detach().float().cpu()  # [head, d_head, d_model]
    return torch.einsum("jhd,hdm->jhm", values, w_o)


def _bias(adapter: Adapter, block_index: int, d_model: int) -> torch.Tensor:
    bias = adapter.attn_out_bias(block_index)
    return torch.zeros(d_model) if bias is None else bias.detach().float().cpu()


def _sources(alpha: torch.Tensor, writes: torch.Tensor, bias: torch.Tensor, rows: slice) -> torch.Tensor:
    """[tile, src, d_model] the attention's contribution from each source to the target positions ``rows``."""
    a = alpha[:, rows]  # [head, tile, src]
    return torch.einsum("hps,shm->psm", a, writes) + a.mean(0)[..., None] * bias


def attention_sources(session: ModelSession, prompt: str | torch.Tensor, block: int) -> torch.Tensor:
    """[pos, source, d_model] block ``block``'s (1-based) attention output split by source position:
    a[p, j] = sum_h alpha[h, p, j] v_j^h W_O^h + mean_h(alpha[h, p, j]) b_O, so sum_j a[p, j] = attn_out[p].
    Holds pos² x d_model floats: for short prompts (tests, inspection); the graph works in tiles."""
    adapter = session.adapter
    check_post_norm(adapter)
    session.require_local("Per-source attention contributions")
    block = check_layer(block, adapter.n_layers, lowest=1)
    ids = _ids(session, prompt)
    out = session.run(Pass(ids[None], captures=(Capture("attn_in", (block - 1,), row=0),), attentions=True))
    writes = _head_writes(adapter, block - 1, out.captured.get("attn_in", block - 1))
    return _sources(out.attentions[block - 1][0], writes, _bias(adapter, block - 1, adapter.d_model), slice(None))


def proximity(y: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """[..., d] sums and [..., n, d] their components -> [..., n] proximity weights: max(0, ||y||_1 - ||y - c||_1),
    normalised to sum 1 over n (uniform where every weight is 0)."""
    imp = (y.abs().sum(-1)[..., None] - (y[..., None, :] - components).abs().sum(-1)).clamp_min(0)
    total = imp.sum(-1, keepdim=True)
    uniform = torch.full_like(imp, 1.0 / imp.shape[-1])
    return torch.where(total > 0, imp / total.clamp_min(1e-30), uniform)


# -- the contribution graph ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Graph:
    """The information-flow graph to (``layer``, ``position``): kept nodes and edges (weights >= ``threshold``).

    nodes  layer, position, kind (resid / mid / mlp), token, label
    edges  :data:`EDGE_COLUMNS`: source and target node (layer, position, kind), kind (attn: from a source
           position's residual through the attention; skip: the residual connection into mid; resid: mid into the
           block output; mlp: the MLP output into the block output; mlp_in: what the MLP reads), weight
    """

    layer: int
    position: int
    threshold: float
    tokens: tuple[str, ...]
    nodes: pd.DataFrame
    edges: pd.DataFrame
    n_candidates: int  # edges considered (every incoming edge of the nodes that can reach the target)
    method: str = GRAPH_METHOD


def check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) \
            or not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"The threshold must lie in 0..1 (a share of a node's incoming weight); got {threshold!r}.")
    return float(threshold)


def contribution_graph(session: ModelSession, prompt: str | torch.Tensor, target_position: int = -1,
                       layer: int | None = None, threshold: float = DEFAULT_THRESHOLD) -> Graph:
    """The graph of the routes into the residual at (``layer``, ``target_position``) (default: the last layer;
    positions negative from the end), weighted by proximity and pruned at ``threshold`` (module docstring).

    One eager pass (attention weights of blocks 1..layer), then per block the proximity of each stage computed in
    tiles of target positions, positions after the target left out (they cannot reach it). ValueError for bad input
    (before the pass), a prompt over :data:`MAX_GRAPH_TOKENS` tokens, and post-norm OPT.
    """
    adapter = session.adapter
    check_post_norm(adapter)
    session.require_local("The contribution graph")
    n = adapter.n_layers
    layer = n if layer is None else check_layer(layer, n, lowest=1)
    threshold = check_threshold(threshold)
    ids = _ids(session, prompt)
    target_position = check_position(target_position, ids.numel())
    if ids.numel() > MAX_GRAPH_TOKENS:
        raise ValueError(f"The prompt is {ids.numel()} tokens; the contribution graph reads at most "
                         f"{MAX_GRAPH_TOKENS} (it holds every block's attention weights). Shorten it.")
    ids = ids[: target_position + 1]  # later positions cannot reach the target (causal attention)
    resid, attn_in, attn_out, mlp_out, alphas = _graph_pass(session, ids, layer)
    parallel = adapter.mlp_reads_block_input()
    attn_w = _attention_stage(adapter, resid, attn_in, attn_out, alphas)  # [block, pos, 1 + source]
    mlp_w = proximity(resid[1:], torch.stack([resid[:-1] + attn_out, mlp_out], dim=2)).numpy()  # [block, pos, 2]
    edges = _edge_frame(attn_w, mlp_w, parallel)
    kept, nodes = _trace_back(edges, (layer, target_position, "resid"), threshold)
    n_candidates = int(_trace_back(edges, (layer, target_position, "resid"), -1.0)[0].shape[0])
    vocab = session.vocab_strings()
    tokens = tuple(vocab[int(i)] for i in ids)
    node_frame = pd.DataFrame(sorted(nodes, key=lambda x: (x[0], NODE_KINDS.index(x[2]), x[1])),
                              columns=["layer", "position", "kind"])
    node_frame["token"] = [tokens[p] for p in node_frame.position]
    node_frame["label"] = [node_label(row.layer, row.position, row.kind) for row in node_frame.itertuples()]
    return Graph(layer=layer, position=target_position, threshold=threshold, tokens=tokens, nodes=node_frame,
                 edges=kept, n_candidates=n_candidates)


def _attention_stage(adapter: Adapter, resid: torch.Tensor, attn_in: torch.Tensor, attn_out: torch.Tensor,
                     alphas: list[torch.Tensor]) -> np.ndarray:
    """[block, pos, 1 + source] proximity weights of the attention stage: column 0 the residual (skip), column 1 + j
    source j. Several blocks at once while [blocks, pos, pos, d_model] fits :data:`_TILE_FLOATS`, else one block
    at a time in tiles of target positions."""
    n_blocks, n_pos, d_model = attn_out.shape
    values = torch.stack([adapter.head_values(b, attn_in[b]) for b in range(n_blocks)])  # [block, pos, head, d_head]
    w_o = torch.stack([adapter.head_out_weight(b).detach().float().cpu() for b in range(n_blocks)])
    writes = torch.einsum("bjhd,bhdm->bjhm", values, w_o)  # [block, source, head, d_model]
    bias = torch.stack([_bias(adapter, b, d_model) for b in range(n_blocks)])  # [block, d_model]
    alpha = torch.stack(alphas)  # [block, head, pos, source]
    out = np.zeros((n_blocks, n_pos, n_pos + 1))
    per_block = n_pos * n_pos * d_model
    group = max(1, _TILE_FLOATS // per_block)
    tile = n_pos if group > 1 else max(1, _TILE_FLOATS // (n_pos * d_model))
    for b0 in range(0, n_blocks, group):
        bs = slice(b0, min(n_blocks, b0 + group))
        for p0 in range(0, n_pos, tile):
            ps = slice(p0, min(n_pos, p0 + tile))
            a = alpha[bs, :, ps]  # [g, head, t, source]
            src = torch.einsum("bhps,bshm->bpsm", a, writes[bs]) + a.mean(1)[..., None] * bias[bs, None, None]
            skip = resid[bs, ps]  # [g, t, d]  (resid[b] = the input of block b + 1)
            mid = skip + attn_out[bs, ps]
            out[bs, ps] = proximity(mid, torch.cat([skip[:, :, None], src], dim=2)).numpy()
    return out


def _edge_frame(attn_w: np.ndarray, mlp_w: np.ndarray, parallel: bool) -> pd.DataFrame:
    """Every edge of blocks 1..len(attn_w) (:data:`EDGE_COLUMNS`), from the stages' weights."""
    n_blocks, n_pos = mlp_w.shape[:2]
    pp, jj = np.tril_indices(n_pos)  # target p, source j <= p
    parts = []

    def frame(sl, sp, sk, tl, tp, tk, kind, w) -> pd.DataFrame:
        return pd.DataFrame({"source_layer": sl, "source_position": sp, "source_kind": sk, "target_layer": tl,
                             "target_position": tp, "target_kind": tk, "kind": kind, "weight": w})

    blocks = np.arange(1, n_blocks + 1)
    lay_a, p_a, j_a = np.repeat(blocks, len(pp)), np.tile(pp, n_blocks), np.tile(jj, n_blocks)
    parts.append(frame(lay_a - 1, j_a, "resid", lay_a, p_a, "mid", "attn", attn_w[lay_a - 1, p_a, 1 + j_a]))
    lay, pos = np.repeat(blocks, n_pos), np.tile(np.arange(n_pos), n_blocks)
    parts.append(frame(lay - 1, pos, "resid", lay, pos, "mid", "skip", attn_w[lay - 1, pos, 0]))
    parts.append(frame(lay, pos, "mid", lay, pos, "resid", "resid", mlp_w[lay - 1, pos, 0]))
    parts.append(frame(lay, pos, "mlp", lay, pos, "resid", "mlp", mlp_w[lay - 1, pos, 1]))
    parts.append(frame(lay - 1 if parallel else lay, pos, "resid" if parallel else "mid", lay, pos, "mlp", "mlp_in",
                       np.ones(len(lay))))
    return pd.concat(parts, ignore_index=True)


def node_label(layer: int, position: int, kind: str) -> str:
    """e.g. "resid L3 @5", "mid B3 @5" (after block 3's attention), "mlp B3 @5"."""
    if kind == "resid":
        return f"resid {layer_label(layer)} @{position}"
    return f"{kind} B{layer} @{position}"


def _trace_back(edges: pd.DataFrame, target: tuple[int, int, str], threshold: float
                ) -> tuple[pd.DataFrame, set[tuple[int, int, str]]]:
    """The edges with weight >= ``threshold`` on a path into ``target``, and the nodes they reach."""
    strong = edges[edges.weight >= threshold]
    keys = list(zip(strong.target_layer.to_numpy(), strong.target_position.to_numpy(), strong.target_kind.to_numpy()))
    incoming: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        incoming.setdefault((int(key[0]), int(key[1]), str(key[2])), []).append(i)
    src = list(zip(strong.source_layer.to_numpy(), strong.source_position.to_numpy(), strong.source_kind.to_numpy()))
    seen = {target}
    queue = deque([target])
    kept: list[int] = []
    while queue:
        node = queue.popleft()
        for i in incoming.get(node, ()):
            kept.append(i)
            s = (int(src[i][0]), int(src[i][1]), str(src[i][2]))
            if s not in seen:
                seen.add(s)
                queue.append(s)
    frame = strong.iloc[sorted(kept)].reset_index(drop=True)
    for name in ("source_layer", "source_position", "target_layer", "target_position"):
        frame[name] = frame[name].astype(int)
    return frame, seen


def node_tokens(session: ModelSession, prompt: str | torch.Tensor, node: tuple[int, int, str], readout_layer: int,
                k: int = 10) -> pd.DataFrame:
    """The tokens a graph node's vector promotes and suppresses most (:func:`top_tokens`), read through the final
    norm frozen at the residual of (``readout_layer``, the node's position): the graph's target layer.

    A "resid" node's vector is the residual stream there, "mid" the residual after the block's attention, "mlp" the
    MLP's output. One pass at that position, stopped after the last block it needs."""
    adapter = session.adapter
    check_post_norm(adapter)
    n = adapter.n_layers
    layer, position, kind = int(node[0]), int(node[1]), str(node[2])
    if kind not in NODE_KINDS:
        raise ValueError(f"A node kind is one of {', '.join(NODE_KINDS)}; got {kind!r}.")
    check_layer(layer, n, lowest=0 if kind == "resid" else 1)
    readout_layer = check_layer(readout_layer, n)
    ids = _ids(session, prompt)
    position = check_position(position, ids.numel())
    requests: dict[str, set[int]] = {"resid_pre": set(), "resid_post": set(), "attn_out": set(), "mlp_out": set()}
    site, block = residual_site(readout_layer)
    requests[site].add(block)
    if kind == "resid":
        requests[residual_site(layer)[0]].add(residual_site(layer)[1])
    elif kind == "mid":
        requests[residual_site(layer - 1)[0]].add(residual_site(layer - 1)[1])
        requests["attn_out"].add(layer - 1)
    else:
        requests["mlp_out"].add(layer - 1)
    got = session.run(Pass(ids[None], captures=_captures_at(position, requests), stop_early=True)).captured
    if kind == "resid":
        vector = got.get(*residual_site(layer))
    elif kind == "mid":
        vector = got.get(*residual_site(layer - 1)) + got.get("attn_out", layer - 1)
    else:
        vector = got.get("mlp_out", layer - 1)
    return top_tokens(session, vector.float(), frozen_readout(adapter, got.get(site, block)), k)

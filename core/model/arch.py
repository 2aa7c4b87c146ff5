"""The architecture record: ONE table entry per supported model type, and the Adapter that reads it.

An :class:`Architecture` holds every fact the code needs about one ``config.model_type``: where the embeddings,
blocks, final norm and unembedding live, which modules inside a block are the attention, its output projection
and the MLP's input / gate / up / down projections, the norm kind, whether the MLP is gated, whether attention and
MLP run in parallel, how positions enter (learned embeddings or rotary), and what a block's forward needs to run on
its own. Nothing else in Layerscope knows a module path or sniffs a class name or a signature.

An :class:`Adapter` resolves those paths on one loaded causal LM; analyses only ever talk to the adapter (or to
the hook requests of :mod:`core.model.hooks`, which the adapter resolves), never to module paths.

Shapes use one vocabulary: layer, pos, head, d_head, d_model, d_mlp, vocab. ``layer`` arguments of the Adapter are
0-based block indices (``blocks[layer]``); residual layers (:mod:`core.layers`) never reach this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

NormKind = Literal["layernorm", "rmsnorm"]
BLOCK_KWARGS = ("position_ids", "use_cache", "position_embeddings")
"""The keywords :meth:`Adapter.run_blocks` knows how to fill (a block's ``hidden_states`` is passed positionally)."""


@dataclass(frozen=True)
class Architecture:
    """The facts of one model type. Paths are dotted attribute paths (a digit indexes a ModuleList).

    Relative to the model root (the ``*ForCausalLM`` object):
      embed        token embedding (what ``get_input_embeddings()`` returns)
      pos_embed    learned absolute position embedding added to the token embeddings; None for rotary models
      embed_proj   projection after the embeddings (OPT's ``project_in``, None when the sizes agree); else None
      blocks       the ModuleList of decoder blocks
      final_norm   the norm the unembedding reads through
      final_proj   projection after the final norm (OPT's ``project_out``); None when absent
      unembed      the output embedding (what ``get_output_embeddings()`` returns)
      rotary_emb   the module computing the rotary (cos, sin) that every block takes as ``position_embeddings``;
                   None when there is none, or when the attention computes it itself from ``position_ids`` (GPT-J)
    Relative to one block:
      attn         the attention module
      attn_out     its output projection: *input* = per-head outputs [.., head*d_head], *output* = attention's write
      mlp_out      the module whose output is the MLP's write into the residual stream (the MLP, or OPT's fc2)
      mlp_norm     the norm whose output the MLP reads (ln_2, post_attention_layernorm; GPT-J: the shared ln_1)
      mlp_in       the input projection the activation function reads: W_in (c_fc, fc1, ...) or W_gate (gated)
      mlp_up       W_up of a gated (SwiGLU) MLP; None for a plain MLP
      mlp_down     the down projection: *input* = the neuron activations [.., d_mlp]
    Kinds:
      norm         "layernorm" (centring, with bias) or "rmsnorm": every norm of the model is of this kind
      rotary       positions enter through rotary embeddings (some layers may skip them: SmolLM3's NoPE layers)
      parallel     attention and MLP both read the block input (GPT-J; GPT-NeoX unless the config says otherwise)
      parallel_flag  the config attribute that decides ``parallel`` where present (NeoX ``use_parallel_residual``)
      pre_norm_flag  the config attribute that says whether the norms sit before the sublayers (OPT
                   ``do_layer_norm_before``: opt-350m normalises after them); None: always pre-norm
      block_kwargs the keywords (from :data:`BLOCK_KWARGS`) a block's forward takes to run on its own; the hidden
                   state goes positionally; no ``attention_mask`` is passed (see :meth:`Adapter.run_blocks`)
    """

    embed: str
    pos_embed: str | None
    blocks: str
    final_norm: str
    unembed: str
    attn: str
    attn_out: str
    mlp_out: str
    mlp_norm: str
    mlp_in: str
    mlp_up: str | None
    mlp_down: str
    norm: NormKind
    rotary: bool
    rotary_emb: str | None
    parallel: bool
    block_kwargs: tuple[str, ...]
    parallel_flag: str | None = None
    pre_norm_flag: str | None = None
    embed_proj: str | None = None
    final_proj: str | None = None

    @property
    def gated_mlp(self) -> bool:
        """True for SwiGLU MLPs: act(W_gate x) * (W_up x)."""
        return self.mlp_up is not None


_GPT2 = Architecture(
    embed="transformer.wte", pos_embed="transformer.wpe", blocks="transformer.h", final_norm="transformer.ln_f",
    unembed="lm_head", attn="attn", attn_out="attn.c_proj", mlp_out="mlp", mlp_norm="ln_2", mlp_in="mlp.c_fc",
    mlp_up=None, mlp_down="mlp.c_proj", norm="layernorm", rotary=False, rotary_emb=None, parallel=False,
    block_kwargs=("use_cache",),
)
_LLAMA = Architecture(
    embed="model.embed_tokens", pos_embed=None, blocks="model.layers", final_norm="model.norm", unembed="lm_head",
    attn="self_attn", attn_out="self_attn.o_proj", mlp_out="mlp", mlp_norm="post_attention_layernorm",
    mlp_in="mlp.gate_proj", mlp_up="mlp.up_proj", mlp_down="mlp.down_proj", norm="rmsnorm", rotary=True,
    rotary_emb="model.rotary_emb", parallel=False, block_kwargs=("position_ids", "use_cache", "position_embeddings"),
)
_NEOX = Architecture(
    embed="gpt_neox.embed_in", pos_embed=None, blocks="gpt_neox.layers", final_norm="gpt_neox.final_layer_norm",
    unembed="lm_head", attn="attention", attn_out="attention.dense", mlp_out="mlp",
    mlp_norm="post_attention_layernorm", mlp_in="mlp.dense_h_to_4h", mlp_up=None, mlp_down="mlp.dense_4h_to_h",
    norm="layernorm", rotary=True, rotary_emb="gpt_neox.rotary_emb", parallel=True,
    parallel_flag="use_parallel_residual", block_kwargs=("position_ids", "use_cache", "position_embeddings"),
)
_GPTJ = Architecture(
    embed="transformer.wte", pos_embed=None, blocks="transformer.h", final_norm="transformer.ln_f",
    unembed="lm_head", attn="attn", attn_out="attn.out_proj", mlp_out="mlp", mlp_norm="ln_1", mlp_in="mlp.fc_in",
    mlp_up=None, mlp_down="mlp.fc_out", norm="layernorm", rotary=True, rotary_emb=None, parallel=True,
    block_kwargs=("position_ids", "use_cache"),
)
_OPT = Architecture(
    embed="model.decoder.embed_tokens", pos_embed="model.decoder.embed_positions", blocks="model.decoder.layers",
    final_norm="model.decoder.final_layer_norm", unembed="lm_head", attn="self_attn", attn_out="self_attn.out_proj",
    mlp_out="fc2", mlp_norm="final_layer_norm", mlp_in="fc1", mlp_up=None, mlp_down="fc2", norm="layernorm",
    rotary=False, rotary_emb=None, parallel=False, block_kwargs=("position_ids", "use_cache"),
    embed_proj="model.decoder.project_in", final_proj="model.decoder.project_out", pre_norm_flag="do_layer_norm_before",
)

ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": _GPT2,
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,  # + per-head q_norm / k_norm inside the attention: no path of ours changes
    "smollm3": _LLAMA,  # + NoPE layers (config.no_rope_layers): the attention skips the rotary there itself
    "gpt_neox": _NEOX,
    "gptj": _GPTJ,
    "opt": _OPT,
}
"""``config.model_type`` -> its architecture record: the one table of what Layerscope supports."""

def supported_model_types() -> list[str]:
    """The ``config.model_type`` values Layerscope has an architecture record for."""
    return sorted(ARCHITECTURES)


def architecture(model_type: str) -> Architecture:
    """The record of ``model_type``; ValueError naming the supported types otherwise."""
    if model_type not in ARCHITECTURES:
        raise ValueError(f"Layerscope has no adapter for model type '{model_type}'. "
                         f"Supported: {', '.join(supported_model_types())}.")
    return ARCHITECTURES[model_type]


def resolve(root: nn.Module, path: str) -> nn.Module:
    """The module at dotted ``path`` below ``root`` (digits index ModuleLists); None where an attribute is None."""
    module = root
    for part in path.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module



def _linear_weight_in_out(module: nn.Module) -> torch.Tensor:
    """The weight as ``[in, out]``: nn.Linear stores ``[out, in]``, GPT-2's Conv1D ``[in, out]``."""
    if isinstance(module, nn.Linear):
        return module.weight.T
    return module.weight  # transformers' Conv1D


class Adapter:
    """Uniform access to one model's residual-stream pieces, read from its :class:`Architecture` record."""

    def __init__(self, model: nn.Module) -> None:
        model_type = getattr(model.config, "model_type", "?")
        self.model = model
        self.model_type = model_type
        self.arch = architecture(model_type)
        self.blocks: list[nn.Module] = list(resolve(model, self.arch.blocks))
        self.final_norm_module: nn.Module = resolve(model, self.arch.final_norm)
        proj = resolve(model, self.arch.final_proj) if self.arch.final_proj else None
        self.final_proj: nn.Module | None = proj if isinstance(proj, nn.Module) else None
        self.unembed_module: nn.Module = model.get_output_embeddings()
        rotary = resolve(model, self.arch.rotary_emb) if self.arch.rotary_emb else None
        self.rotary_module: nn.Module | None = rotary if isinstance(rotary, nn.Module) else None

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        return int(self.unembed_module.weight.shape[1]) if self.final_proj is None else int(
            _linear_weight_in_out(self.final_proj).shape[0]
        )

    @property
    def d_vocab(self) -> int:
        return int(self.unembed_module.weight.shape[0])

    @property
    def n_heads(self) -> int:
        cfg = self.model.config
        for name in ("num_attention_heads", "n_head"):
            if getattr(cfg, name, None):
                return int(getattr(cfg, name))
        raise ValueError("cannot find the number of attention heads in the config")

    @property
    def d_head(self) -> int:
        return int(_linear_weight_in_out(self.attn_out(0)).shape[0]) // self.n_heads

    @property
    def d_mlp(self) -> int:
        return int(_linear_weight_in_out(self.neurons(0)).shape[0])

    @property
    def context_length(self) -> int:
        cfg = self.model.config
        for name in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = getattr(cfg, name, None)
            if value:
                return int(value)
        return 2048

    # -- kinds ---------------------------------------------------------------------------------
    @property
    def layernorm(self) -> bool:
        """True when the model's norms centre (LayerNorm), False for RMSNorm."""
        return self.arch.norm == "layernorm"

    def mlp_reads_block_input(self) -> bool:
        """True for parallel blocks (GPT-J, GPT-NeoX with use_parallel_residual): the MLP reads the block's
        input, not the residual after the block's own attention."""
        if self.arch.parallel_flag is None:
            return self.arch.parallel
        return bool(getattr(self.model.config, self.arch.parallel_flag, self.arch.parallel))

    @property
    def pre_norm(self) -> bool:
        """True when every norm sits before its sublayer (all supported types, except OPT configs with
        ``do_layer_norm_before = False``, opt-350m style): the residual decompositions assume it."""
        if self.arch.pre_norm_flag is None:
            return True
        return bool(getattr(self.model.config, self.arch.pre_norm_flag, True))

    # -- modules -------------------------------------------------------------------------------
    def block_part(self, part: str, layer: int) -> nn.Module:
        """The module of block ``layer`` (0-based) named by the record field ``part`` ("attn_out", "mlp_in", ...)."""
        path = getattr(self.arch, part)
        if not isinstance(path, str):
            raise ValueError(f"A {self.model_type} block has no '{part}' module.")
        return resolve(self.blocks[layer], path)

    def attn(self, layer: int) -> nn.Module:
        return self.block_part("attn", layer)

    def attn_out(self, layer: int) -> nn.Module:
        return self.block_part("attn_out", layer)

    def mlp_out(self, layer: int) -> nn.Module:
        return self.block_part("mlp_out", layer)

    def neurons(self, layer: int) -> nn.Module:
        """The down projection of block ``layer``: its input holds the neuron activations."""
        return self.block_part("mlp_down", layer)

    def mlp_norm(self, layer: int) -> nn.Module:
        """The norm whose output the MLP of block ``layer`` reads (ln_2, post_attention_layernorm, ...)."""
        return self.block_part("mlp_norm", layer)

    def mlp_in_modules(self, layer: int) -> list[nn.Module]:
        """The MLP's input projections: [c_fc] for GPT-2-style MLPs, [gate_proj, up_proj] when gated."""
        parts = ("mlp_in", "mlp_up") if self.arch.gated_mlp else ("mlp_in",)
        return [self.block_part(part, layer) for part in parts]

    # -- maths ---------------------------------------------------------------------------------
    def final_norm(self, resid: torch.Tensor) -> torch.Tensor:
        """[..., d_model] pre-norm residual -> [..., d_model] what the unembedding reads."""
        normed = self.final_norm_module(resid)
        return self.final_proj(normed) if self.final_proj is not None else normed

    def unembed(self, normed: torch.Tensor) -> torch.Tensor:
        """[..., d_model] after the final norm -> [..., vocab] logits (bias included where present)."""
        return self.unembed_module(normed)

    def head_out_weight(self, layer: int) -> torch.Tensor:
        """[head, d_head, d_model]: each head's slice of the attention output projection."""
        weight = _linear_weight_in_out(self.attn_out(layer))  # [head*d_head, d_model]
        return weight.reshape(self.n_heads, self.d_head, weight.shape[-1])

    def neuron_out_weight(self, layer: int) -> torch.Tensor:
        """[d_mlp, d_model]: each MLP neuron's output direction (row n = neuron n)."""
        return _linear_weight_in_out(self.neurons(layer))

    def mlp_in_weight(self, layer: int) -> torch.Tensor:
        """[d_model, d_mlp]: W_in (GPT-2-style) or W_gate (gated MLPs); column n = neuron n's input."""
        return _linear_weight_in_out(self.mlp_in_modules(layer)[0])

    def mlp_up_weight(self, layer: int) -> torch.Tensor | None:
        """[d_model, d_mlp]: W_up of a gated MLP; None for GPT-2-style MLPs."""
        modules = self.mlp_in_modules(layer)
        return _linear_weight_in_out(modules[1]) if len(modules) > 1 else None

    # -- running blocks on their own -------------------------------------------------------------
    def run_blocks(self, hidden: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """[n, 1, d_model] -> [n, 1, d_model]: blocks start..stop-1 (0-based) applied to n one-position sequences.

        The sequences sit at position 0 (rotary embeddings there are the identity) and attend only to themselves,
        so no attention mask is needed; the record's ``block_kwargs`` say which of position ids, ``use_cache=False``
        and the rotary ``position_embeddings`` each block's forward takes. Call under ``torch.no_grad()``.
        """
        if hidden.ndim != 3 or hidden.shape[1] != 1:
            raise ValueError(f"run_blocks takes one-position sequences [n, 1, d_model]; got {tuple(hidden.shape)}.")
        pos = torch.zeros(hidden.shape[0], 1, dtype=torch.long, device=hidden.device)  # [n, pos=1]
        kwargs: dict = {}
        if "position_ids" in self.arch.block_kwargs:
            kwargs["position_ids"] = pos
        if "use_cache" in self.arch.block_kwargs:
            kwargs["use_cache"] = False
        if "position_embeddings" in self.arch.block_kwargs and self.rotary_module is not None:
            kwargs["position_embeddings"] = self.rotary_module(hidden, pos)  # (cos, sin), each [n, 1, d_rot]
        for block in self.blocks[start:stop]:
            out = block(hidden, **kwargs)
            hidden = out[0] if isinstance(out, (tuple, list)) else out  # [n, 1, d_model]
        return hidden

"""Per-architecture access to the pieces every analysis needs.

An :class:`Adapter` names, for one loaded causal LM, its blocks, its final norm, its unembedding and the
modules whose inputs/outputs are the attention and MLP contributions to the residual stream. Analyses
only ever talk to the adapter, never to module paths.

Shapes use one vocabulary: layer, pos, head, d_head, d_model, d_mlp, vocab.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ArchLayout:
    """Dotted module paths of one architecture family.

    ``blocks`` and ``final_norm`` are relative to the model root; the others are relative to a block.
    ``attn_out`` is the output projection whose *input* is the concatenated per-head outputs and whose
    *output* is the attention's write into the residual stream. ``mlp_out`` is the module whose output
    is the MLP's write; ``neurons`` is the down-projection whose *input* holds the neuron activations.
    """

    blocks: str
    final_norm: str
    attn: str
    attn_out: str
    mlp_out: str
    neurons: str
    gated_mlp: bool = False
    final_proj: str | None = None


_GPT2 = ArchLayout("transformer.h", "transformer.ln_f", "attn", "attn.c_proj", "mlp", "mlp.c_proj")
_LLAMA = ArchLayout(
    "model.layers", "model.norm", "self_attn", "self_attn.o_proj", "mlp", "mlp.down_proj", gated_mlp=True
)
_NEOX = ArchLayout(
    "gpt_neox.layers", "gpt_neox.final_layer_norm", "attention", "attention.dense", "mlp", "mlp.dense_4h_to_h"
)
_GPTJ = ArchLayout("transformer.h", "transformer.ln_f", "attn", "attn.out_proj", "mlp", "mlp.fc_out")
_OPT = ArchLayout(
    "model.decoder.layers", "model.decoder.final_layer_norm", "self_attn", "self_attn.out_proj", "fc2", "fc2",
    final_proj="model.decoder.project_out",
)

LAYOUTS: dict[str, ArchLayout] = {
    "gpt2": _GPT2,
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "smollm3": _LLAMA,
    "gpt_neox": _NEOX,
    "gptj": _GPTJ,
    "opt": _OPT,
}


def supported_model_types() -> list[str]:
    """The ``config.model_type`` values Layerscope has an adapter for."""
    return sorted(LAYOUTS)


def _get(root: nn.Module, path: str) -> nn.Module:
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
    """Uniform access to one model's residual-stream pieces."""

    def __init__(self, model: nn.Module) -> None:
        model_type = getattr(model.config, "model_type", "?")
        if model_type not in LAYOUTS:
            raise ValueError(
                f"Layerscope has no adapter for model type '{model_type}'. "
                f"Supported: {', '.join(supported_model_types())}."
            )
        self.model = model
        self.model_type = model_type
        self.layout = LAYOUTS[model_type]
        self.blocks: list[nn.Module] = list(_get(model, self.layout.blocks))
        self.final_norm_module: nn.Module = _get(model, self.layout.final_norm)
        proj = _get(model, self.layout.final_proj) if self.layout.final_proj else None
        self.final_proj: nn.Module | None = proj if isinstance(proj, nn.Module) else None
        self.unembed_module: nn.Module = model.get_output_embeddings()

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

    # -- modules -------------------------------------------------------------------------------
    def attn(self, layer: int) -> nn.Module:
        return _get(self.blocks[layer], self.layout.attn)

    def attn_out(self, layer: int) -> nn.Module:
        return _get(self.blocks[layer], self.layout.attn_out)

    def mlp_out(self, layer: int) -> nn.Module:
        return _get(self.blocks[layer], self.layout.mlp_out)

    def neurons(self, layer: int) -> nn.Module:
        return _get(self.blocks[layer], self.layout.neurons)

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

    # -- MLP inputs (added for the Attention -> MLP page) ----------------------------------------
    _MLP_IN: dict[str, tuple[str, tuple[str, ...], bool]] = {
        # model_type -> (pre-MLP norm path, MLP input projections (gate first when gated), parallel block)
        "gpt2": ("ln_2", ("mlp.c_fc",), False),
        "llama": ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), False),
        "mistral": ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), False),
        "qwen2": ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), False),
        "qwen3": ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), False),
        "smollm3": ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), False),
        "gpt_neox": ("post_attention_layernorm", ("mlp.dense_h_to_4h",), True),
        "gptj": ("ln_1", ("mlp.fc_in",), True),
        "opt": ("final_layer_norm", ("fc1",), False),
    }

    def mlp_norm(self, layer: int) -> nn.Module:
        """The norm whose output the MLP of block ``layer`` reads (ln_2, post_attention_layernorm, ...)."""
        return _get(self.blocks[layer], self._MLP_IN[self.model_type][0])

    def mlp_in_modules(self, layer: int) -> list[nn.Module]:
        """The MLP's input projections: [c_fc] for GPT-2-style MLPs, [gate_proj, up_proj] when gated."""
        return [_get(self.blocks[layer], path) for path in self._MLP_IN[self.model_type][1]]

    def mlp_in_weight(self, layer: int) -> torch.Tensor:
        """[d_model, d_mlp]: W_in (GPT-2-style) or W_gate (gated MLPs); column n = neuron n's input."""
        return _linear_weight_in_out(self.mlp_in_modules(layer)[0])

    def mlp_up_weight(self, layer: int) -> torch.Tensor | None:
        """[d_model, d_mlp]: W_up of a gated MLP; None for GPT-2-style MLPs."""
        modules = self.mlp_in_modules(layer)
        return _linear_weight_in_out(modules[1]) if len(modules) > 1 else None

    def mlp_reads_block_input(self) -> bool:
        """True for parallel blocks (GPT-J, GPT-NeoX with use_parallel_residual): the MLP reads the block's
        input, not the residual after the block's own attention."""
        parallel = self._MLP_IN[self.model_type][2]
        if self.model_type == "gpt_neox":
            return bool(getattr(self.model.config, "use_parallel_residual", True))
        return parallel

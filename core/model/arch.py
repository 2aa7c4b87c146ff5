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

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Iterator, Literal

import torch
from torch import nn

try:  # optional: only a model spread by accelerate (device "auto-shard") keeps weights offloaded between calls
    from accelerate.utils import align_module_device, has_offloaded_params
except ImportError:  # pragma: no cover - accelerate comes with the app's dependencies
    align_module_device = has_offloaded_params = None

NormKind = Literal["layernorm", "rmsnorm"]
ValueLayout = Literal["split", "gpt2", "neox"]
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
      attn_v       the module whose output holds the value vectors (v_proj, or the fused q/k/v projection)
      mlp_out      the module whose output is the MLP's write into the residual stream (the MLP, or OPT's fc2)
      mlp_norm     the norm whose output the MLP reads (ln_2, post_attention_layernorm; GPT-J: the shared ln_1)
      mlp_in       the input projection the activation function reads: W_in (c_fc, fc1, ...) or W_gate (gated)
      mlp_up       W_up of a gated (SwiGLU) MLP; None for a plain MLP
      mlp_down     the down projection: *input* = the neuron activations [.., d_mlp]
    Kinds:
      norm         "layernorm" (centring, with bias) or "rmsnorm": every norm of the model is of this kind
      v_layout     where the values sit in ``attn_v``'s output: "split" (a value projection of its own, [.., kv_head,
                   d_head], key/value heads repeated to the query heads when fewer), "gpt2" (the last third of
                   c_attn's [q | k | v] output, [.., head, d_head]) or "neox" (query_key_value fused per head:
                   [.., head, 3*d_head] = [q_h | k_h | v_h], the last d_head of each head's slice)
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
    attn_v: str | None = None
    v_layout: ValueLayout = "split"

    @property
    def gated_mlp(self) -> bool:
        """True for SwiGLU MLPs: act(W_gate x) * (W_up x)."""
        return self.mlp_up is not None


_GPT2 = Architecture(
    embed="transformer.wte", pos_embed="transformer.wpe", blocks="transformer.h", final_norm="transformer.ln_f",
    unembed="lm_head", attn="attn", attn_out="attn.c_proj", mlp_out="mlp", mlp_norm="ln_2", mlp_in="mlp.c_fc",
    mlp_up=None, mlp_down="mlp.c_proj", norm="layernorm", rotary=False, rotary_emb=None, parallel=False,
    block_kwargs=("use_cache",), attn_v="attn.c_attn", v_layout="gpt2",
)
_LLAMA = Architecture(
    embed="model.embed_tokens", pos_embed=None, blocks="model.layers", final_norm="model.norm", unembed="lm_head",
    attn="self_attn", attn_out="self_attn.o_proj", mlp_out="mlp", mlp_norm="post_attention_layernorm",
    mlp_in="mlp.gate_proj", mlp_up="mlp.up_proj", mlp_down="mlp.down_proj", norm="rmsnorm", rotary=True,
    rotary_emb="model.rotary_emb", parallel=False, block_kwargs=("position_ids", "use_cache", "position_embeddings"),
    attn_v="self_attn.v_proj",
)
_NEOX = Architecture(
    embed="gpt_neox.embed_in", pos_embed=None, blocks="gpt_neox.layers", final_norm="gpt_neox.final_layer_norm",
    unembed="lm_head", attn="attention", attn_out="attention.dense", mlp_out="mlp",
    mlp_norm="post_attention_layernorm", mlp_in="mlp.dense_h_to_4h", mlp_up=None, mlp_down="mlp.dense_4h_to_h",
    norm="layernorm", rotary=True, rotary_emb="gpt_neox.rotary_emb", parallel=True,
    parallel_flag="use_parallel_residual", block_kwargs=("position_ids", "use_cache", "position_embeddings"),
    attn_v="attention.query_key_value", v_layout="neox",
)
_GPTJ = Architecture(
    embed="transformer.wte", pos_embed=None, blocks="transformer.h", final_norm="transformer.ln_f",
    unembed="lm_head", attn="attn", attn_out="attn.out_proj", mlp_out="mlp", mlp_norm="ln_1", mlp_in="mlp.fc_in",
    mlp_up=None, mlp_down="mlp.fc_out", norm="layernorm", rotary=True, rotary_emb=None, parallel=True,
    block_kwargs=("position_ids", "use_cache"), attn_v="attn.v_proj",
)
_OPT = Architecture(
    embed="model.decoder.embed_tokens", pos_embed="model.decoder.embed_positions", blocks="model.decoder.layers",
    final_norm="model.decoder.final_layer_norm", unembed="lm_head", attn="self_attn", attn_out="self_attn.out_proj",
    mlp_out="fc2", mlp_norm="final_layer_norm", mlp_in="fc1", mlp_up=None, mlp_down="fc2", norm="layernorm",
    rotary=False, rotary_emb=None, parallel=False, block_kwargs=("position_ids", "use_cache"),
    embed_proj="model.decoder.project_in", final_proj="model.decoder.project_out", pre_norm_flag="do_layer_norm_before",
    attn_v="self_attn.v_proj",
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



def execution_device(module: nn.Module, default: torch.device | None = None) -> torch.device:
    """The device ``module``'s forward computes on, where its inputs must be sent.

    On a model spread by accelerate (``device_map``) that is its hook's execution device: offloaded weights sit on
    "meta" between calls, so the parameters cannot say. Otherwise the device of its first real parameter or
    buffer; ``default`` (cpu when None) for a module that has neither."""
    hooks = [getattr(module, "_hf_hook", None)]
    hooks += list(getattr(hooks[0], "hooks", ()))  # accelerate's SequentialHook chains several
    for hook in hooks:
        device = getattr(hook, "execution_device", None)
        if device is not None:
            return torch.device(device)  # accelerate may give a bare GPU index
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.device.type != "meta":
            return tensor.device
    return default if default is not None else torch.device("cpu")


class WeightsElsewhere(ValueError):
    """The model's weights are not on this machine (it runs on NDIF): what needs them must run where they are."""

    def __init__(self, what: str = "This analysis") -> None:
        super().__init__(f"{what} needs the model's weights on this machine, and this model runs on NDIF (its "
                         "weights stay there). On NDIF, use the Lens page's logit lens or `python -m core lens "
                         "--remote`; load the model locally for the rest.")


def module_weight(module: nn.Module) -> torch.Tensor:
    """``module.weight`` with real values: a weight accelerate offloaded (to CPU RAM or disk, "meta" between
    calls) is brought in for the read and returned as a detached copy on the module's execution device."""
    weight = module.weight
    if weight.device.type == "meta" and (has_offloaded_params is None or not has_offloaded_params(module)):
        raise WeightsElsewhere()
    if weight.device.type != "meta":
        return weight
    with align_module_device(module):
        return module.weight.detach().clone()


def loaded_named_parameters(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``model.named_parameters()`` (same names, same order, tied ones once) with real values, also for the weights
    accelerate offloaded ("meta" between calls): each module's are brought in while its items are read, so a
    value is valid until the next item is asked for (copy what must outlive that). For whole-model reads such as
    a weight fingerprint."""
    seen: set[int] = set()
    for prefix, module in model.named_modules():
        direct = [(name, p) for name, p in module.named_parameters(recurse=False) if id(p) not in seen]
        if not direct:
            continue
        seen.update(id(p) for _, p in direct)
        offloaded = has_offloaded_params is not None and has_offloaded_params(module)
        with align_module_device(module) if offloaded else nullcontext():
            for name, _ in direct:  # re-read: bringing weights in replaces the parameter objects
                yield (f"{prefix}.{name}" if prefix else name), getattr(module, name).detach()


def module_bias(module: nn.Module) -> torch.Tensor | None:
    """``module.bias`` with real values (brought in like :func:`module_weight`), or None when it has none."""
    bias = getattr(module, "bias", None)
    if not isinstance(bias, torch.Tensor):
        return None
    if bias.device.type != "meta":
        return bias
    if has_offloaded_params is None or not has_offloaded_params(module):
        raise WeightsElsewhere()
    with align_module_device(module):
        return module.bias.detach().clone()


def norm_parameters(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """(gain [d], bias [d] or None, eps) of a LayerNorm or RMSNorm module (``eps`` or ``variance_epsilon``)."""
    eps = getattr(module, "eps", None)
    if eps is None:
        eps = getattr(module, "variance_epsilon", None)
    if eps is None:
        raise ValueError(f"Cannot read the epsilon of the norm {type(module).__name__}.")
    return module_weight(module), module_bias(module), float(eps)


def _in_out_shape(module: nn.Module) -> tuple[int, int]:
    """``(in, out)`` sizes of a linear layer (nn.Linear or Conv1D), read from the weight's shape alone (also on meta)."""
    shape = tuple(module.weight.shape)
    return (shape[1], shape[0]) if isinstance(module, nn.Linear) else (shape[0], shape[1])


def _linear_weight_in_out(module: nn.Module) -> torch.Tensor:
    """The weight as ``[in, out]``: nn.Linear stores ``[out, in]``, GPT-2's Conv1D ``[in, out]``."""
    if isinstance(module, nn.Linear):
        return module_weight(module).T
    return module_weight(module)  # transformers' Conv1D


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
        self.weights_elsewhere = False  # set by a session whose model runs on NDIF

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        return int(self.unembed_module.weight.shape[1]) if self.final_proj is None else int(
            _in_out_shape(self.final_proj)[0]
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
        return int(_in_out_shape(self.attn_out(0))[0]) // self.n_heads

    @property
    def d_mlp(self) -> int:
        return int(_in_out_shape(self.neurons(0))[0])

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
    def weights_here(self, what: str = "This analysis") -> None:
        """WeightsElsewhere when the model's weights are not on this machine (a model run on NDIF)."""
        if self.weights_elsewhere:
            raise WeightsElsewhere(what)

    def final_norm(self, resid: torch.Tensor) -> torch.Tensor:
        """[..., d_model] pre-norm residual -> [..., d_model] what the unembedding reads (computed on the norm's
        device: on a model spread over devices it may not be where ``resid`` is)."""
        self.weights_here("Reading a residual through the final norm")
        normed = self.final_norm_module(resid.to(execution_device(self.final_norm_module)))
        if self.final_proj is None:
            return normed
        return self.final_proj(normed.to(execution_device(self.final_proj)))

    def unembed(self, normed: torch.Tensor) -> torch.Tensor:
        """[..., d_model] after the final norm -> [..., vocab] logits (bias included where present), computed
        where the unembedding lives (:attr:`unembed_device`)."""
        self.weights_here("Unembedding a residual")
        return self.unembed_module(normed.to(self.unembed_device))

    @property
    def embed_device(self) -> torch.device:
        """Where the token embedding runs: the device a forward pass's input ids go to (the model's own
        execution device when the embedding's weights are offloaded and carry no hook of their own)."""
        return execution_device(self.model.get_input_embeddings(), execution_device(self.model))

    @property
    def unembed_device(self) -> torch.device:
        """Where the unembedding runs: lens products are computed there."""
        return execution_device(self.unembed_module, execution_device(self.model))

    def unembed_weight(self) -> torch.Tensor:
        """[vocab, d_model] the unembedding matrix with real values (brought in when accelerate offloaded it)."""
        self.weights_here("Reading the unembedding")
        return module_weight(self.unembed_module)

    def head_out_weight(self, layer: int) -> torch.Tensor:
        """[head, d_head, d_model]: each head's slice of the attention output projection."""
        self.weights_here("Reading block weights")
        weight = _linear_weight_in_out(self.attn_out(layer))  # [head*d_head, d_model]
        return weight.reshape(self.n_heads, self.d_head, weight.shape[-1])

    def attn_out_bias(self, layer: int) -> torch.Tensor | None:
        """[d_model] the attention output projection's bias of block ``layer`` (0-based), or None without one."""
        self.weights_here("Reading block weights")
        return module_bias(self.attn_out(layer))

    def head_values(self, layer: int, attn_in: torch.Tensor) -> torch.Tensor:
        """[pos, d_model] the attention's input (site "attn_in") of block ``layer`` (0-based) -> [pos, head, d_head]
        each query head's value vectors, bias included, in float32 on the CPU: v_j^h with
        ``sum_j attn[h, p, j] * v_j^h = z[p, h]`` (the per-head outputs, site "attn_z"). Grouped key/value heads
        are repeated to the query heads (head h reads kv head h // (heads / kv_heads)), as the model does."""
        self.weights_here("Reading block weights")
        path = self.arch.attn_v
        if path is None:
            raise ValueError(f"The {self.model_type} record names no value projection.")
        module = resolve(self.blocks[layer], path)
        weight = _linear_weight_in_out(module).detach().float().cpu()  # [d_model, out]
        bias = module_bias(module)
        x = attn_in.detach().float().cpu()
        n_heads, d_head = self.n_heads, self.d_head
        if self.arch.v_layout == "gpt2":  # c_attn: [q | k | v], each d_model wide
            width = weight.shape[1] // 3
            weight = weight[:, 2 * width:]
            bias = None if bias is None else bias[2 * width:]
        out = x @ weight + (0.0 if bias is None else bias.detach().float().cpu())
        if self.arch.v_layout == "neox":  # per head [q_h | k_h | v_h]
            return out.reshape(*out.shape[:-1], n_heads, 3 * d_head)[..., 2 * d_head:]
        values = out.reshape(*out.shape[:-1], -1, d_head)  # [pos, kv_head, d_head]
        n_kv = values.shape[-2]
        if n_heads % n_kv:
            raise ValueError(f"{n_heads} query heads cannot share {n_kv} key/value heads evenly.")
        return values.repeat_interleave(n_heads // n_kv, dim=-2)

    def neuron_out_weight(self, layer: int) -> torch.Tensor:
        """[d_mlp, d_model]: each MLP neuron's output direction (row n = neuron n)."""
        self.weights_here("Reading block weights")
        return _linear_weight_in_out(self.neurons(layer))

    def mlp_in_weight(self, layer: int) -> torch.Tensor:
        """[d_model, d_mlp]: W_in (GPT-2-style) or W_gate (gated MLPs); column n = neuron n's input."""
        self.weights_here("Reading block weights")
        return _linear_weight_in_out(self.mlp_in_modules(layer)[0])

    def mlp_up_weight(self, layer: int) -> torch.Tensor | None:
        """[d_model, d_mlp]: W_up of a gated MLP; None for GPT-2-style MLPs."""
        self.weights_here("Reading block weights")
        modules = self.mlp_in_modules(layer)
        return _linear_weight_in_out(modules[1]) if len(modules) > 1 else None

    # -- running blocks on their own -------------------------------------------------------------
    def run_blocks(self, hidden: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """[n, 1, d_model] -> [n, 1, d_model]: blocks start..stop-1 (0-based) applied to n one-position sequences.

        The sequences sit at position 0 (rotary embeddings there are the identity) and attend only to themselves,
        so no attention mask is needed; the record's ``block_kwargs`` say which of position ids, ``use_cache=False``
        and the rotary ``position_embeddings`` each block's forward takes. Call under ``torch.no_grad()``.
        """
        self.weights_here("Running blocks on their own")
        if hidden.ndim != 3 or hidden.shape[1] != 1:
            raise ValueError(f"run_blocks takes one-position sequences [n, 1, d_model]; got {tuple(hidden.shape)}.")
        pos = torch.zeros(hidden.shape[0], 1, dtype=torch.long, device=hidden.device)  # [n, pos=1]
        kwargs: dict = {}
        if "position_ids" in self.arch.block_kwargs:
            kwargs["position_ids"] = pos
        if "use_cache" in self.arch.block_kwargs:
            kwargs["use_cache"] = False
        if "position_embeddings" in self.arch.block_kwargs and self.rotary_module is not None:
            rotary_at = execution_device(self.rotary_module, hidden.device)
            kwargs["position_embeddings"] = self.rotary_module(hidden.to(rotary_at), pos.to(rotary_at))  # (cos, sin)
        for block in self.blocks[start:stop]:  # on a model spread over devices each block runs on its own
            at = execution_device(block, hidden.device)
            out = block(hidden.to(at), **{k: _to(v, at) for k, v in kwargs.items()})
            hidden = out[0] if isinstance(out, (tuple, list)) else out  # [n, 1, d_model]
        return hidden


def _to(value, device: torch.device):
    """``value`` (a tensor, a tuple of tensors or anything else) with its tensors on ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_to(v, device) for v in value)
    return value

"""Vision (ViT) and speech (Whisper decoder) models behind the same adapter shape as :class:`core.model.arch.Adapter`.

A :class:`ModalAdapter` names the blocks, the final norm and the "unembedding" (ViT: the classifier head
on the class token; Whisper: ``proj_out`` on the decoder), so :class:`core.lenses.LogitLens` reads any
block output of these models exactly as it reads a text model's: ``head(final_norm(resid))``.
A :class:`ModalModel` bundles model, adapter, preprocessing and labels, and captures the residual
stream (pre-final-norm, layer 0 = the block input) in one forward pass through the one hook mechanism
(:mod:`core.model.hooks`: residual sites only, since a ModalAdapter names no modules inside a block).

``load_modal(kind, None)`` builds a tiny seeded random-init model (a demo that needs no weights);
``load_modal(kind, "hub-id-or-folder")`` loads real weights from a local folder or the local Hugging
Face cache (the hub only when reachable). ``trust_remote_code`` is never enabled.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ContextManager, Sequence

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoTokenizer,
    ViTConfig,
    ViTForImageClassification,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
)

from core.cache import weight_fingerprint
from core.model.hooks import Capture, Captured, Patch, hooked, residual_captures
from core.model.loading import hub_reachable

KINDS: tuple[str, ...] = ("vit", "whisper")
TINY_LABEL = "random-init demo: no weights offline"
TINY_VIT_IMAGE = 32
TINY_WHISPER_CHUNK_S = 2  # seconds of audio the tiny Whisper reads (real models read 30 s)
TINY_WHISPER_VOCAB = 512
SAMPLE_RATE = 16_000


class ModalAdapter:
    """blocks / final_norm / unembed / n_layers / d_model / d_vocab of a ViT classifier or Whisper decoder."""

    def __init__(self, blocks: list[nn.Module], final_norm: nn.Module, head: nn.Module) -> None:
        self.blocks = blocks
        self.final_norm_module = final_norm
        self.unembed_module = head

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        return int(self.unembed_module.weight.shape[1])

    @property
    def d_vocab(self) -> int:
        return int(self.unembed_module.weight.shape[0])

    def final_norm(self, resid: torch.Tensor) -> torch.Tensor:
        """[..., d_model] pre-norm residual -> [..., d_model] what the head reads."""
        return self.final_norm_module(resid)

    def unembed(self, normed: torch.Tensor) -> torch.Tensor:
        """[..., d_model] after the final norm -> [..., vocab] logits (classes for ViT, tokens for Whisper)."""
        return self.unembed_module(normed)


def _vit_blocks(model: nn.Module) -> list[nn.Module]:
    vit = model.vit
    if hasattr(vit, "layers"):
        return list(vit.layers)
    return list(vit.encoder.layer)  # older transformers layouts


def vit_adapter(model: nn.Module) -> ModalAdapter:
    """ViTForImageClassification: encoder layers, ``vit.layernorm``, ``classifier``."""
    return ModalAdapter(_vit_blocks(model), model.vit.layernorm, model.classifier)


def whisper_adapter(model: nn.Module) -> ModalAdapter:
    """WhisperForConditionalGeneration: decoder layers, the decoder's ``layer_norm``, ``proj_out``."""
    decoder = model.model.decoder
    return ModalAdapter(list(decoder.layers), decoder.layer_norm, model.proj_out)


@dataclass
class ModalModel:
    """A loaded ViT or Whisper model with its preprocessing, labels and an identity for cache keys.

    ``preprocess`` is a ViT image processor or a Whisper feature extractor; ``tokenizer`` is None for the
    tiny demo (its transcripts are made-up token ids) and for ViT.
    """

    kind: str
    model: nn.Module
    adapter: ModalAdapter
    label: str
    identity: str
    preprocess: Any
    tokenizer: Any = None
    random_init: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers

    def class_name(self, index: int) -> str:
        """Readable name of an output id: an ImageNet-style class or a decoded token."""
        if self.kind == "vit":
            names = getattr(self.model.config, "id2label", None) or {}
            return str(names.get(int(index), f"class {int(index)}"))
        if self.tokenizer is not None:
            return self.tokenizer.decode([int(index)])
        return f"tok{int(index)}"

    def hooks(self, captures: Sequence[Capture] = (), patches: Sequence[Patch] = ()) -> ContextManager[Captured]:
        """The one hook mechanism (:func:`core.model.hooks.hooked`) on this model, under its lock: residual sites."""
        return hooked(self.adapter, self.lock, captures, patches)

    def trace_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[batch, 3, H, W] -> [layer+1, batch, d_model]: the class token's residual (pre-final-norm)."""
        layers = range(self.n_layers + 1)
        with self.hooks(residual_captures(layers, position=0)) as got:
            self.model(pixel_values=pixel_values.to(self.model.dtype))
        return got.residual(layers)

    def trace_audio(self, features: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """[1, mel, frames] log-mel features, [pos] transcript ids -> [layer+1, pos, d_model] decoder residual."""
        layers = range(self.n_layers + 1)
        with self.hooks(residual_captures(layers, row=0)) as got:
            self.model(input_features=features.to(self.model.dtype), decoder_input_ids=ids[None], use_cache=False)
        return got.residual(layers)


# -- tiny random-init demos ------------------------------------------------------------------------
def _seeded(build, seed: int) -> nn.Module:
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = build()
    finally:
        torch.random.set_rng_state(state)
    return model.eval().requires_grad_(False)


def tiny_vit_config(**overrides: Any):
    """A 12-layer ViT on 32x32 images (8x8 patches) with 20 classes: seconds on a CPU."""

    kwargs = dict(image_size=TINY_VIT_IMAGE, patch_size=8, num_channels=3, hidden_size=48, num_hidden_layers=12,
                  num_attention_heads=4, intermediate_size=96, num_labels=20, initializer_range=0.1)
    return ViTConfig(**{**kwargs, **overrides})


def tiny_whisper_config(**overrides: Any):
    """A 2-layer encoder / 12-layer decoder Whisper reading 2 s of audio, vocabulary of 512 made-up tokens."""

    frames = TINY_WHISPER_CHUNK_S * SAMPLE_RATE // 160  # hop length 160 -> 100 frames per second
    kwargs = dict(vocab_size=TINY_WHISPER_VOCAB, num_mel_bins=80, encoder_layers=2, decoder_layers=12, d_model=48,
                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=96, decoder_ffn_dim=96,
                  max_source_positions=frames // 2, max_target_positions=64, decoder_start_token_id=1,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2, init_std=0.1, begin_suppress_tokens=None,
                  suppress_tokens=None)
    return WhisperConfig(**{**kwargs, **overrides})


def tiny_vit(seed: int = 0, **overrides: Any) -> ModalModel:

    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil  # needs Pillow: image input only

    config = tiny_vit_config(**overrides)
    model = _seeded(lambda: ViTForImageClassification(config), seed)
    processor = ViTImageProcessorPil(size={"height": config.image_size, "width": config.image_size})
    return ModalModel("vit", model, vit_adapter(model), f"tiny ViT ({TINY_LABEL}, seed {seed})",
                      f"tiny-vit:{seed}:{sorted(overrides.items())}", processor, None, random_init=True)


def tiny_whisper(seed: int = 0, **overrides: Any) -> ModalModel:


    config = tiny_whisper_config(**overrides)
    model = _seeded(lambda: WhisperForConditionalGeneration(config), seed)
    extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=SAMPLE_RATE,
                                        chunk_length=config.max_source_positions * 2 * 160 // SAMPLE_RATE)
    return ModalModel("whisper", model, whisper_adapter(model), f"tiny Whisper ({TINY_LABEL}, seed {seed})",
                      f"tiny-whisper:{seed}:{sorted(overrides.items())}", extractor, None, random_init=True)


# -- real weights ---------------------------------------------------------------------------------
def _from_pretrained(loader, source: str, **kwargs: Any):
    """Local folder or local HF cache first; the hub only when it answers. ValueError otherwise."""

    path = Path(source).expanduser()
    if source.startswith((".", "/", "~")) and not path.is_dir():
        raise ValueError(f"No model folder at '{source}' (this machine is offline: give a local folder, or leave "
                         "the model field blank for the tiny random-init demo).")
    try:
        return loader.from_pretrained(source, trust_remote_code=False, local_files_only=True, **kwargs)
    except Exception as local_err:  # noqa: BLE001 - not local: try the hub below, or explain
        if path.is_dir() or not hub_reachable():
            raise ValueError(
                f"Could not load '{source}' offline ({type(local_err).__name__}: "
                f"{str(local_err).splitlines()[0][:160] if str(local_err) else ''}). It must be a local folder or "
                "already be in the local Hugging Face cache: no weights can be downloaded here. Leave the "
                "model field blank for the tiny random-init demo."
            ) from local_err
    try:
        return loader.from_pretrained(source, trust_remote_code=False, **kwargs)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"Could not load '{source}' from the hub ({type(err).__name__}). Check the id.") from err


def _expect_type(source: str, kind: str) -> None:

    config = _from_pretrained(AutoConfig, source)
    if getattr(config, "model_type", None) != kind:
        raise ValueError(f"'{source}' is a '{getattr(config, 'model_type', '?')}' model; this section needs a "
                         f"{'ViT image classifier' if kind == 'vit' else 'Whisper speech model'}.")


def load_vit(source: str) -> ModalModel:

    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil  # needs Pillow: image input only


    _expect_type(source, "vit")
    model = _from_pretrained(ViTForImageClassification, source, dtype=torch.float32).eval().requires_grad_(False)
    try:
        processor = _from_pretrained(ViTImageProcessorPil, source)
    except ValueError:  # no preprocessor_config.json: the ViT defaults at the model's resolution
        size = model.config.image_size
        processor = ViTImageProcessorPil(size={"height": size, "width": size})
    return ModalModel("vit", model, vit_adapter(model), source, f"{source}#{weight_fingerprint(model)}", processor)


def load_whisper(source: str) -> ModalModel:



    _expect_type(source, "whisper")
    model = _from_pretrained(WhisperForConditionalGeneration, source, dtype=torch.float32,
                             attn_implementation="eager").eval().requires_grad_(False)
    extractor = _from_pretrained(WhisperFeatureExtractor, source)
    tokenizer = _from_pretrained(AutoTokenizer, source)
    return ModalModel("whisper", model, whisper_adapter(model), source, f"{source}#{weight_fingerprint(model)}",
                      extractor, tokenizer)


@lru_cache(maxsize=2)
def load_modal(kind: str, model: str | None = None, seed: int = 0) -> ModalModel:
    """``kind`` "vit" | "whisper"; ``model`` None/blank = the tiny random-init demo, else a hub id or folder."""
    if kind not in KINDS:
        raise ValueError(f"Unknown modality {kind!r}; choose 'vit' or 'whisper'.")
    source = (model or "").strip()
    if not source:
        return tiny_vit(seed) if kind == "vit" else tiny_whisper(seed)
    return load_vit(source) if kind == "vit" else load_whisper(source)

"""Shared fixtures: an offline tiny tokenizer, tiny random-init models of every supported family, and
the bundled model (integration tests only).

Nothing here touches the network: the tokenizer is trained in memory and the models are built from
configs with :func:`core.model.loading.build_random_twin`.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerFast

from core.model.loading import ModelSpec, build_random_twin
from core.model.session import ModelSession

ARCHS: tuple[str, ...] = ("gpt2", "llama", "mistral", "qwen2", "qwen3", "smollm3", "gpt_neox", "gptj", "opt")
"""Every model family the invariants are checked on: one per entry of core.model.arch.ARCHITECTURES."""

TINY_CONTEXT = 128
TINY_LAYERS = 3
TINY_D_MODEL = 48
TINY_HEADS = 4

_CORPUS = [
    "The capital of France is Paris.",
    "The capital of Italy is Rome, and the capital of Spain is Madrid.",
    "The quick brown fox jumps over the lazy dog.",
    "A transformer reads tokens, mixes them with attention and writes into the residual stream.",
    "Layers after layers refine the prediction of the next token.",
    "Paris is a city in France; Rome is a city in Italy.",
]

# Per family: the config keywords that make a tiny model (sizes use each config's own names).
_TINY_KWARGS: dict[str, dict[str, Any]] = {
    "gpt2": dict(n_layer=TINY_LAYERS, n_embd=TINY_D_MODEL, n_head=TINY_HEADS, n_positions=TINY_CONTEXT,
                 initializer_range=0.1),
    "llama": dict(num_hidden_layers=TINY_LAYERS, hidden_size=TINY_D_MODEL, num_attention_heads=TINY_HEADS,
                  num_key_value_heads=2, intermediate_size=96, max_position_embeddings=TINY_CONTEXT,
                  initializer_range=0.1, tie_word_embeddings=False),
    "mistral": dict(num_hidden_layers=TINY_LAYERS, hidden_size=TINY_D_MODEL, num_attention_heads=TINY_HEADS,
                    num_key_value_heads=2, intermediate_size=96, max_position_embeddings=TINY_CONTEXT,
                    initializer_range=0.1),
    "qwen2": dict(num_hidden_layers=TINY_LAYERS, hidden_size=TINY_D_MODEL, num_attention_heads=TINY_HEADS,
                  num_key_value_heads=2, intermediate_size=96, max_position_embeddings=TINY_CONTEXT,
                  initializer_range=0.1, use_sliding_window=False),
    # qwen3: an explicit head_dim (its default is 128) and the per-head q/k norms of the family
    "qwen3": dict(num_hidden_layers=TINY_LAYERS, hidden_size=TINY_D_MODEL, num_attention_heads=TINY_HEADS,
                  num_key_value_heads=2, head_dim=TINY_D_MODEL // TINY_HEADS, intermediate_size=96,
                  max_position_embeddings=TINY_CONTEXT, initializer_range=0.1, use_sliding_window=False),
    # smollm3: every 3rd block without rotary embeddings (NoPE), so the tiny model has one of each kind
    "smollm3": dict(num_hidden_layers=TINY_LAYERS, hidden_size=TINY_D_MODEL, num_attention_heads=TINY_HEADS,
                    num_key_value_heads=2, intermediate_size=96, max_position_embeddings=TINY_CONTEXT,
                    initializer_range=0.1, no_rope_layer_interval=3, use_sliding_window=False),
    "gpt_neox": dict(num_hidden_layers=TINY_LAYERS, hidden_size=TINY_D_MODEL, num_attention_heads=TINY_HEADS,
                     intermediate_size=96, max_position_embeddings=TINY_CONTEXT, initializer_range=0.1),
    "gptj": dict(n_layer=TINY_LAYERS, n_embd=TINY_D_MODEL, n_head=TINY_HEADS, n_positions=TINY_CONTEXT,
                 rotary_dim=8, initializer_range=0.1),
    # word_embed_proj_dim != hidden_size exercises OPT's project_in / project_out
    "opt": dict(num_hidden_layers=TINY_LAYERS, hidden_size=TINY_D_MODEL, num_attention_heads=TINY_HEADS,
                ffn_dim=96, max_position_embeddings=TINY_CONTEXT, word_embed_proj_dim=32, init_std=0.1),
}


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE (a few hundred tokens) trained in memory on a few sentences."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"]
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def tiny_config(model_type: str, vocab_size: int, **overrides: Any):
    """The config of a tiny ``model_type`` model (the attention kernel is chosen at load: core.model.loading)."""
    kwargs = {**_TINY_KWARGS[model_type], **overrides}
    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, bos_token_id=0, eos_token_id=0,
                                  pad_token_id=0, **kwargs)
    return config


def build_tiny_model(model_type: str, vocab_size: int, seed: int = 0, **overrides: Any) -> PreTrainedModel:
    """A tiny seeded random-init causal LM in eval mode."""
    model = build_random_twin(tiny_config(model_type, vocab_size, **overrides), seed=seed)
    model.eval().requires_grad_(False)
    return model


SessionFactory = Callable[..., ModelSession]


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def make_session(tiny_tokenizer: PreTrainedTokenizerFast) -> SessionFactory:
    """``make_session(model_type, seed=0, **config_overrides)`` -> a ModelSession on a tiny model.

    Sessions with default arguments are shared across the test session (tests must not mutate them;
    monkeypatching that is undone is fine); any override builds a fresh one.
    """
    cache: dict[str, ModelSession] = {}

    def factory(model_type: str, seed: int = 0, **overrides: Any) -> ModelSession:
        vocab = overrides.pop("vocab_size", len(tiny_tokenizer))
        fresh = bool(overrides) or seed != 0 or vocab != len(tiny_tokenizer)
        if not fresh and model_type in cache:
            return cache[model_type]
        model = build_tiny_model(model_type, vocab, seed=seed, **overrides)
        session = ModelSession(model, tiny_tokenizer, ModelSpec(source=f"tiny-{model_type}", seed=seed))
        if not fresh:
            cache[model_type] = session
        return session

    return factory


@pytest.fixture(scope="session")
def tiny_model_factory(tiny_tokenizer: PreTrainedTokenizerFast) -> Callable[..., PreTrainedModel]:
    """``tiny_model_factory(model_type, seed=0, **config_overrides)`` -> a fresh tiny model."""

    def factory(model_type: str, seed: int = 0, **overrides: Any) -> PreTrainedModel:
        vocab = overrides.pop("vocab_size", len(tiny_tokenizer))
        return build_tiny_model(model_type, vocab, seed=seed, **overrides)

    return factory


@pytest.fixture(params=ARCHS)
def arch_session(request: pytest.FixtureRequest, make_session: SessionFactory) -> ModelSession:
    """The shared tiny session of each family in turn."""
    return make_session(request.param)


@pytest.fixture(scope="session")
def bundled_session() -> ModelSession:
    """The real bundled SmolLM2-135M (converted once into cache/models; later loads take about 1 s)."""
    return ModelSession.load(ModelSpec())

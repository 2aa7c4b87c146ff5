"""The learned lenses' training settings (TrainingConfig).

Torch-free: ``python -m core train-lens`` takes its defaults from here before torch loads; core.lenses.training
imports TrainingConfig from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainingConfig:
    """Tokens for the closed-form fit (``n_train_tokens`` of ``seq_len``-token texts), the wall-clock budget of
    the KL refinement (``kl_seconds``, batches of ``batch_tokens``, learning rate ``lr``) and the held-out
    evaluation (``n_eval_texts`` of ``eval_seq_len`` tokens)."""

    corpus: str = "wikipedia"
    n_train_tokens: int = 12_288
    seq_len: int = 256
    kl_seconds: float = 120.0
    batch_tokens: int = 96
    lr: float = 1e-3
    n_eval_texts: int = 8
    eval_seq_len: int = 128
    seed: int = 0

"""Training the learned lenses: residuals collected in batches, a least-squares start, then KL refinement."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict
from typing import Sequence

import numpy as np
import torch
from tuned_lens.nn import TunedLens as PackageTunedLens

from core.data import corpus_texts, lens_training_texts
from core.lenses.learned import AffineLens, TrainedLenses, TunedLens, new_package_lens
from core.lenses.logit import LogitLens
from core.lenses.params import TrainingConfig  # torch-free (the CLI's defaults)
from core.lenses.stats import lens_stats
from core.model.batch import iter_traces
from core.model.session import ModelSession
from core.progress import Progress, no_progress

log = logging.getLogger(__name__)


# -- data ------------------------------------------------------------------------------------------
def collect_residuals(session: ModelSession, texts: Sequence[str], n_tokens: int, seq_len: int,
                      progress: Progress = no_progress) -> torch.Tensor:
    """-> [layer+1, token, d_model] residuals of positions 1.. of each text, up to ``n_tokens``.

    The texts needed (in order, 8 tokens or more, until ``n_tokens`` are covered) are traced in padded batches
    (:func:`core.model.batch.iter_traces`); their residuals are concatenated in text order.
    """
    chosen = _training_ids(session, texts, n_tokens, seq_len)
    if not chosen:
        raise ValueError("No training text long enough (8 tokens or more).")
    chunks: list[torch.Tensor | None] = [None] * len(chosen)
    total = 0
    for k, trace in iter_traces(session, chosen):
        chunks[k] = trace.resid[:, 1:]  # [layer+1, pos-1, d_model]
        total += chunks[k].shape[1]
        progress(min(1.0, total / n_tokens), f"Collecting residuals: {min(total, n_tokens):,}/{n_tokens:,} tokens")
    return torch.cat(chunks, dim=1)[:, :n_tokens]  # type: ignore[arg-type]  # every text was traced


def _training_ids(session: ModelSession, texts: Sequence[str], n_tokens: int, seq_len: int) -> list[torch.Tensor]:
    """[pos] ids of the texts :func:`collect_residuals` reads: in order, cut to ``seq_len``, those with 8 tokens
    or more, until their positions 1.. cover ``n_tokens``."""
    chosen, total = [], 0
    for text in texts:
        ids = session.tokenizer(text, return_tensors="pt").input_ids[0][:seq_len]
        if ids.numel() < 8:
            continue
        chosen.append(ids)
        total += ids.numel() - 1
        if total >= n_tokens:
            break
    return chosen


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-6)


def _lstsq(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[token, d_in], [token, d_out] -> [d_in + 1, d_out] least squares with a bias row."""
    xb = torch.cat([x, torch.ones_like(x[:, :1])], dim=1).double()
    return torch.linalg.lstsq(xb, y.double()).solution.float()


def fit_closed_form(session: ModelSession, resid: torch.Tensor) -> tuple[PackageTunedLens, torch.Tensor]:
    """Least-squares translators (tuned-lens init) and affine maps from ``resid`` [layer+1, token, d]."""
    n = session.adapter.n_layers
    final = resid[-1]
    with torch.no_grad():
        post_norm = session.adapter.final_norm(final.to(session.device)).float().cpu()
    package_lens = new_package_lens(session)
    maps = []
    for layer in range(n):
        h = resid[layer]
        target = final / _rms(final) * _rms(h)  # same direction as the final state, h's scale
        solution = _lstsq(h, target - h)  # translator learns the residual correction
        translator = package_lens.layer_translators[layer]
        translator.weight.data.copy_(solution[:-1].T)
        translator.bias.data.copy_(solution[-1])
        maps.append(_lstsq(h, post_norm))
    return package_lens, torch.stack(maps)


# -- KL refinement ---------------------------------------------------------------------------------
def refine_kl(session: ModelSession, lens: PackageTunedLens, resid: torch.Tensor, cfg: TrainingConfig,
              progress: Progress = no_progress) -> list[float]:
    """Adam on the translators minimising KL(final || lens), for ``cfg.kl_seconds``. -> loss per step."""
    adapter, n = session.adapter, session.adapter.n_layers
    generator = torch.Generator().manual_seed(cfg.seed)
    optimiser = torch.optim.Adam(lens.layer_translators.parameters(), lr=cfg.lr)
    losses, start = [], time.monotonic()
    while time.monotonic() - start < cfg.kl_seconds:
        idx = torch.randint(resid.shape[1], (cfg.batch_tokens,), generator=generator)
        with torch.no_grad():
            final_logp = torch.log_softmax(adapter.unembed(adapter.final_norm(resid[-1, idx])).float(), -1)
            final_p = final_logp.exp()  # [token, vocab]
        optimiser.zero_grad()
        total = 0.0
        for layer in range(n):
            logp = torch.log_softmax(adapter.unembed(adapter.final_norm(
                lens.transform_hidden(resid[layer, idx], layer))).float(), -1)
            loss = (final_p * (final_logp - logp)).sum(-1).mean() / n
            loss.backward()
            total += float(loss.detach()) * n
        optimiser.step()
        losses.append(total / n)
        elapsed = time.monotonic() - start
        progress(min(1.0, elapsed / cfg.kl_seconds), f"KL refinement step {len(losses)}: mean KL {losses[-1]:.3f}")
    return losses


# -- evaluation ------------------------------------------------------------------------------------
def mean_kl_by_layer(session: ModelSession, lens, texts: Sequence[str], seq_len: int) -> np.ndarray:
    """[layer+1] mean KL(final || lens) over positions 1.. of ``texts`` (the held-out measure)."""
    sums, count = None, 0
    prompts = [session.tokenizer(text, return_tensors="pt").input_ids[0][:seq_len] for text in texts]
    for _k, trace in iter_traces(session, prompts):
        stats = lens_stats(session, trace, lens, top_k=1)
        kl = stats.kl_to_final[:, 1:]  # [layer+1, pos-1]
        sums = kl.sum(1) if sums is None else sums + kl.sum(1)
        count += kl.shape[1]
    return sums / max(count, 1)


# -- the whole recipe ------------------------------------------------------------------------------
def training_split(cfg: TrainingConfig) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts): both from the corpus's lens-training tenth, shuffled by seed."""

    texts = lens_training_texts(corpus_texts(cfg.corpus))
    random.Random(cfg.seed).shuffle(texts)
    return texts[cfg.n_eval_texts:], texts[: cfg.n_eval_texts]


def train_lenses(session: ModelSession, train_texts: Sequence[str], eval_texts: Sequence[str],
                 cfg: TrainingConfig = TrainingConfig(), progress: Progress = no_progress) -> TrainedLenses:
    """Collect, fit in closed form, refine by KL, evaluate. Progress goes 0 -> 1 over the four stages."""
    torch.manual_seed(cfg.seed)
    t0 = time.monotonic()
    resid = collect_residuals(session, train_texts, cfg.n_train_tokens, cfg.seq_len,
                              lambda f, m: progress(0.25 * f, m))
    progress(0.25, "Least-squares fit per layer…")
    package_lens, maps = fit_closed_form(session, resid)
    t_fit = time.monotonic() - t0
    losses = refine_kl(session, package_lens, resid, cfg, lambda f, m: progress(0.3 + 0.5 * f, m))
    del resid
    package_lens.layer_translators.requires_grad_(False)
    tuned, affine = TunedLens(session, package_lens), AffineLens(session, maps)
    progress(0.85, "Evaluating on held-out text…")
    kl = {lens.name: mean_kl_by_layer(session, lens, eval_texts, cfg.eval_seq_len).round(4).tolist()
          for lens in (LogitLens(session.adapter), affine, tuned)}
    report = {"config": asdict(cfg), "seconds": round(time.monotonic() - t0, 1),
              "closed_form_seconds": round(t_fit, 1), "kl_steps": len(losses),
              "kl_loss_first_last": [round(losses[0], 4), round(losses[-1], 4)] if losses else [],
              "heldout_kl": kl}
    progress(1.0, "Lenses trained.")
    return TrainedLenses(tuned=tuned, affine=affine, report=report)

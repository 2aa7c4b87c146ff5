"""Learned lenses: Belrose et al.'s tuned lens and the Patchscopes paper's affine baseline.

Training, for a model without a pretrained lens, on the bundled corpus:
1. collect the residual stream of every layer on ``n_train_tokens`` tokens (position 0 excluded: its
   attention-sink state is unlike any other and would dominate a least-squares fit);
2. closed form: per layer, least squares from ``[h_l, 1]`` to the last layer's state (rescaled to h_l's
   RMS; the final norm is scale-invariant) initialises the tuned lens's translator, and least squares
   to the final *post-norm* state is the affine lens;
3. KL refinement: Adam on the translators, minimising KL(final || lens) summed over layers, for a
   fixed wall-clock budget;
4. evaluation on held-out text: mean KL(final || lens) per layer for the logit, affine and tuned lens.

Lenses are saved as safetensors + JSON under ``cache/lenses/``; a user-named lens folder is read only
in that format (never unpickled).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tuned_lens.nn import TunedLens as PackageTunedLens
from tuned_lens.nn import TunedLensConfig

from core.lenses import LogitLens
from core.paths import cache_dir
from core.progress import Progress, no_progress
from core.stats import lens_stats
from core.trace import ModelSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingConfig:
    corpus: str = "wikipedia"
    n_train_tokens: int = 12_288
    seq_len: int = 256
    kl_seconds: float = 120.0
    batch_tokens: int = 96
    lr: float = 1e-3
    n_eval_texts: int = 8
    eval_seq_len: int = 128
    seed: int = 0


class TunedLens:
    """The ``tuned-lens`` package's TunedLens behind Layerscope's Lens protocol.

    Layer l < L reads ``final_norm(h + T_l(h))`` through W_U; the last layer is the model's output.
    """

    name = "tuned"

    @property
    def adapter(self):
        return self.session.adapter

    def __init__(self, session: ModelSession, lens: PackageTunedLens) -> None:
        self.session = session
        self.lens = lens

    @property
    def version(self) -> str:
        """Fingerprint of the translators (cache keys of results computed with this lens)."""
        from core.cache import weight_fingerprint

        return weight_fingerprint(self.lens.layer_translators)

    def logits(self, resid: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        adapter, n = self.session.adapter, self.session.adapter.n_layers
        hidden = torch.stack([self.lens.transform_hidden(resid[i], int(layer)) if layer < n else resid[i]
                              for i, layer in enumerate(layers)])  # [layer, pos, d_model]
        return adapter.unembed(adapter.final_norm(hidden))  # [layer, pos, vocab]: one product for the call


class AffineLens:
    """Least-squares map ``[h_l, 1] @ A_l`` to the final post-norm state, read by W_U (no second norm)."""

    name = "affine"

    @property
    def adapter(self):
        return self.session.adapter

    def __init__(self, session: ModelSession, maps: torch.Tensor) -> None:
        self.session = session
        self.maps = maps  # [layer, d_model + 1, d_model] for layers 0..L-1

    @property
    def version(self) -> str:
        return hashlib.sha256(self.maps.numpy().tobytes()).hexdigest()[:16]

    def logits(self, resid: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        adapter, n = self.session.adapter, self.session.adapter.n_layers
        normed = []  # what W_U reads, per layer: [pos, d_model]
        for i, layer in enumerate(layers):
            h = resid[i]
            if layer < n:
                normed.append(torch.cat([h, torch.ones_like(h[..., :1])], -1) @ self.maps[layer].to(h))
            else:
                normed.append(adapter.final_norm(h))
        return adapter.unembed(torch.stack(normed))  # [layer, pos, vocab]: one product for the call


@dataclass
class TrainedLenses:
    tuned: TunedLens
    affine: AffineLens
    report: dict = field(default_factory=dict)


# -- data ------------------------------------------------------------------------------------------
def collect_residuals(session: ModelSession, texts: Sequence[str], n_tokens: int, seq_len: int,
                      progress: Progress = no_progress) -> torch.Tensor:
    """-> [layer+1, token, d_model] residuals of positions 1.. of each text, up to ``n_tokens``."""
    chunks, total = [], 0
    for text in texts:
        ids = session.tokenizer(text, return_tensors="pt").input_ids[0][:seq_len]
        if ids.numel() < 8:
            continue
        chunks.append(session.trace(ids).resid[:, 1:])
        total += chunks[-1].shape[1]
        progress(min(1.0, total / n_tokens), f"Collecting residuals: {min(total, n_tokens):,}/{n_tokens:,} tokens")
        if total >= n_tokens:
            break
    if not chunks:
        raise ValueError("No training text long enough (8 tokens or more).")
    return torch.cat(chunks, dim=1)[:, :n_tokens]


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


def new_package_lens(session: ModelSession) -> PackageTunedLens:
    """An identity-initialised ``tuned_lens`` TunedLens for this model (any supported architecture)."""
    from tuned_lens.nn.unembed import Unembed

    unembed = Unembed.__new__(Unembed)
    torch.nn.Module.__init__(unembed)
    norm = session.adapter.final_norm_module
    if session.adapter.final_proj is not None:
        norm = torch.nn.Sequential(norm, session.adapter.final_proj)
    unembed.final_norm = norm
    unembed.unembedding = session.adapter.unembed_module
    config = TunedLensConfig(base_model_name_or_path=session.spec.key(), d_model=session.adapter.d_model,
                             num_hidden_layers=session.adapter.n_layers, bias=True)
    lens = PackageTunedLens(unembed, config)
    lens.layer_translators.float()  # never .float() the whole lens: its unembed is the shared model
    lens.layer_translators.requires_grad_(True)
    return lens


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
    for text in texts:
        ids = session.tokenizer(text, return_tensors="pt").input_ids[0][:seq_len]
        stats = lens_stats(session, session.trace(ids), lens, top_k=1)
        kl = stats.kl_to_final[:, 1:]  # [layer+1, pos-1]
        sums = kl.sum(1) if sums is None else sums + kl.sum(1)
        count += kl.shape[1]
    return sums / max(count, 1)


# -- the whole recipe ------------------------------------------------------------------------------
def training_split(cfg: TrainingConfig) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts): both from the corpus's lens-training tenth, shuffled by seed."""
    from core.data import corpus_texts, lens_training_texts

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


# -- storage ---------------------------------------------------------------------------------------
def lens_dir(session: ModelSession) -> Path:
    digest = hashlib.sha256(session.identity().encode()).hexdigest()[:16]
    return cache_dir() / "lenses" / digest


def save_lenses(session: ModelSession, trained: TrainedLenses) -> Path:
    folder = lens_dir(session)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in trained.tuned.lens.layer_translators.state_dict().items()}
    save_file(state, str(folder / "params.safetensors"))
    if trained.affine is not None:
        save_file({"maps": trained.affine.maps.contiguous()}, str(folder / "affine.safetensors"))
    (folder / "config.json").write_text(json.dumps(trained.tuned.lens.config.to_dict()))
    (folder / "report.json").write_text(json.dumps({"model": session.identity(), **trained.report}, indent=1))
    return folder


def import_lenses(session: ModelSession, folder: str | Path) -> Path:
    """Validate a pretrained lens folder (safetensors + config.json) and store it for this model."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"No lens folder at {folder}.")
    loaded = load_lenses(session, folder)
    if loaded is None:
        raise ValueError(f"{folder} holds no params.safetensors: not a lens folder Layerscope can read.")
    loaded.report.setdefault("source", str(folder))
    return save_lenses(session, loaded)


def load_lenses(session: ModelSession, folder: Path | None = None) -> TrainedLenses | None:
    """Lenses saved for this model (or read from ``folder``), else None. Only safetensors are read."""
    folder = Path(folder) if folder else lens_dir(session)
    params = folder / "params.safetensors"
    if not params.is_file():
        if (folder / "params.pt").is_file():
            raise ValueError(f"{folder} holds a pickled lens (params.pt); Layerscope reads lenses only as "
                             "safetensors (params.safetensors + config.json), since pickles can run code.")
        return None
    package_lens = new_package_lens(session)
    try:
        package_lens.layer_translators.load_state_dict(load_file(str(params)))
    except (RuntimeError, KeyError) as err:
        raise ValueError(f"The lens in {folder} does not fit this model: {str(err).splitlines()[0]}") from err
    package_lens.layer_translators.requires_grad_(False)
    maps_file = folder / "affine.safetensors"
    maps = load_file(str(maps_file))["maps"] if maps_file.is_file() else None
    report_file = folder / "report.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    affine = AffineLens(session, maps) if maps is not None else None
    return TrainedLenses(tuned=TunedLens(session, package_lens), affine=affine, report=report)

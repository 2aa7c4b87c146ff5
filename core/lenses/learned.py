"""Learned lenses: Belrose et al.'s tuned lens and the Patchscopes paper's affine baseline, and where they are stored
(``cache/lenses/``, safetensors only)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file
from tuned_lens.nn import TunedLens as PackageTunedLens
from tuned_lens.nn import TunedLensConfig

from core.atomic import replace_folder
from core.cache import weight_fingerprint
from core.model.session import ModelSession
from core.paths import cache_dir

log = logging.getLogger("layerscope")


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

        return weight_fingerprint(self.lens.layer_translators)

    def logits(self, resid: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        adapter, n = self.session.adapter, self.session.adapter.n_layers
        # the translators are float32: a bf16 / fp16 residual is upcast for them and cast back for the unembedding
        hidden = torch.stack([self.lens.transform_hidden(resid[i].float(), int(layer)).to(resid.dtype)
                              if layer < n else resid[i] for i, layer in enumerate(layers)])  # [layer, pos, d_model]
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


def new_package_lens(session: ModelSession) -> PackageTunedLens:
    """An identity-initialised ``tuned_lens`` TunedLens for this model (any supported architecture)."""
    from tuned_lens.nn.unembed import Unembed  # heavy optional: the tuned-lens package only for its Unembed wrapper

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


# -- storage ---------------------------------------------------------------------------------------
def lens_dir(session: ModelSession) -> Path:
    digest = hashlib.sha256(session.identity().encode()).hexdigest()[:16]
    return cache_dir() / "lenses" / digest


def save_lenses(session: ModelSession, trained: TrainedLenses) -> Path:
    """Store the lenses in this model's folder under cache/lenses, atomically (:func:`core.atomic.replace_folder`):
    a crash mid-write leaves the old lenses or none, never a folder that loads half-written."""
    state = {k: v.contiguous() for k, v in trained.tuned.lens.layer_translators.state_dict().items()}

    def fill(folder: Path) -> None:
        save_file(state, str(folder / "params.safetensors"))
        if trained.affine is not None:
            save_file({"maps": trained.affine.maps.contiguous()}, str(folder / "affine.safetensors"))
        (folder / "config.json").write_text(json.dumps(trained.tuned.lens.config.to_dict()))
        (folder / "report.json").write_text(json.dumps({"model": session.identity(), **trained.report}, indent=1))

    return replace_folder(lens_dir(session), fill)


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
    """Lenses saved for this model (or read from ``folder``), else None. Only safetensors are read. A stored lens
    that cannot be read (truncated, corrupted) is logged and reported as not trained (None), so it is trained
    again; a corrupted folder the user named is a ValueError."""
    if folder is None:
        try:
            return _read_lenses(session, lens_dir(session))
        except ValueError as err:
            log.warning("Ignoring the stored lenses in %s (%s); they will be trained again.", lens_dir(session), err)
            return None
    return _read_lenses(session, Path(folder))


def _read_lenses(session: ModelSession, folder: Path) -> TrainedLenses | None:
    params = folder / "params.safetensors"
    if not params.is_file():
        if (folder / "params.pt").is_file():
            raise ValueError(f"{folder} holds a pickled lens (params.pt); Layerscope reads lenses only as "
                             "safetensors (params.safetensors + config.json), since pickles can run code.")
        return None
    package_lens = new_package_lens(session)
    try:
        tensors = load_file(str(params))
    except Exception as err:  # safetensors raises its own error type for a truncated or corrupted file
        raise ValueError(f"{params} cannot be read (truncated or corrupted): {str(err).splitlines()[0]}") from err
    try:
        package_lens.layer_translators.load_state_dict(tensors)
    except (RuntimeError, KeyError) as err:
        raise ValueError(f"The lens in {folder} does not fit this model: {str(err).splitlines()[0]}") from err
    package_lens.layer_translators.requires_grad_(False)
    maps_file = folder / "affine.safetensors"
    report_file = folder / "report.json"
    try:
        maps = load_file(str(maps_file))["maps"] if maps_file.is_file() else None
        report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    except Exception as err:
        raise ValueError(f"{folder} holds a file that cannot be read (truncated or corrupted): "
                         f"{str(err).splitlines()[0]}") from err
    affine = AffineLens(session, maps) if maps is not None else None
    return TrainedLenses(tuned=TunedLens(session, package_lens), affine=affine, report=report)

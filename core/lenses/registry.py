"""Lenses by name: each one's display label, how it is built for a session, whether it must be trained first,
and the identity that ties cached results to it.

Every caller builds a lens here (the app through ui.cached, the command line, the analyses' cache keys), so a
new lens is one entry. Importing this module loads no torch: the command line checks lens names before anything
heavy loads, and a lens's own module is imported only when the lens is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from core.lenses.base import Lens
    from core.lenses.learned import TrainedLenses
    from core.model.session import ModelSession

TrainedSource = Callable[[], "TrainedLenses | None"]  # the learned lenses stored for a session, if any
Builder = Callable[["ModelSession", str, TrainedSource], "Lens"]  # (session, target prompt, trained) -> lens


class LensNotTrained(ValueError):
    """A learned lens was asked for before it was trained for this model (callers add how to train it)."""

    def __init__(self, entry: "LensEntry") -> None:
        self.entry = entry
        super().__init__(f"The {entry.short_label.lower()} is not trained for this model yet.")

    def with_hint(self, how: str) -> str:
        """The message, ending with how to train the lens where this caller can (e.g. the page's panel)."""
        return f"The {self.entry.short_label.lower()} is not trained for this model yet: {how}"


@dataclass(frozen=True)
class LensEntry:
    """One lens: ``name`` (URLs, CLI, cache keys), ``label`` (pickers), ``build``, ``needs_training``
    (tuned, affine: built from the learned lenses stored for the model), ``takes_prompt`` (patchscopes: a
    target prompt, the paper's when none is given) and ``identity`` (lens -> what its cached results depend
    on besides the model)."""

    name: str
    label: str
    build: Builder
    identity: Callable[["Lens"], str]
    needs_training: bool = False
    takes_prompt: bool = False

    @property
    def short_label(self) -> str:
        """The label without its parenthesis, e.g. "Tuned lens"."""
        return self.label.split(" (")[0]


# -- builders (each imports its lens's module: torch loads only when a lens is built) -----------------------------
def _logit(session: "ModelSession", target_prompt: str, trained: TrainedSource) -> "Lens":
    from core.lenses.logit import LogitLens  # torch

    return LogitLens(session.adapter)


def _identity_scope(session: "ModelSession", target_prompt: str, trained: TrainedSource) -> "Lens":
    from core.lenses.patchscope import IDENTITY_PROMPT, identity_patchscope  # torch

    return identity_patchscope(session, target_prompt or IDENTITY_PROMPT)


def _question_scope(session: "ModelSession", target_prompt: str, trained: TrainedSource) -> "Lens":
    from core.lenses.patchscope import QUESTION_PROMPT, question_patchscope  # torch

    return question_patchscope(session, target_prompt or QUESTION_PROMPT)


def _question_bare_scope(session: "ModelSession", target_prompt: str, trained: TrainedSource) -> "Lens":
    from core.lenses.patchscope import QUESTION_PROMPT, question_bare_patchscope  # torch

    return question_bare_patchscope(session, target_prompt or QUESTION_PROMPT)


def _learned(name: str) -> Builder:
    """The builder of learned lens ``name`` ("tuned" or "affine"): read from the stored learned lenses."""
    def build(session: "ModelSession", target_prompt: str, trained: TrainedSource) -> "Lens":
        lenses = trained()
        lens = None if lenses is None else getattr(lenses, name)
        if lens is None:  # never trained, or an imported tuned lens without its affine maps
            raise LensNotTrained(LENSES[name])
        return lens
    return build


# -- identities (what cache keys hold for a lens; unchanged from before the registry, so stored results stay) ------
def _nothing(lens: "Lens") -> str:
    """The logit lens depends on nothing but the model."""
    return ""


def _weights(lens: "Lens") -> str:
    """A learned lens: the fingerprint of its stored weights (TunedLens / AffineLens ``version``)."""
    return str(getattr(lens, "version"))


def _target_prompt(lens: "Lens") -> str:
    """A patchscope: its target prompt (and the sink token put before it, when one is)."""
    sink = getattr(lens, "sink_id", None)
    return str(getattr(lens, "target_prompt")) + ("" if sink is None else f"\x00sink={sink}")


LENSES: dict[str, LensEntry] = {entry.name: entry for entry in (
    LensEntry("logit", "Logit lens", _logit, _nothing),
    LensEntry("tuned", "Tuned lens (Belrose; trained here)", _learned("tuned"), _weights, needs_training=True),
    LensEntry("affine", "Affine lens (least squares, Patchscopes baseline)", _learned("affine"), _weights,
              needs_training=True),
    LensEntry("identity", "Token-identity patchscope", _identity_scope, _target_prompt, takes_prompt=True),
    LensEntry("question", '"?" patchscope (logitscope: sink token + "?", as the seed)', _question_scope,
              _target_prompt, takes_prompt=True),
    LensEntry("question_bare", '"?" patchscope, bare "?" (no sink token)', _question_bare_scope, _target_prompt,
              takes_prompt=True),
)}
NAMES: tuple[str, ...] = tuple(LENSES)
LABELS: dict[str, str] = {name: entry.label for name, entry in LENSES.items()}
LEARNED: tuple[str, ...] = tuple(name for name, entry in LENSES.items() if entry.needs_training)


def lens_entry(name: str) -> LensEntry:
    """The entry of lens ``name``; ValueError naming the lenses there are."""
    if name not in LENSES:
        raise ValueError(f"Unknown lens {name!r}; choose from {', '.join(LENSES)}.")
    return LENSES[name]


def stored_lenses(session: "ModelSession") -> TrainedSource:
    """The learned lenses saved for ``session``'s model (cache/lenses), read when a learned lens is built."""
    def load() -> "TrainedLenses | None":
        from core.lenses.learned import load_lenses  # torch, tuned_lens

        return load_lenses(session)
    return load


def build_lens(session: "ModelSession", name: str, target_prompt: str = "",
               trained: TrainedSource | None = None) -> "Lens":
    """Lens ``name`` for ``session``. ``target_prompt``: a patchscope's ("" = its default); ``trained``: where
    the learned lenses come from (default: those stored for the model). LensNotTrained (a ValueError) when a
    learned lens is asked for before it was trained."""
    entry = lens_entry(name)
    return entry.build(session, target_prompt, trained or stored_lenses(session))


def lens_identity(lens: "Lens") -> str:
    """What results computed with ``lens`` depend on besides the model, for cache keys (the same everywhere):
    "" for the logit lens, the stored weights' fingerprint for a learned lens, the target prompt for a
    patchscope. A lens outside the registry: its ``version`` or else its ``target_prompt`` ("" when neither)."""
    entry = LENSES.get(lens.name)
    if entry is not None:
        return entry.identity(lens)
    return str(getattr(lens, "version", "") or getattr(lens, "target_prompt", ""))

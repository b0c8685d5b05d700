"""The model picker's entries and the lazily loaded predictor they choose (no Qt here).

A :class:`ModelChoice` says how to get a :class:`~napari_sam.predictor.Predictor`: a weights
name of the registry, a file path, or (for scripts and tests) any callable. A
:class:`ModelHolder` loads the chosen one on first use, thread-safely, and keeps it until
the choice (model, device or precision) changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from napari_sam.predictor import Predictor

Loader = Callable[[str, str], Predictor]  # (device, precision) -> Predictor


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model picker.

    label: what the picker shows; source: a weights name or a file path, or None when
    ``loader`` builds the predictor itself; key: identifies the weights in caches.
    """

    label: str
    source: str | None = None
    loader: Loader | None = field(default=None, compare=False)
    key: str = ""

    def load(self, device: str, precision: str) -> Predictor:
        if self.loader is not None:
            return self.loader(device, precision)
        return Predictor.load(self.source, device=device, precision=precision)


def registry_choices() -> list[ModelChoice]:
    """The bundled model first (when shipped), then every named checkpoint with its
    download state in the label."""
    from napari_sam.model.download import BUNDLED, WEIGHTS, availability, default_weights

    default = default_weights()
    out = []
    for name, info in sorted(WEIGHTS.items(), key=lambda kv: (kv[0] != default, kv[0] != BUNDLED)):
        out.append(ModelChoice(f"{name} ({availability(info)})", source=name, key=name))
    return out


def describe(choice: ModelChoice) -> str:
    """A longer description of a registry entry (for a tooltip)."""
    from napari_sam.model.download import WEIGHTS

    info = WEIGHTS.get(choice.source or "")
    if info is None:
        return choice.source or choice.label
    return f"{info.description or info.name} [{info.architecture}] {info.size}".strip()


def file_choice(path: str | Path) -> ModelChoice:
    path = Path(path)
    return ModelChoice(f"{path.name} (file)", source=str(path), key=str(path.resolve()))


class ModelHolder:
    """The predictor for the current (choice, device, precision); loads on first use.

    Two locks: ``_state`` guards the two fields and is only ever held for a moment (the GUI
    thread takes it on every prompt edit), ``_loading`` serialises loads, which may take
    minutes (a download), on worker threads. The GUI thread never waits for a load.
    Predictors it loads leave out-of-memory fallbacks to the widget to report (no warning).
    """

    def __init__(self) -> None:
        self._state = threading.Lock()
        self._loading = threading.Lock()
        self._wanted: tuple[ModelChoice, str, str] | None = None
        self._loaded: tuple[tuple[ModelChoice, str, str], Predictor] | None = None
        #: the chosen model's own predictor while an adapted one is served in its place
        self._base: tuple[tuple[ModelChoice, str, str], Predictor] | None = None

    def choose(self, choice: ModelChoice, device: str = "auto", precision: str = "auto") -> bool:
        """Select what :meth:`predictor` returns; True if that changed the selection."""
        wanted = (choice, device, precision)
        with self._state:
            changed = wanted != self._wanted
            self._wanted = wanted
            if changed and self._base is not None:  # another choice drops the adapted model
                self._loaded, self._base = self._base, None
        return changed

    @property
    def wanted(self) -> tuple[ModelChoice, str, str] | None:
        return self._wanted

    def cached(self) -> Predictor | None:
        """The predictor if the current choice is already loaded, else None (no loading,
        no waiting)."""
        with self._state:
            if self._loaded is not None and self._loaded[0] == self._wanted:
                return self._loaded[1]
        return None

    def use_adapted(self, base: Predictor, adapted: Predictor) -> bool:
        """Serve ``adapted`` (a model adapted from ``base``) for the current choice until
        :meth:`revert` or another choice. False (nothing changed) when ``base`` is not the
        predictor served now: the choice changed while the adaptation ran."""
        with self._state:
            if self._loaded is None or self._loaded[0] != self._wanted or self._loaded[1] is not base:
                return False
            if self._base is None or self._base[0] != self._wanted:
                self._base = self._loaded
            self._loaded = (self._wanted, adapted)
            return True

    @property
    def adapted(self) -> bool:
        """True while an adapted predictor is served for the current choice."""
        with self._state:
            return self._base is not None and self._base[0] == self._wanted and (
                self._loaded is not None and self._loaded[1] is not self._base[1])

    def revert(self) -> Predictor | None:
        """Serve the chosen model's own predictor again; returns it (None when nothing was
        adapted)."""
        with self._state:
            if self._base is None or self._base[0] != self._wanted:
                return None
            self._loaded, self._base = self._base, None
            return self._loaded[1]

    def predictor(self) -> Predictor:
        """Load (once) and return the chosen predictor. Call from a worker thread."""
        with self._loading:
            with self._state:
                wanted = self._wanted
                if wanted is None:
                    raise RuntimeError("choose a model first")
                if self._loaded is not None and self._loaded[0] == wanted:
                    return self._loaded[1]
            predictor = wanted[0].load(wanted[1], wanted[2])
            predictor.warn_on_fallback = False
            with self._state:
                self._loaded = (wanted, predictor)
            return predictor

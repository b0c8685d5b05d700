"""The widget's embeddings: one :class:`~napari_sam.stack_embeddings.StackEmbeddings` per image and model
(no Qt here).

2D images, stacks and large tiled planes share this one path: a (slice, tile) is embedded
once into a store (in memory by default, on disk under a *cache folder*, or a store made by
``napari-sam embed`` that the user opened) and prompting, propagation and the automatic panel
all read it. What to open is decided on the GUI thread (:class:`StackRequest`: layer data,
contrast, where to keep the store); opening reads the data's fingerprint and may need the
model, so it happens on a worker (:meth:`LayerEmbeddings.stack_for`).
"""

from __future__ import annotations

import ast
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from napari_sam.embeddings import EmbeddingStore, SignatureMismatchError, StoreError
from napari_sam.slice_source import SliceSource, fingerprint
from napari_sam.stack_embeddings import PredictorEmbedder, StackEmbeddings

_CONTRAST = ";contrast="


class StoreRefused(StoreError):
    """A store the user chose does not fit the image or model; the message says what differs."""


@dataclass(frozen=True, eq=False)
class StackRequest:
    """What to open for one image layer, read on the GUI thread.

    key: identifies image, data, contrast, model and store (a new key means new
    embeddings); data: the layer's array (level 0 of multiscale), ``(*leading, H, W[, C])``;
    contrast_limits: (low, high) the model sees; folder: keep a store per image there (None:
    in memory); store: a store made elsewhere (``napari-sam embed``) to open instead.
    """

    key: tuple
    data: Any
    rgb: bool
    contrast_limits: tuple[float, float] | None
    name: str
    folder: Path | None = None
    store: Path | None = None

    @property
    def source(self) -> SliceSource:
        return SliceSource(self.data, rgb=self.rgb)


def store_contrast(store: EmbeddingStore) -> tuple[float, float] | None:
    """The contrast limits a store's embeddings were made with (recorded by
    :class:`~napari_sam.stack_embeddings.PredictorEmbedder` in the preprocessing id)."""
    _, found, text = store.signature.preprocessing.partition(_CONTRAST)
    if not found:
        raise StoreRefused(f"{store.path} was not made by a model on images (no contrast "
                           "in its preprocessing)")  # fmt: skip
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise StoreRefused(f"{store.path}: unreadable contrast {text!r}") from None
    return None if value is None else (float(value[0]), float(value[1]))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:40] or "image"


def _describe_mismatch(exc: SignatureMismatchError) -> str:
    words = {"data": "the image data", "model": "the model", "weights": "the weights",
             "preprocessing": "the model's preprocessing", "tile": "the tiling",
             "halo": "the tile halo", "level": "the pyramid level",
             "version": "the napari-sam version", "layout": "the number of slices / tiles"}  # fmt: skip
    found = re.findall(r"(?:\(|; )(\w+): ", str(exc))
    named = [words.get(f, f) for f in dict.fromkeys(found)]
    return ", ".join(named) or "its signature"


def open_stack(request: StackRequest, predictor) -> StackEmbeddings:
    """Open (or create) the embeddings ``request`` asks for; slow (hashes the data for a
    store on disk): call on a worker. Raises :class:`StoreRefused` for a store that was made
    for other data, model or tiling (nothing is changed on disk then)."""
    source = request.source
    if request.store is not None:
        try:
            stored = EmbeddingStore.open(request.store)
        except (FileNotFoundError, StoreError) as exc:
            raise StoreRefused(str(exc)) from None
        sig = stored.signature
        embedder = PredictorEmbedder(predictor, store_contrast(stored), request.rgb or None)
        try:
            return StackEmbeddings.open(source, embedder, request.store, tile=sig.tile,
                                        halo=sig.halo if sig.tile else None,
                                        on_mismatch="error")  # fmt: skip
        except SignatureMismatchError as exc:
            raise StoreRefused(
                f"the embeddings in {request.store} were made for something else: "
                f"{_describe_mismatch(exc)} differ ({exc})"
            ) from None
    embedder = PredictorEmbedder(predictor, request.contrast_limits, request.rgb or None)
    if request.folder is None:
        return StackEmbeddings.open(source, embedder, None,
                                    data_fingerprint=f"layer:{id(request.data)}")  # fmt: skip
    data_id = fingerprint(source)
    ident = embedder.identity
    digest = xxhash.xxh64(repr((data_id, ident.model, ident.weights,
                                ident.preprocessing)).encode()).hexdigest()[:12]  # fmt: skip
    path = Path(request.folder) / f"{_slug(request.name)}-{digest}.zarr"
    path.parent.mkdir(parents=True, exist_ok=True)
    return StackEmbeddings.open(source, embedder, path, on_mismatch="recompute",
                                data_fingerprint=data_id)  # fmt: skip


class LayerEmbeddings:
    """The embeddings of the widget's current image and model (thread safe).

    :meth:`stack_for` opens them on a worker (once per key); :meth:`current` hands them to
    the GUI thread without waiting for an opening in progress.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the two fields below (held briefly)
        self._opening = threading.Lock()  # one opening at a time
        self._key: tuple | None = None
        self._stack: StackEmbeddings | None = None

    def stack_for(self, request: StackRequest, predictor) -> StackEmbeddings:
        """The embeddings for ``request`` (opened now if the key is new)."""
        with self._opening:
            with self._lock:
                if self._key == request.key and self._stack is not None:
                    return self._stack
            stack = open_stack(request, predictor)
            with self._lock:
                self._key, self._stack = request.key, stack
            return stack

    def current(self, key: tuple) -> StackEmbeddings | None:
        """The open embeddings if they are for ``key``, else None."""
        with self._lock:
            return self._stack if self._key == key else None

    def reset(self) -> None:
        with self._lock:
            self._key, self._stack = None, None

    def done(self, key: tuple, index: tuple[int, ...]) -> bool:
        """Whether every tile of slice ``index`` (leading indices) is embedded."""
        stack = self.current(key)
        if stack is None:
            return False
        return bool(stack.is_done()[stack.source.slice_index(index) if index else 0].all())

    def indices(self, key: tuple) -> list[tuple[int, ...]]:
        """Leading indices of the slices whose every tile is embedded, in order."""
        stack = self.current(key)
        if stack is None:
            return []
        full = np.nonzero(stack.is_done().all(axis=1))[0]
        return [stack.source.slice_key(int(s)) for s in full]


class OneSlice:
    """The embeddings of one slice of a stack, seen as a stack of one slice (for work that
    runs on a single plane, e.g. the automatic panel on the displayed slice)."""

    def __init__(self, stack: StackEmbeddings, index: tuple[int, ...]) -> None:
        self._stack, self._flat = stack, stack.source.slice_index(index) if index else 0
        src = stack.source
        self.source = SliceSource(src.data[tuple(index)], rgb=src.rgb)
        self.grid, self.embedder = stack.grid, stack.embedder

    def get(self, slice_index: int, tile: int = 0) -> Any:
        if slice_index != 0:
            raise IndexError(f"one slice: no slice {slice_index}")
        return self._stack.get(self._flat, tile)

"""Embeddings of a whole stack, tiled, computed on demand: the displayed slice first.

:class:`StackEmbeddings` ties a lazy image (:class:`~napari_sam.slice_source.SliceSource`), a tile
grid, an embedder and an :class:`~napari_sam.embeddings.EmbeddingStore`. ``get(s, t)`` serves
from a small in-memory cache, else from the store, else embeds that one tile of that one
slice and publishes it. :func:`napari_sam.scaleout.embed_all` computes everything at once.

A stored embedding is served only for the pixels it was made from: each records the
:func:`~napari_sam.slice_source.content_hash` of its slice / tile window, and ``get`` hashes the window
as it is now before serving it. An embedding whose pixels changed (an edit that the sampled
data fingerprint of a big stack cannot see) is recomputed and replaced in the store.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import torch

from napari_sam.embeddings import EmbeddingStore, StoreError, StoreLayout, StoreSignature
from napari_sam.lru import LRU
from napari_sam.slice_source import SliceSource, content_hash, fingerprint
from napari_sam.tile_grid import Box, TileGrid, default_grid
from napari_sam.zoom import window_cache

E = TypeVar("E")
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedderIdentity:
    """What an embedder's output depends on, known before embedding anything.

    ``model``: architecture name; ``weights``: weights hash; ``preprocessing``: an id of the
    preprocessing (model input size, pixel statistics, contrast rule); ``feature_shape``:
    (C, h, w) of one embedding; ``image_size``: side of the model input (for default tiles).
    """

    model: str
    weights: str
    preprocessing: str
    feature_shape: tuple[int, int, int] = (256, 64, 64)
    image_size: int = 1024


class Embedder(Protocol[E]):
    """Turns a 2D image into an embedding of type E, and stored features back into one.

    ``embed(image)``: image (h, w) or (h, w, C) -> E. ``pack(e)``: -> (features (C, h', w')
    float32 array, original_size, input_size), sizes as (rows, cols). ``restore(features,
    original_size, input_size)``: features (C, h', w') float32 tensor -> an E equivalent to
    what ``embed`` returned (up to float16 rounding).
    """

    identity: EmbedderIdentity

    def embed(self, image: np.ndarray) -> E: ...

    def pack(self, embedding: E) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]: ...

    def restore(
        self, features: torch.Tensor, original_size: tuple[int, int], input_size: tuple[int, int]
    ) -> E: ...


def embed_tile(
    source: SliceSource, grid: TileGrid, embedder: Embedder, store: EmbeddingStore,
    slice_index: int, tile: int, image: np.ndarray | None = None,
) -> None:  # fmt: skip
    """Embed tile ``tile`` of slice ``slice_index`` and publish it in ``store``, with the
    content hash of its pixels. ``image``: the tile window, if already read (dask graphs
    pass it)."""
    if image is None:
        image = source.read(slice_index, grid[tile].window)
    features, original_size, input_size = embedder.pack(embedder.embed(image))
    store.write(slice_index, tile, features, original_size, input_size, content_hash(image))


@dataclass
class _Cached:
    """A restored embedding; ``checked``: its ``content`` hash was compared with the pixels
    (a prefetched one is compared when first served)."""

    value: Any
    content: int
    checked: bool


class StackEmbeddings:
    """On-demand embeddings of every (slice, tile) of ``source``, kept in ``store``.

    ``cache_size`` restored embeddings stay in memory (least recently used dropped);
    :meth:`prefetch` loads the stored neighbours of the displayed slice. Thread safe. An
    embedding in memory that has been checked against its pixels is served without reading
    them again: edit the data in place and open a new ``StackEmbeddings``.
    """

    def __init__(
        self,
        source: SliceSource,
        embedder: Embedder,
        store: EmbeddingStore,
        grid: TileGrid,
        cache_size: int = 8,
    ) -> None:
        if grid.shape != source.plane_shape:
            raise ValueError(f"tile grid {grid.shape} does not match the slices "
                             f"{source.plane_shape}")  # fmt: skip
        if store.layout.n_slices != source.n_slices or store.layout.n_tiles != grid.n_tiles:
            raise ValueError(f"store layout {store.layout} does not match the data")
        self.source, self.embedder, self.store, self.grid = source, embedder, store, grid
        self.cache_size = cache_size
        self._cache: LRU[tuple[int, int], _Cached] = LRU(cache_size)
        self._lock = threading.RLock()
        self._windows = window_cache()
        self.computed = 0  # embeddings computed by this object (not read from the store)

    @classmethod
    def open(
        cls,
        source: SliceSource,
        embedder: Embedder,
        path: str | os.PathLike | None = None,
        *,
        tile: tuple[int, int] | None = None,
        halo: tuple[int, int] | None = None,
        on_mismatch: Literal["error", "recompute"] = "error",
        cache_size: int = 8,
        data_fingerprint: str | None = None,
    ) -> StackEmbeddings:
        """Everything from the data and embedder: signature, default tiling (see
        :func:`~napari_sam.tile_grid.default_grid`) unless ``tile`` / ``halo`` are given, and a
        store on disk at ``path`` (created or resumed) or in memory when ``path`` is None."""
        ident = embedder.identity
        if tile is None:
            grid = default_grid(source.plane_shape, ident.image_size)
            if halo is not None:
                grid = TileGrid(grid.shape, grid.tile, halo) if grid.tile else grid
        else:
            grid = TileGrid(source.plane_shape, tile, halo or (0, 0))
        signature = StoreSignature(
            data=data_fingerprint or fingerprint(source), model=ident.model,
            weights=ident.weights, preprocessing=ident.preprocessing, tile=grid.tile,
            halo=grid.halo, level=source.level,
        )  # fmt: skip
        layout = StoreLayout(source.n_slices, grid.n_tiles, ident.feature_shape)
        if path is None:
            store = EmbeddingStore.in_memory(signature, layout)
        else:
            store = EmbeddingStore.create(path, signature, layout, on_mismatch)
        return cls(source, embedder, store, grid, cache_size)

    def _remember(self, key: tuple[int, int], entry: _Cached) -> None:
        self._cache.put(key, entry)

    def _load(self, slice_index: int, tile: int, content: int | None = None) -> _Cached | None:
        """The stored embedding restored, or None if missing (or corrupted: the store warns).
        With ``content`` (the hash of the pixels now), also None if it was made from other
        pixels."""
        stored = self.store.read(slice_index, tile)
        if stored is None:
            return None
        if content is not None and stored.content != content:
            _log.info("slice %d, tile %d changed since it was embedded: embedding it again",
                      slice_index, tile)  # fmt: skip
            return None
        features = torch.from_numpy(stored.features.astype(np.float32))
        value = self.embedder.restore(features, stored.original_size, stored.input_size)
        return _Cached(value, stored.content, checked=content is not None)

    def get(self, slice_index: int, tile: int = 0) -> Any:
        """The embedding of (slice, tile): cached, stored, or computed now (and stored).
        A stored one is served only if the slice / tile pixels still hash to what it was made
        from; else it is computed again and replaces the stored one."""
        key = (slice_index, tile)
        with self._lock:
            entry = self._cache.get(key)  # now the most recent
            if entry is not None and entry.checked:
                return entry.value
            pixels = self.source.read(slice_index, self.grid[tile].window)
            content = content_hash(pixels)
            if entry is not None and entry.content == content:
                entry.checked = True
                return entry.value
            entry = self._load(slice_index, tile, content)
            if entry is None:
                embed_tile(self.source, self.grid, self.embedder, self.store, slice_index, tile,
                           pixels)  # fmt: skip
                self.computed += 1
                # serve what was stored (float16), so a reload gives the very same features
                entry = self._load(slice_index, tile, content)
                if entry is None:
                    raise StoreError(f"embedding ({slice_index}, {tile}) did not read back")
            self._remember(key, entry)
            return entry.value

    def window(self, slice_index: int, window: Box) -> Any:
        """The embedding of any ``window`` (row0, col0, row1, col1) of slice ``slice_index``,
        with the tiles' preprocessing; computed here, not stored (a few kept in memory)."""
        return self._windows.get_or_compute(
            (slice_index, window),
            lambda: self.embedder.embed(self.source.read(slice_index, window)),
        )

    def get_at(self, slice_index: int, points_rc: np.ndarray) -> tuple[int, Any]:
        """Route a prompt's plane (row, col) points ``(N, 2)`` to a tile and return
        ``(tile index, embedding)`` for slice ``slice_index``."""
        tile = self.grid.route(points_rc)
        return tile, self.get(slice_index, tile)

    def prefetch(self, slice_index: int, radius: int = 2) -> int:
        """Load the already stored embeddings of slices within ``radius`` of the displayed
        one into the cache (no computing, no pixels read: each is checked against its pixels
        when :meth:`get` first serves it); returns how many were loaded."""
        loaded = 0
        lo, hi = max(0, slice_index - radius), min(self.source.n_slices, slice_index + radius + 1)
        with self._lock:
            stored = self.store.done()  # from memory: a missing neighbour costs no disk read
            for s in range(lo, hi):
                for t in range(self.grid.n_tiles):
                    if (s, t) in self._cache or not stored[s, t]:
                        continue
                    entry = self._load(s, t)
                    if entry is not None:
                        self._remember((s, t), entry)
                        loaded += 1
        return loaded

    def is_done(self) -> np.ndarray:
        """(n_slices, n_tiles) bool: stored (published) embeddings (from memory: cheap)."""
        return self.store.done()


@dataclass(frozen=True, eq=False)
class PredictorEmbedder:
    """:class:`Embedder` over :class:`napari_sam.predictor.Predictor`: embeds with fixed
    ``contrast_limits`` (low, high), the same for every slice and tile so their features are
    comparable (a layer's limits, or :func:`napari_sam.slice_source.sample_limits` of the data)."""

    predictor: Any
    contrast_limits: tuple[float, float] | None = None
    rgb: bool | None = None

    @property
    def identity(self) -> EmbedderIdentity:
        cfg = self.predictor.config
        return EmbedderIdentity(
            model=cfg.name,
            weights=getattr(self.predictor, "weights_id", "") or self.predictor.signature,
            preprocessing=f"{self.predictor.signature};contrast={self.contrast_limits}",
            feature_shape=(256, cfg.embedding_size, cfg.embedding_size),
            image_size=cfg.image_size,
        )

    def embed(self, image: np.ndarray) -> Any:
        return self.predictor.embed(image, rgb=self.rgb, contrast_limits=self.contrast_limits)

    def pack(self, embedding: Any) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        geometry = embedding.geometry
        return (embedding.features.detach().float().cpu().numpy(), geometry.original_size,
                geometry.input_size)  # fmt: skip

    def restore(self, features, original_size, input_size) -> Any:
        from napari_sam.predictor import ImageEmbedding
        from napari_sam.transforms import Geometry

        cfg = self.predictor.config
        geometry = Geometry(tuple(original_size), tuple(input_size), cfg.image_size,
                            cfg.low_res_mask_size)  # fmt: skip
        return ImageEmbedding(features, geometry, self.predictor.signature)

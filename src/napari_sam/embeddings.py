"""The embedding store: one float16 embedding per (slice, tile), on disk in zarr or in memory.

Layout of a store (a zarr v3 group)::

    attrs["napari_sam"] = {"format", "signature", "layout", "generation"}
    features  (n_slices, n_tiles, C, h, w) float16, one chunk per (slice, tile), uncompressed
    sizes     (n_slices, n_tiles, 4) int32: original (rows, cols), input (rows, cols)
    checksum  (n_slices, n_tiles) uint64, 0 = not done

Publishing a (slice, tile) writes its features and sizes, then its checksum: an xxh64 of the
features and sizes bytes and the (slice, tile) index, seeded by the store's *generation* (a
random id drawn when the store is created or recreated). A chunk is served only if its checksum
verifies, so a torn, corrupted or misplaced chunk, or one written by a writer of an older
generation, reads as missing and is recomputed, never served. Every zarr chunk write is itself
atomic (temporary file then rename), and a new store is built beside its path and renamed in.

A store whose signature (data fingerprint, model, weights, preprocessing, tiling, package
version) differs from the caller's is refused (:class:`SignatureMismatchError`), or, with
``on_mismatch="recompute"``, emptied under a new generation.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np
import xxhash
import zarr

from napari_sam import __version__

FORMAT = 1
_ATTR = "napari_sam"


class StoreError(RuntimeError):
    """Base class of embedding store errors."""


class SignatureMismatchError(StoreError):
    """The store was computed for other data, model, tiling or version."""


class StoreChangedError(StoreError):
    """The store was recreated (new generation) by someone else while this handle wrote."""


@dataclass(frozen=True)
class StoreSignature:
    """What the embeddings depend on. Any difference makes stored features stale.

    ``data``: :func:`napari_sam.lazy.fingerprint` of the image; ``model``: architecture name;
    ``weights``: weights hash; ``preprocessing``: the predictor's preprocessing id (input
    size, pixel statistics, resize rule); ``tile`` / ``halo``: (rows, cols) or None / (0, 0);
    ``level``: multiscale level embedded; ``version``: napari-sam version that wrote it.
    """

    data: str
    model: str
    weights: str
    preprocessing: str
    tile: tuple[int, int] | None = None
    halo: tuple[int, int] = (0, 0)
    level: int = 0
    version: str = __version__

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> StoreSignature:
        known = {f.name for f in fields(cls)}
        obj = {k: v for k, v in obj.items() if k in known}
        for key in ("tile", "halo"):
            if obj.get(key) is not None:
                obj[key] = tuple(obj[key])
        return cls(**obj)

    def differences(self, other: StoreSignature) -> list[str]:
        """``"field: stored -> wanted"`` for each field that differs."""
        return [f"{f.name}: {getattr(self, f.name)!r} -> {getattr(other, f.name)!r}"
                for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]  # fmt: skip


@dataclass(frozen=True)
class StoreLayout:
    """Array geometry: ``n_slices`` x ``n_tiles`` embeddings of ``feature_shape`` (C, h, w)."""

    n_slices: int
    n_tiles: int
    feature_shape: tuple[int, int, int] = (256, 64, 64)

    @classmethod
    def from_json(cls, obj: dict) -> StoreLayout:
        return cls(obj["n_slices"], obj["n_tiles"], tuple(obj["feature_shape"]))


@dataclass(frozen=True)
class StoredFeatures:
    """One stored embedding: ``features`` (C, h, w) float16; ``original_size`` (rows, cols)
    of the slice / tile window embedded; ``input_size`` (rows, cols) after the model resize."""

    features: np.ndarray
    original_size: tuple[int, int]
    input_size: tuple[int, int]


def _checksum(seed: int, slice_index: int, tile: int, features: np.ndarray, sizes: np.ndarray):
    h = xxhash.xxh64(seed=seed)
    h.update(np.asarray([slice_index, tile], dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(features, dtype="<f2").tobytes())
    h.update(np.ascontiguousarray(sizes, dtype="<i4").tobytes())
    return h.intdigest() or 1  # 0 means "not done"


class EmbeddingStore:
    """A signature-checked store of float16 embeddings keyed by (slice index, tile index).

    Make one with :meth:`create` (open or create for writing), :meth:`open` (read what is
    there, e.g. a store made by the CLI elsewhere) or :meth:`in_memory`. Handles are cheap
    and picklable when on disk, so dask workers write through their own copy.
    """

    def __init__(self, group: zarr.Group, path: Path | None) -> None:
        meta = group.attrs.get(_ATTR)
        if not meta or meta.get("format") != FORMAT:
            raise StoreError(f"{path or 'store'} is not a napari-sam embedding store "
                             f"(format {FORMAT})")  # fmt: skip
        self.group, self.path = group, path
        self.signature = StoreSignature.from_json(meta["signature"])
        self.layout = StoreLayout.from_json(meta["layout"])
        self.generation = meta["generation"]
        self._seed = int(self.generation[:16], 16)
        self._features, self._sizes = group["features"], group["sizes"]
        self._checksum = group["checksum"]

    def __reduce__(self):
        if self.path is None:
            raise TypeError("an in-memory embedding store cannot be sent to another process")
        return (_reopen, (str(self.path), self.generation))

    # ----------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | os.PathLike, mode: Literal["r", "r+"] = "r") -> EmbeddingStore:
        """Open an existing store on disk, whatever its signature (check it yourself)."""
        path = Path(path)
        if not (path / "zarr.json").exists():
            raise FileNotFoundError(f"no embedding store at {path}")
        return cls(zarr.open_group(str(path), mode=mode), path)

    @classmethod
    def in_memory(cls, signature: StoreSignature, layout: StoreLayout) -> EmbeddingStore:
        """A store held in RAM (same checks, nothing on disk)."""
        group = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
        _initialise(group, signature, layout)
        return cls(group, None)

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        signature: StoreSignature,
        layout: StoreLayout,
        on_mismatch: Literal["error", "recompute"] = "error",
    ) -> EmbeddingStore:
        """Open the store at ``path`` for writing, creating it if absent.

        An existing store with another signature or layout raises
        :class:`SignatureMismatchError` (``on_mismatch="error"``) or is replaced by an empty
        one (``"recompute"``). Finished embeddings of a matching store are kept (resume).
        """
        path = Path(path)
        if not path.exists():
            try:
                return cls(_build_beside(path, signature, layout, replace=False), path)
            except FileExistsError:
                pass  # another process created it first: check theirs below
        store = cls.open(path, mode="r+")
        problems = store.signature.differences(signature)
        if store.layout != layout:
            problems.append(f"layout: {store.layout} -> {layout}")
        if not problems:
            return store
        if on_mismatch != "recompute":
            raise SignatureMismatchError(
                f"the embedding store {path} was made for something else "
                f"({'; '.join(problems)}); recompute it or choose another path"
            )
        return cls(_build_beside(path, signature, layout, replace=True), path)

    # ------------------------------------------------------------------------ read / write
    def _check_generation(self) -> None:
        if self.path is None:
            return
        meta = json.loads((self.path / "zarr.json").read_text())["attributes"][_ATTR]
        if meta["generation"] != self.generation:
            raise StoreChangedError(
                f"the embedding store {self.path} was recreated by another process "
                "while this one was writing; reopen it"
            )

    def write(
        self,
        slice_index: int,
        tile: int,
        features: np.ndarray,
        original_size: tuple[int, int],
        input_size: tuple[int, int],
    ) -> None:
        """Store and publish one embedding. ``features``: (C, h, w) or (1, C, h, w), any float
        dtype (stored as float16). Raises :class:`StoreChangedError` if the store was
        recreated meanwhile."""
        feats = np.asarray(features).reshape(self.layout.feature_shape).astype(np.float16)
        sizes = np.asarray([*original_size, *input_size], dtype=np.int32)
        self._check_generation()
        self._features[slice_index, tile] = feats
        self._sizes[slice_index, tile] = sizes
        self._checksum[slice_index, tile] = _checksum(self._seed, slice_index, tile, feats, sizes)

    def read(self, slice_index: int, tile: int = 0) -> StoredFeatures | None:
        """The embedding at (slice, tile), or None if it is missing, torn, corrupted or from an
        older generation (so the caller recomputes it)."""
        expected = int(self._checksum[slice_index, tile])
        if expected == 0:
            return None
        try:
            feats = self._features[slice_index, tile]
            sizes = self._sizes[slice_index, tile]
        except Exception:  # an unreadable chunk is a missing one
            return None
        if _checksum(self._seed, slice_index, tile, feats, sizes) != expected:
            return None
        return StoredFeatures(feats, (int(sizes[0]), int(sizes[1])), (int(sizes[2]), int(sizes[3])))

    def done(self) -> np.ndarray:
        """(n_slices, n_tiles) bool: published (checksum present; not verified)."""
        return np.asarray(self._checksum[...]) != 0

    def pending(self, verify: bool = False) -> list[tuple[int, int]]:
        """(slice, tile) pairs still to compute; ``verify`` also re-reads published ones and
        lists those that fail their checksum."""
        done = self.done()
        if verify:
            for s, t in zip(*np.nonzero(done)):
                done[s, t] = self.read(int(s), int(t)) is not None
        return [(int(s), int(t)) for s, t in zip(*np.nonzero(~done))]

    def discard(self, slice_index: int, tile: int = 0) -> None:
        """Unpublish one embedding (it will be recomputed)."""
        self._checksum[slice_index, tile] = 0


def _reopen(path: str, generation: str) -> EmbeddingStore:
    store = EmbeddingStore.open(path, mode="r+")
    if store.generation != generation:
        raise StoreChangedError(f"the embedding store {path} was recreated meanwhile")
    return store


def _initialise(group: zarr.Group, signature: StoreSignature, layout: StoreLayout) -> None:
    n, t, (c, h, w) = layout.n_slices, layout.n_tiles, layout.feature_shape
    group.create_array("features", shape=(n, t, c, h, w), chunks=(1, 1, c, h, w),
                       dtype="float16", fill_value=0, compressors=None)  # fmt: skip
    group.create_array("sizes", shape=(n, t, 4), chunks=(1, 1, 4), dtype="int32", fill_value=0)
    group.create_array("checksum", shape=(n, t), chunks=(1, 1), dtype="uint64", fill_value=0)
    group.attrs[_ATTR] = {"format": FORMAT, "signature": signature.to_json(),
                          "layout": asdict(layout), "generation": uuid.uuid4().hex}  # fmt: skip


def _build_beside(
    path: Path, signature: StoreSignature, layout: StoreLayout, replace: bool
) -> zarr.Group:
    """Build an empty store next to ``path`` and rename it into place (publish). Without
    ``replace``, raises FileExistsError if ``path`` appeared meanwhile."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    _initialise(zarr.open_group(str(tmp), mode="w"), signature, layout)
    try:
        if replace:
            stale = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.stale")
            os.rename(path, stale)
            os.rename(tmp, path)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.rename(tmp, path)  # fails if path is a non-empty directory by now
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if not replace and path.exists():
            raise FileExistsError(path) from exc
        raise
    return zarr.open_group(str(path), mode="r+")

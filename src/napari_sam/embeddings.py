"""The embedding store: one float16 embedding per (slice, tile), on disk in zarr or in memory.

Layout of a store (a zarr v3 group)::

    attrs["napari_sam"] = {"format", "signature", "layout", "generation"}
    features  (n_slices, n_tiles, C, h, w) float16, one chunk per (slice, tile), uncompressed
    sizes     (n_slices, n_tiles, 4) int32: original (rows, cols), input (rows, cols)
    content   (n_slices, n_tiles) uint64: hash of the pixels embedded (lazy.content_hash)
    checksum  (n_slices, n_tiles) uint64, 0 = not done

``sizes``, ``content`` and ``checksum`` are the bookkeeping: a few rows of slices per chunk
(one chunk for a stack of up to 4096 slices and tiles), written under a lock file
(``checksum/.lock``) so writers in several processes do not lose each other's entries. A handle
keeps a copy of them in memory, read when it opens and updated as it writes, so
:meth:`EmbeddingStore.done` costs nothing.

Publishing a (slice, tile) writes its features, then its sizes and content hash, then its
checksum: an xxh64 of the features, sizes, content hash and (slice, tile) index, seeded by the
store's *generation* (a random id drawn when the store is created or recreated). A chunk is
served only if its checksum verifies, so a torn, corrupted or misplaced chunk, or one written
by a writer of an older generation, is never served: it is recomputed, with a
:class:`StoreWarning` naming it. A chunk that cannot be read at all (permissions, I/O error)
raises :class:`StoreReadError`. Every zarr chunk write is itself atomic (temporary file then
rename), and a new store is built beside its path and renamed in.

A store whose signature (data fingerprint, model, weights, preprocessing, tiling, package
version) differs from the caller's is refused (:class:`SignatureMismatchError`), or, with
``on_mismatch="recompute"``, emptied under a new generation; so is a store of another format
(:class:`StoreFormatError`, e.g. one written by an older napari-sam).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import threading
import uuid
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np
import xxhash
import zarr

from napari_sam import __version__

FORMAT = 2
"""Store format written and read. 1: bookkeeping chunked one (slice, tile) per file, no
content hash (napari-sam before the per-tile content check): refused, re-embed."""
_ATTR = "napari_sam"
_BLOCK = 4096
"""(slice, tile) entries per bookkeeping chunk (rounded to whole slices)."""


class StoreError(RuntimeError):
    """Base class of embedding store errors."""


class SignatureMismatchError(StoreError):
    """The store was computed for other data, model, tiling or version."""


class StoreFormatError(SignatureMismatchError):
    """The store is in another store format (written by another napari-sam version)."""


class StoreChangedError(StoreError):
    """The store was recreated (new generation) by someone else while this handle wrote."""


class StoreReadError(StoreError):
    """A published embedding or the store's bookkeeping could not be read (permissions, I/O)."""


class StoreWarning(UserWarning):
    """A published embedding was corrupted on disk; it is recomputed, not served."""


@dataclass(frozen=True)
class StoreSignature:
    """What the embeddings depend on. Any difference makes stored features stale.

    ``data``: :func:`napari_sam.slice_source.fingerprint` of the image; ``model``: architecture name;
    ``weights``: weights hash; ``preprocessing``: the predictor's preprocessing id (input
    size, pixel statistics, resize rule); ``tile`` / ``halo``: (rows, cols) or None / (0, 0);
    ``level``: multiscale level embedded; ``version``: napari-sam version that wrote it.
    The data fingerprint may be a sample of big data: each embedding also records the hash
    of its own pixels (:attr:`StoredFeatures.content`), checked when it is used.
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
    of the slice / tile window embedded; ``input_size`` (rows, cols) after the model resize;
    ``content``: :func:`napari_sam.slice_source.content_hash` of the pixels that were embedded."""

    features: np.ndarray
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    content: int


def _checksum(seed: int, slice_index: int, tile: int, features: np.ndarray, sizes: np.ndarray,
              content: int) -> int:  # fmt: skip
    h = xxhash.xxh64(seed=seed)
    h.update(np.asarray([slice_index, tile], dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(features, dtype="<f2").tobytes())
    h.update(np.ascontiguousarray(sizes, dtype="<i4").tobytes())
    h.update(np.asarray([content], dtype="<u8").tobytes())
    return h.intdigest() or 1  # 0 means "not done"


@contextlib.contextmanager
def _file_lock(path: Path):
    """Hold an exclusive lock on ``path`` (created if absent) across processes; released when
    the file is closed, also by a process that dies. A file system without locks (some
    network mounts) is used unlocked, with a warning: writers in several processes may then
    lose each other's entries, which read as missing and are recomputed."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            if os.name == "nt":
                import msvcrt

                while True:  # LK_LOCK gives up after 10 s; the lock is held for milliseconds
                    with contextlib.suppress(OSError):
                        msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                        break
            else:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            warnings.warn(f"{path}: no file locks on this file system ({exc}); concurrent "
                          "writers may recompute some embeddings", StoreWarning, stacklevel=4)  # fmt: skip
        yield
    finally:
        if os.name == "nt":
            import msvcrt

            with contextlib.suppress(OSError):
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        os.close(fd)


class EmbeddingStore:
    """A signature-checked store of float16 embeddings keyed by (slice index, tile index).

    Make one with :meth:`create` (open or create for writing), :meth:`open` (read what is
    there, e.g. a store made by the CLI elsewhere) or :meth:`in_memory`. Handles are cheap
    and picklable when on disk, so dask workers write through their own copy.
    """

    def __init__(self, group: zarr.Group, path: Path | None) -> None:
        meta = group.attrs.get(_ATTR)
        if not meta or "format" not in meta:
            raise StoreError(f"{path or 'store'} is not a napari-sam embedding store")
        if meta["format"] != FORMAT:
            raise StoreFormatError(
                f"the embedding store {path} was written by another napari-sam version "
                f"(store format {meta['format']}; this version reads format {FORMAT}): delete "
                "it and embed again (napari-sam embed --overwrite replaces it)"
            )
        self.group, self.path = group, path
        self.signature = StoreSignature.from_json(meta["signature"])
        self.layout = StoreLayout.from_json(meta["layout"])
        self.generation = meta["generation"]
        self._seed = int(self.generation[:16], 16)
        self._features, self._sizes = group["features"], group["sizes"]
        self._content, self._checksum = group["content"], group["checksum"]
        self._lock = threading.Lock()  # guards the copies below and orders this handle's writes
        # what this handle last saw of the bookkeeping (disk, or its own writes)
        n, t = self.layout.n_slices, self.layout.n_tiles
        self._seen_sizes = np.zeros((n, t, 4), np.int32)
        self._seen_content = np.zeros((n, t), np.uint64)
        self._seen_checksum = np.zeros((n, t), np.uint64)
        self._refresh(slice(None))

    def __reduce__(self):
        if self.path is None:
            raise TypeError("an in-memory embedding store cannot be sent to another process")
        return (_reopen, (str(self.path), self.generation))

    # ----------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | os.PathLike, mode: Literal["r", "r+"] = "r") -> EmbeddingStore:
        """Open an existing store on disk, whatever its signature (check it yourself).
        Raises :class:`StoreFormatError` for a store of another format."""
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

        An existing store with another signature, layout or format raises
        :class:`SignatureMismatchError` (``on_mismatch="error"``) or is replaced by an empty
        one (``"recompute"``). Finished embeddings of a matching store are kept (resume).
        """
        path = Path(path)
        if not path.exists():
            try:
                return cls(_build_beside(path, signature, layout, replace=False), path)
            except FileExistsError:
                pass  # another process created it first: check theirs below
        try:
            store = cls.open(path, mode="r+")
        except StoreFormatError:
            if on_mismatch != "recompute":
                raise
            return cls(_build_beside(path, signature, layout, replace=True), path)
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

    # ------------------------------------------------------------------------- bookkeeping
    def _refresh(self, rows: slice | int) -> None:
        """Re-read the bookkeeping of slices ``rows`` from the store (checksum first: an
        entry found published then has its sizes and content written already)."""
        try:
            checksum = np.asarray(self._checksum[rows], np.uint64)
            sizes = np.asarray(self._sizes[rows], np.int32)
            content = np.asarray(self._content[rows], np.uint64)
        except Exception as exc:
            raise StoreReadError(
                f"cannot read the bookkeeping of the embedding store {self.path or '(memory)'} "
                f"({type(exc).__name__}: {exc}); check its permissions, or delete it and "
                "embed again"
            ) from exc
        with self._lock:
            self._seen_checksum[rows], self._seen_sizes[rows] = checksum, sizes
            self._seen_content[rows] = content

    @contextlib.contextmanager
    def _bookkeeping(self):
        """Exclusive right to change the bookkeeping: this handle's threads, and every
        process writing the same store (its bookkeeping chunks are shared)."""
        with self._lock:
            if self.path is None:
                yield
                return
            with _file_lock(self.path / "checksum" / ".lock"):
                yield

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
        content: int,
    ) -> None:
        """Store and publish one embedding. ``features``: (C, h, w) or (1, C, h, w), any float
        dtype (stored as float16); ``content``: :func:`napari_sam.slice_source.content_hash` of the
        pixels embedded. Raises :class:`StoreChangedError` if the store was recreated
        meanwhile."""
        s, t = slice_index, tile
        feats = np.asarray(features).reshape(self.layout.feature_shape).astype(np.float16)
        sizes = np.asarray([*original_size, *input_size], dtype=np.int32)
        content = int(content)
        self._check_generation()
        if self._seen_checksum[s, t]:  # replacing: unpublish first, so a crash leaves it missing
            self.discard(s, t)
        self._features[s, t] = feats
        with self._bookkeeping():
            self._sizes[s, t] = sizes
            self._content[s, t] = content
            checksum = _checksum(self._seed, s, t, feats, sizes, content)
            self._checksum[s, t] = checksum
            self._seen_sizes[s, t], self._seen_content[s, t] = sizes, content
            self._seen_checksum[s, t] = checksum

    def read(self, slice_index: int, tile: int = 0) -> StoredFeatures | None:
        """The embedding at (slice, tile), or None if it is missing, or corrupted, torn or
        from an older generation (a :class:`StoreWarning` says so), so the caller recomputes
        it. Raises :class:`StoreReadError` if its chunk cannot be read at all."""
        s, t = slice_index, tile
        if not self._seen_checksum[s, t]:
            self._refresh(s)  # another writer may have published it since
            if not self._seen_checksum[s, t]:
                return None
        found, problem = self._verified(s, t)
        if found is None:  # another writer may have replaced it since: look again
            self._refresh(s)
            if not self._seen_checksum[s, t]:
                return None
            found, problem = self._verified(s, t)
        if found is None:
            warnings.warn(f"the embedding of slice {s}, tile {t} in {self.path or 'memory'} "
                          f"{problem}; it is recomputed", StoreWarning, stacklevel=2)  # fmt: skip
        return found

    def _verified(self, s: int, t: int) -> tuple[StoredFeatures | None, str]:
        """(the embedding, "") if its chunk matches the checksum seen, else (None, why)."""
        with self._lock:
            expected = int(self._seen_checksum[s, t])
            sizes, content = self._seen_sizes[s, t].copy(), int(self._seen_content[s, t])
        try:
            feats = self._features[s, t]
        except OSError as exc:
            raise StoreReadError(
                f"cannot read the embedding of slice {s}, tile {t} from {self.path} "
                f"({exc}); check the store's permissions and disk"
            ) from exc
        except Exception as exc:  # a chunk that does not decode: corrupted
            return None, f"is corrupted ({type(exc).__name__}: {exc})"
        if _checksum(self._seed, s, t, feats, sizes, content) != expected:
            return None, ("does not match its checksum (corrupted on disk, or written by a "
                          "process holding an older version of the store)")  # fmt: skip
        return StoredFeatures(feats, (int(sizes[0]), int(sizes[1])),
                              (int(sizes[2]), int(sizes[3])), content), ""  # fmt: skip

    def done(self) -> np.ndarray:
        """(n_slices, n_tiles) bool: published (checksum present; not verified), as this
        handle last saw the store (its own writes included); no disk access."""
        with self._lock:
            return self._seen_checksum != 0

    def refresh(self) -> None:
        """Re-read the bookkeeping from the store: :meth:`done` then also shows what other
        handles (processes, dask workers) published since this one opened."""
        self._refresh(slice(None))

    def pending(self, verify: bool = False) -> list[tuple[int, int]]:
        """(slice, tile) pairs still to compute, as the store is now on disk; ``verify`` also
        re-reads published ones and lists those that fail their checksum."""
        self.refresh()
        done = self.done()
        if verify:
            for s, t in zip(*np.nonzero(done)):
                done[s, t] = self.read(int(s), int(t)) is not None
        return [(int(s), int(t)) for s, t in zip(*np.nonzero(~done))]

    def discard(self, slice_index: int, tile: int = 0) -> None:
        """Unpublish one embedding (it will be recomputed)."""
        with self._bookkeeping():
            self._checksum[slice_index, tile] = 0
            self._seen_checksum[slice_index, tile] = 0


def _reopen(path: str, generation: str) -> EmbeddingStore:
    store = EmbeddingStore.open(path, mode="r+")
    if store.generation != generation:
        raise StoreChangedError(f"the embedding store {path} was recreated meanwhile")
    return store


def _initialise(group: zarr.Group, signature: StoreSignature, layout: StoreLayout) -> None:
    n, t, (c, h, w) = layout.n_slices, layout.n_tiles, layout.feature_shape
    rows = min(n, max(1, _BLOCK // t))
    group.create_array("features", shape=(n, t, c, h, w), chunks=(1, 1, c, h, w),
                       dtype="float16", fill_value=0, compressors=None)  # fmt: skip
    group.create_array("sizes", shape=(n, t, 4), chunks=(rows, t, 4), dtype="int32",
                       fill_value=0)  # fmt: skip
    for name in ("content", "checksum"):
        group.create_array(name, shape=(n, t), chunks=(rows, t), dtype="uint64", fill_value=0)
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

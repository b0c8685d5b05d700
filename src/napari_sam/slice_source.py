"""Read one slice (or one tile of one slice) of numpy / dask / zarr / multiscale data.

Nothing here loads a whole stack: a :class:`SliceSource` indexes the backing array with one
slice key and one 2D window, so dask computes only the chunks under it and zarr reads only the
chunks under it. Shapes: data is ``(*leading, H, W)`` (grey) or ``(*leading, H, W, C)`` (RGB);
a slice is one ``(H, W[, C])`` plane; slices are numbered in C order over ``leading``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

Window = tuple[int, int, int, int]
"""A 2D region ``(row0, col0, row1, col1)``, half open, in pixels of the level read."""

FULL_HASH_LIMIT = 64 * 2**20
"""Data up to this many bytes is hashed whole (slice by slice); larger data is sampled."""


def _is_dask(data: Any) -> bool:
    return type(data).__module__.startswith("dask.")


@dataclass(frozen=True, eq=False)
class SliceSource:
    """A stack of 2D planes read one plane (or one window of a plane) at a time.

    ``data``: numpy, dask or zarr array, ``(*leading, H, W)`` or ``(*leading, H, W, C)`` when
    ``rgb``. ``level`` and ``scale`` describe a multiscale pick: ``scale`` is level-0 pixels per
    pixel of ``data`` along (row, col), so a level-0 coordinate is ``coord / scale`` here.
    """

    data: Any
    rgb: bool = False
    level: int = 0
    scale: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.data.shape) < (3 if self.rgb else 2):
            raise ValueError(f"need at least a 2D image, got shape {tuple(self.data.shape)}")

    @classmethod
    def from_layer_data(
        cls, data: Any, *, multiscale: bool = False, rgb: bool = False, level: int = 0
    ) -> SliceSource:
        """Wrap a napari image layer's ``data``; multiscale data is a sequence of levels,
        level 0 (full resolution) unless ``level`` picks another."""
        if not multiscale:
            if level != 0:
                raise ValueError("level only applies to multiscale data")
            return cls(data, rgb=rgb)
        levels: Sequence[Any] = data
        if not 0 <= level < len(levels):
            raise ValueError(f"level {level} out of range: the data has {len(levels)} levels")
        axes = slice(-3, -1) if rgb else slice(-2, None)
        full, picked = levels[0].shape[axes], levels[level].shape[axes]
        scale = (full[0] / picked[0], full[1] / picked[1])
        return cls(levels[level], rgb=rgb, level=level, scale=scale)

    @property
    def leading_shape(self) -> tuple[int, ...]:
        """The non-spatial axes (z, t, ...) that number the slices."""
        return tuple(self.data.shape[: -3 if self.rgb else -2])

    @property
    def n_slices(self) -> int:
        return math.prod(self.leading_shape)

    @property
    def plane_shape(self) -> tuple[int, int]:
        """``(H, W)`` of one slice, in pixels of the level read."""
        shape = self.data.shape[-3:-1] if self.rgb else self.data.shape[-2:]
        return (int(shape[0]), int(shape[1]))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def nbytes(self) -> int:
        return math.prod(self.data.shape) * self.dtype.itemsize

    def slice_key(self, index: int) -> tuple[int, ...]:
        """The leading-axes index of slice ``index`` (C order)."""
        if not 0 <= index < self.n_slices:
            raise IndexError(f"slice {index} out of range for {self.n_slices} slices")
        return tuple(int(i) for i in np.unravel_index(index, self.leading_shape))

    def slice_index(self, key: Sequence[int]) -> int:
        """Inverse of :meth:`slice_key`: e.g. napari's ``dims.current_step[:-2]``."""
        return int(np.ravel_multi_index(tuple(key), self.leading_shape))

    def _selection(self, index: int, window: Window | None) -> tuple:
        row0, col0, row1, col1 = window if window is not None else (0, 0, *self.plane_shape)
        return (*self.slice_key(index), slice(row0, row1), slice(col0, col1))

    def read(self, index: int, window: Window | None = None) -> np.ndarray:
        """Slice ``index`` (or its ``window``) as numpy ``(h, w)`` / ``(h, w, C)``, data dtype.

        Only the chunks under the window are read (dask: computed) from the backing array.
        """
        return np.asarray(self.data[self._selection(index, window)])

    def dask_region(self, index: int, window: Window | None = None) -> Any:
        """For dask data, the window of slice ``index`` as a dask array (to put in a task
        graph, so the scheduler computes just its chunks); None for other data."""
        return self.data[self._selection(index, window)] if _is_dask(self.data) else None


def fingerprint(source: SliceSource, full_hash_limit: int = FULL_HASH_LIMIT) -> str:
    """A string that changes when the data does: ``"full:<xxh64>"`` of every byte (read slice
    by slice) for data up to ``full_hash_limit`` bytes, else ``"sampled:<xxh64>"`` of up to 8
    evenly spaced slices, five 256 x 256 windows each (corners + centre). Both include shape,
    dtype, level and rgb. Sampled fingerprints are cheap but can miss an edit elsewhere: an
    embedding store also checks each slice / tile's :func:`content_hash` when it is used."""
    h = xxhash.xxh64()
    h.update(repr((tuple(source.data.shape), source.dtype.str, source.level, source.rgb)).encode())
    if source.nbytes <= full_hash_limit:
        for index in range(source.n_slices):
            h.update(np.ascontiguousarray(source.read(index)).tobytes())
        return f"full:{h.hexdigest()}"
    for window_data in sample_windows(source):
        h.update(np.ascontiguousarray(window_data).tobytes())
    return f"sampled:{h.hexdigest()}"


def content_hash(pixels: np.ndarray) -> int:
    """xxh3-64 of one slice or tile window as read (shape, dtype and every pixel), never 0:
    stored with its embedding and compared when the embedding is used, so an edit that the
    sampled :func:`fingerprint` misses still makes that embedding stale. About 10 GB/s."""
    pixels = np.ascontiguousarray(pixels)
    h = xxhash.xxh3_64()
    h.update(repr((pixels.shape, pixels.dtype.str)).encode())
    h.update(pixels.reshape(-1).view(np.uint8))
    return h.intdigest() or 1


def sample_windows(source: SliceSource, n_slices: int = 8, side: int = 256) -> list[np.ndarray]:
    """Up to ``n_slices`` evenly spaced slices, five ``side`` x ``side`` windows of each
    (corners + centre; a window that repeats another on a small plane is read once), read
    lazily: a cheap, fixed sample of the data."""
    n = source.n_slices
    picks = sorted({round(i * (n - 1) / (n_slices - 1)) for i in range(n_slices)}) if n > 1 else [0]
    rows, cols = source.plane_shape
    side_r, side_c = min(side, rows), min(side, cols)
    starts = dict.fromkeys([(0, 0), (0, cols - side_c), (rows - side_r, 0),
                            (rows - side_r, cols - side_c),
                            ((rows - side_r) // 2, (cols - side_c) // 2)])  # fmt: skip
    return [source.read(index, (r, c, r + side_r, c + side_c))
            for index in picks for r, c in starts]  # fmt: skip


def sample_limits(
    source: SliceSource, percentiles: tuple[float, float] = (1.0, 99.8)
) -> tuple[float, float]:
    """Contrast limits (low, high) for the whole stack from :func:`sample_windows`, so every
    slice and tile is embedded with the same contrast."""
    from napari_sam.image import percentile_limits

    return percentile_limits(np.concatenate([w.ravel() for w in sample_windows(source)]),
                             percentiles)  # fmt: skip


def open_image(path: str | Path) -> tuple[Any, bool]:
    """Open an image file lazily: ``(data, multiscale)``.

    ``.tif/.tiff`` (via tifffile's zarr view, pyramids as multiscale), ``.zarr`` arrays and
    OME-Zarr multiscale groups, ``.npy`` (memory mapped). ``data`` is an array or, when
    ``multiscale``, a list of arrays from full resolution down.
    """
    import zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no image at {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, mmap_mode="r"), False
    if suffix in (".tif", ".tiff"):
        import tifffile

        node = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    elif suffix == ".zarr" or path.is_dir():
        node = zarr.open(str(path), mode="r")
    else:
        raise ValueError(f"unsupported image format {suffix!r}: use .tif, .zarr or .npy")
    if isinstance(node, zarr.Array):
        return node, False
    multiscales = node.attrs.get("multiscales")
    if multiscales:
        datasets = multiscales[0]["datasets"]
        return [node[d["path"]] for d in datasets], True
    arrays = sorted(name for name, _ in node.arrays())
    if not arrays:
        raise ValueError(f"{path} holds no array")
    if all(name.isdigit() for name in arrays):  # tifffile pyramid: "0", "1", ...
        levels = [node[name] for name in sorted(arrays, key=int)]
        return (levels, True) if len(levels) > 1 else (levels[0], False)
    raise ValueError(f"{path} is a group without 'multiscales' metadata: open one array of it")

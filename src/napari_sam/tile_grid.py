"""Tiles with a halo for large 2D images: the grid, prompt routing and stitching across tiles.

All coordinates are napari ``(row, col)`` pixels of the full 2D plane, half-open boxes
``(row0, col0, row1, col1)``. A tile's *core* cells partition the plane; its *window* is the
core grown by the halo (clipped to the plane) and is what gets embedded.

Objects that cross tile borders: a prompt goes to the tile whose window holds it with most
room around it, so an object up to a halo wide past the core is whole in one window. A mask
that still reaches an inner edge of its window is continued by :func:`grow_across_tiles`:
points taken inside the mask, in the neighbour's core, prompt the neighbour tile, and the
masks are merged, tile after tile, until no mask reaches an inner edge.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]
"""``(row0, col0, row1, col1)``, half open, pixels."""

DEFAULT_HALO = 128
"""Default halo (pixels per side) when a plane is tiled."""


@dataclass(frozen=True)
class Tile:
    """One tile: ``core`` (the cells it owns) and ``window`` (core + halo, what is embedded)."""

    index: int
    core: Box
    window: Box

    @property
    def window_shape(self) -> tuple[int, int]:
        return (self.window[2] - self.window[0], self.window[3] - self.window[1])

    def to_local(self, points_rc: np.ndarray) -> np.ndarray:
        """Plane ``(N, 2)`` (row, col) -> window-local (row, col), same dtype kind (float)."""
        return np.asarray(points_rc, dtype=float) - np.array(self.window[:2], dtype=float)

    def to_global(self, points_rc: np.ndarray) -> np.ndarray:
        """Window-local ``(N, 2)`` (row, col) -> plane (row, col)."""
        return np.asarray(points_rc, dtype=float) + np.array(self.window[:2], dtype=float)


def contains(box: Box, inner: Box) -> bool:
    """Whether ``inner`` lies inside ``box``; both (row0, col0, row1, col1) half-open, the
    convention of every :data:`Box` here."""
    return box[0] <= inner[0] and box[1] <= inner[1] and inner[2] <= box[2] and inner[3] <= box[3]


def pixel_box(box) -> Box:
    """A prompt's box (row0, col0, row1, col1) through pixel centres, its corners on the
    first and last pixel (as a drawn rectangle gives it), as a half-open :data:`Box` of the
    pixels it spans (floats kept: a corner between pixels stays there)."""
    return (box[0], box[1], box[2] + 1, box[3] + 1)


@dataclass(frozen=True)
class TileGrid:
    """A plane of ``shape`` (H, W) cut into cores of at most ``tile`` (h, w), each embedded
    with ``halo`` (h, w) pixels of context per side. ``tile=None`` means one tile, no halo."""

    shape: tuple[int, int]
    tile: tuple[int, int] | None = None
    halo: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if min(self.shape) < 1:
            raise ValueError(f"empty plane {self.shape}")
        if self.tile is not None and min(self.tile) < 1:
            raise ValueError(f"tile must be positive, got {self.tile}")
        if min(self.halo) < 0:
            raise ValueError(f"halo must be >= 0, got {self.halo}")

    @property
    def core_shape(self) -> tuple[int, int]:
        return self.tile if self.tile is not None else self.shape

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Tiles along (rows, cols)."""
        return (math.ceil(self.shape[0] / self.core_shape[0]),
                math.ceil(self.shape[1] / self.core_shape[1]))  # fmt: skip

    @property
    def n_tiles(self) -> int:
        return self.grid_shape[0] * self.grid_shape[1]

    def __getitem__(self, index: int) -> Tile:
        if not 0 <= index < self.n_tiles:
            raise IndexError(f"tile {index} out of range for {self.n_tiles} tiles")
        i, j = divmod(index, self.grid_shape[1])
        (H, W), (th, tw), (hh, hw) = self.shape, self.core_shape, self.halo
        core = (i * th, j * tw, min((i + 1) * th, H), min((j + 1) * tw, W))
        window = (max(0, core[0] - hh), max(0, core[1] - hw), min(H, core[2] + hh),
                  min(W, core[3] + hw))  # fmt: skip
        return Tile(index, core, window)

    @property
    def tiles(self) -> tuple[Tile, ...]:
        return tuple(self[i] for i in range(self.n_tiles))

    def tile_at(self, row: float, col: float) -> int:
        """The tile whose core holds pixel (row, col); a clear error outside the plane."""
        if not (0 <= row < self.shape[0] and 0 <= col < self.shape[1]):
            raise ValueError(f"point ({row}, {col}) is outside the {self.shape} plane")
        return int(row // self.core_shape[0]) * self.grid_shape[1] + int(col // self.core_shape[1])

    def route(self, points_rc: np.ndarray) -> int:
        """The tile to send a prompt to. ``points_rc``: ``(N, 2)`` plane (row, col), e.g. the
        points of a prompt or the two corners of a box.

        Among tiles whose window holds all the points, the one with the most margin between
        the points' bounding box and the window's inner edges; if none holds them all, the
        tile whose core holds the box centre (then :func:`grow_across_tiles` continues).
        """
        pts = np.asarray(points_rc, dtype=float).reshape(-1, 2)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        centre = self.tile_at(*((lo + hi) / 2))
        box = (math.floor(lo[0]), math.floor(lo[1]), math.floor(hi[0]) + 1, math.floor(hi[1]) + 1)
        best, best_margin = centre, -1.0
        for tile in self.tiles:
            if not contains(tile.window, box):
                continue
            margin = min(self._inner_margins(tile, box))
            if margin > best_margin or (margin == best_margin and tile.index == centre):
                best, best_margin = tile.index, margin
        return best

    def _inner_margins(self, tile: Tile, box: Box) -> list[float]:
        """Distances from ``box`` to each window edge that is not a plane edge (inf if none)."""
        (r0, c0, r1, c1), (H, W) = tile.window, self.shape
        margins = [box[0] - r0 if r0 > 0 else math.inf, box[1] - c0 if c0 > 0 else math.inf,
                   r1 - box[2] if r1 < H else math.inf, c1 - box[3] if c1 < W else math.inf]  # fmt: skip
        return margins

    def inner_edges_touched(self, tile: Tile, mask: np.ndarray) -> bool:
        """Whether ``mask`` (window-shaped bool) reaches a window edge inside the plane,
        i.e. the object may go on beyond the window."""
        (r0, c0, r1, c1), (H, W) = tile.window, self.shape
        return bool((r0 > 0 and mask[0].any()) or (c0 > 0 and mask[:, 0].any())
                    or (r1 < H and mask[-1].any()) or (c1 < W and mask[:, -1].any()))  # fmt: skip


@dataclass(frozen=True)
class StitchedMask:
    """A mask assembled from one or more tiles: ``mask`` (h, w) bool placed at ``origin``
    (row, col) of the plane; ``tiles`` that contributed; ``truncated`` if ``max_tiles``
    stopped the growth while the object still reached an inner window edge."""

    origin: tuple[int, int]
    mask: np.ndarray
    tiles: tuple[int, ...]
    truncated: bool

    def paste(self, shape: tuple[int, int]) -> np.ndarray:
        """The mask on a full ``shape`` (H, W) bool plane (for small planes / tests)."""
        out = np.zeros(shape, dtype=bool)
        r, c = self.origin
        out[r : r + self.mask.shape[0], c : c + self.mask.shape[1]] = self.mask
        return out


def _seed_points(
    grid: TileGrid, tile: Tile, mask: np.ndarray, target: Tile, n_points: int
) -> np.ndarray:
    """Up to ``n_points`` plane (row, col) points inside ``mask`` (on ``tile``'s window) and
    inside ``target``'s core, the deepest (farthest from the mask edge) first. ``(k, 2)``."""
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    (wr0, wc0, _, _), (cr0, cc0, cr1, cc1) = tile.window, target.core
    region = depth[max(cr0 - wr0, 0) : max(cr1 - wr0, 0), max(cc0 - wc0, 0) : max(cc1 - wc0, 0)]
    if region.size == 0 or region.max() <= 0:
        return np.zeros((0, 2))
    order = np.argsort(region, axis=None)[::-1][:n_points]
    rows, cols = np.unravel_index(order, region.shape)
    keep = region[rows, cols] > 0
    local = np.stack([rows[keep] + max(cr0 - wr0, 0), cols[keep] + max(cc0 - wc0, 0)], axis=1)
    return tile.to_global(local)


def grow_across_tiles(
    grid: TileGrid,
    start: int,
    start_mask: np.ndarray,
    predict_in_tile: Callable[[Tile, np.ndarray], np.ndarray],
    *,
    max_tiles: int = 16,
    points_per_tile: int = 1,
) -> StitchedMask:
    """Continue a mask predicted in tile ``start`` into the neighbouring tiles it runs into.

    ``start_mask``: bool, ``grid[start].window_shape``. ``predict_in_tile(tile, points)``
    prompts ``tile`` with positive plane (row, col) points ``(k, 2)`` and returns a bool mask
    of ``tile.window_shape``. Tiles are visited breadth first; the result is their union.
    """
    masks = {start: np.asarray(start_mask, dtype=bool)}
    queue, truncated = [start], False
    while queue:
        tile = grid[queue.pop(0)]
        mask = masks[tile.index]
        if not grid.inner_edges_touched(tile, mask):
            continue
        for neighbour in _neighbours(grid, tile.index):
            if neighbour in masks:
                continue
            points = _seed_points(grid, tile, mask, grid[neighbour], points_per_tile)
            if len(points) == 0:
                continue
            if len(masks) >= max_tiles:
                truncated = True
                break
            masks[neighbour] = np.asarray(predict_in_tile(grid[neighbour], points), dtype=bool)
            queue.append(neighbour)
    return _union(grid, masks, truncated)


def _neighbours(grid: TileGrid, index: int) -> list[int]:
    rows, cols = grid.grid_shape
    i, j = divmod(index, cols)
    return [a * cols + b for a in range(max(i - 1, 0), min(i + 2, rows))
            for b in range(max(j - 1, 0), min(j + 2, cols)) if (a, b) != (i, j)]  # fmt: skip


def _union(grid: TileGrid, masks: dict[int, np.ndarray], truncated: bool) -> StitchedMask:
    windows = [grid[i].window for i in masks]
    r0, c0 = min(w[0] for w in windows), min(w[1] for w in windows)
    r1, c1 = max(w[2] for w in windows), max(w[3] for w in windows)
    out = np.zeros((r1 - r0, c1 - c0), dtype=bool)
    for index, mask in masks.items():
        wr0, wc0, wr1, wc1 = grid[index].window
        out[wr0 - r0 : wr1 - r0, wc0 - c0 : wc1 - c0] |= mask
    return StitchedMask((r0, c0), out, tuple(masks), truncated)


def default_grid(shape: tuple[int, int], image_size: int = 1024) -> TileGrid:
    """Tile and halo from the plane size and the model input side ``image_size``.

    Planes up to 1.5 x ``image_size`` on their long side are one tile (SAM's resize shrinks
    them at most 1.5x). Larger planes get a halo of ``image_size // 8`` and the fewest cores
    such that core + 2 halo fits ``image_size`` (no resize inside a tile), balanced so the
    last row / column of tiles is not a sliver.
    """
    if max(shape) <= 1.5 * image_size:
        return TileGrid(shape)
    halo = image_size // 8
    target = image_size - 2 * halo
    core = tuple(math.ceil(side / math.ceil(side / target)) for side in shape)
    return TileGrid(shape, (int(core[0]), int(core[1])), (halo, halo))


def magnified_grid(shape: tuple[int, int], image_size: int, magnification: float,
                   halo: int | None = None) -> TileGrid:  # fmt: skip
    """Tiles that show the model the plane ``magnification`` times larger than one resize
    would: ``ceil(side * magnification / image_size)`` cores per axis, a ``halo`` of plane
    pixels (default ``image_size // 8``; clipped to the plane), each window resized to
    ``image_size`` (a smaller halo magnifies a little more). 1 or less:
    :func:`default_grid`. (Small objects on a coarse embedding grid: the decoder modes'
    ``magnification``.)"""
    if magnification <= 1:
        return default_grid(shape, image_size)
    counts = [max(1, math.ceil(side * magnification / image_size)) for side in shape]
    if counts == [1, 1]:
        return TileGrid(shape)
    core = tuple(math.ceil(side / n) for side, n in zip(shape, counts, strict=True))
    halo = image_size // 8 if halo is None else halo
    return TileGrid(shape, (int(core[0]), int(core[1])), (halo, halo))


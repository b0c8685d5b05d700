"""Prompt one object on one slice of a (possibly tiled) stack: the one 2D prompting path.

:func:`segment_plane` takes a :class:`~napari_sam.prompts.Prompt` in plane ``(row, col)``
pixels, routes it to the tile whose window holds it (:meth:`TileGrid.route`), decodes it
there with the predictor, continues the mask into the neighbouring tiles the object runs into
(:func:`~napari_sam.tile_grid.grow_across_tiles`), and returns the object on the whole plane.
An untiled slice is the grid of one tile whose window is the plane, so the plain case is this
same code with no growth. A small object is then decoded once more on a magnified window
around it (:mod:`napari_sam.zoom`) when the embeddings can embed any window. CLI, propagation
(:mod:`napari_sam.propagation`) and widgets use it.

Embeddings come from a :class:`TiledEmbeddings`: a :class:`~napari_sam.stack_embeddings.StackEmbeddings`
(store-backed, shared with the widget's cache) or :class:`WindowEmbeddings` (computed in
process at full precision, no store).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from napari_sam.lru import LRU
from napari_sam.prompts import PointLabel, Prompt
from napari_sam.tile_grid import Box, Tile, TileGrid, contains, grow_across_tiles, pixel_box
from napari_sam.transforms import ObjectMask
from napari_sam.zoom import ZoomConfig, resolve_zoom, window_cache, zoom_window


class TiledEmbeddings(Protocol):
    """Embeddings per (slice, tile): ``grid`` (the plane's :class:`TileGrid`) and
    ``get(slice_index, tile) -> ImageEmbedding`` of ``grid[tile].window`` of that slice.
    :class:`~napari_sam.stack_embeddings.StackEmbeddings` with a ``PredictorEmbedder`` is one."""

    grid: TileGrid

    def get(self, slice_index: int, tile: int = 0) -> Any: ...


class WindowSource(Protocol):
    """Embeddings that can also embed any ``window`` (row0, col0, row1, col1) of a slice,
    with the same preprocessing as their tiles (what :mod:`napari_sam.zoom` needs)."""

    def window(self, slice_index: int, window: Box) -> Any: ...


class WindowEmbeddings:
    """:class:`TiledEmbeddings` computed on demand by ``embed(slice_index, window)`` (window:
    ``(row0, col0, row1, col1)`` of the plane) -> ``ImageEmbedding``; the last
    ``cache_size`` are kept in memory. No store, no float16 rounding."""

    def __init__(
        self, grid: TileGrid, embed: Callable[[int, Box], Any], cache_size: int = 4
    ) -> None:
        self.grid, self._embed, self.cache_size = grid, embed, cache_size
        self._cache: LRU[tuple[int, int], Any] = LRU(cache_size)
        self._windows = window_cache()
        self.computed = 0

    def get(self, slice_index: int, tile: int = 0) -> Any:
        return self._cache.get_or_compute((slice_index, tile),
                                          lambda: self._compute(slice_index, tile))  # fmt: skip

    def _compute(self, slice_index: int, tile: int) -> Any:
        self.computed += 1
        return self._embed(slice_index, self.grid[tile].window)

    def window(self, slice_index: int, window: Box) -> Any:
        """The embedding of any ``window`` of slice ``slice_index`` (a few kept)."""
        return self._windows.get_or_compute((slice_index, window),
                                            lambda: self._embed(slice_index, window))  # fmt: skip


@dataclass(frozen=True, eq=False)
class PlaneMask:
    """One object segmented on one slice.

    mask: the object on the whole plane (``mask.shape`` = the plane's (H, W)); score: the
    predicted IoU (float) in the tile first prompted; tile: that tile's index; logits:
    (L, L) float32 low-res logits of the chosen mask in that tile's window frame (feed back
    with ``Prompt.with_mask_logits`` and ``tile=``); tiles: every tile that contributed;
    truncated: the object still went on when ``max_tiles`` stopped the growth.
    """

    mask: ObjectMask
    score: float
    tile: int
    logits: np.ndarray
    tiles: tuple[int, ...] = ()
    truncated: bool = False
    zoomed: Box | None = None


def anchor_points(prompt: Prompt) -> np.ndarray:
    """Plane ``(row, col)`` points (N, 2) that say where a prompt is: its points, its box
    corners and its mask's bounding-box corners (what tile routing looks at)."""
    parts = [prompt.points]
    if prompt.box is not None:
        parts.append(prompt.box.reshape(2, 2))
    if prompt.mask is not None:
        rows, cols = np.nonzero(prompt.mask)
        parts.append(np.array([[rows.min(), cols.min()], [rows.max(), cols.max()]], float))
    return np.concatenate(parts).reshape(-1, 2)


def localise(prompt: Prompt, tile: Tile) -> Prompt:
    """A plane prompt in ``tile``'s window frame: points inside the window (others dropped),
    the box shifted and clipped to the window's pixels as :meth:`Prompt.within` clips to the
    image's (a one-pixel box on the window's last row stays a box), a plane-sized mask cropped
    to the window (dropped where empty there), mask logits kept as they are (they are per
    window)."""
    r0, c0, r1, c1 = tile.window
    local = tile.to_local(prompt.points)
    inside = (local >= -0.5).all(1) & (local[:, 0] < r1 - r0 - 0.5) & (local[:, 1] < c1 - c0 - 0.5)
    box = None
    if prompt.box is not None:
        corners = tile.to_local(prompt.box.reshape(2, 2))
        corners = np.clip(corners, -0.5, [r1 - r0 - 0.5, c1 - c0 - 0.5]).reshape(-1)
        box = corners if corners[2] > corners[0] and corners[3] > corners[1] else None
    mask = None
    if prompt.mask is not None:
        mask = prompt.mask[r0:r1, c0:c1]
        mask = mask if mask.any() else None
    return Prompt(points=local[inside], labels=prompt.labels[inside], box=box, mask=mask,
                  mask_logits=prompt.mask_logits)  # fmt: skip


def positives_to_try(prompt: Prompt, multimask: str) -> Prompt | None:
    """The prompt of ``prompt``'s positive points alone, to segment first
    (:meth:`~napari_sam.prompts.Prompt.positives_first`), or None: also when ``multimask``
    names one of SAM's candidates ("0"-"3": the widget's candidate key shows the model's
    own candidates for the whole prompt)."""
    return None if multimask.isdigit() else prompt.positives_first()


def answers_whole(prompt: Prompt, mask: ObjectMask) -> bool:
    """Whether ``mask``, of ``prompt``'s positive points alone, answers the whole prompt: it
    covers one of its positive points and none of its negative ones."""
    positives = prompt.points[prompt.labels != PointLabel.NEGATIVE]
    return bool(mask.holds(positives).any() and not mask.holds(prompt.negatives).any())


def segment_plane(
    embeddings: TiledEmbeddings,
    predictor,
    slice_index: int,
    prompt: Prompt,
    *,
    tile: int | None = None,
    max_tiles: int = 16,
    zoom: ZoomConfig | str | None = "auto",
    multimask: str = "auto",
    positives_first: bool = True,
) -> PlaneMask:
    """Segment the object ``prompt`` describes on slice ``slice_index``, whole.

    prompt: plane ``(row, col)`` pixels; a dense ``mask`` is plane-sized (H, W) bool;
    ``mask_logits`` are in the window frame of tile ``tile`` (e.g. ``PlaneMask.logits`` with
    ``PlaneMask.tile``), which must then be given. tile: prompt this tile (default: routed).
    predictor: a :class:`~napari_sam.predictor.Predictor` whose signature made the embeddings.
    zoom: decode a small object again on a magnified window (see
    :func:`~napari_sam.zoom.resolve_zoom`; needs embeddings with a ``window`` method).
    multimask: which of SAM's masks the prompt gets
    (:func:`~napari_sam.predictor.mask_choice`). positives_first: for points alone of both
    kinds, segment the positive points alone first and keep that mask when it covers a
    positive point and no negative one (:func:`positives_to_try`, :func:`answers_whole`;
    False: the model's answer to the whole prompt). Raises ``ValueError`` for a prompt that
    does not fit the plane.
    """
    grid = embeddings.grid
    prompt.validate(grid.shape)
    alone = positives_to_try(prompt, multimask) if positives_first else None
    if alone is not None:
        plane = segment_plane(embeddings, predictor, slice_index, alone, tile=tile,
                              max_tiles=max_tiles, zoom=zoom, multimask=multimask)  # fmt: skip
        if answers_whole(prompt, plane.mask):
            return plane
    if tile is None:
        if prompt.mask_logits is not None and grid.n_tiles > 1:
            raise ValueError("mask logits belong to one tile's window: say which (tile=)")
        tile = grid.route(anchor_points(prompt)) if grid.n_tiles > 1 else 0
    start = grid[tile]
    try:
        local = localise(prompt, start)
    except ValueError:
        raise ValueError(f"the prompt lies outside tile {tile}'s window {start.window}") from None
    prediction = predictor.predict(embeddings.get(slice_index, tile), local, multimask)
    first = prediction.masks[0]
    score, logits = float(prediction.scores[0]), prediction.logits[0].numpy()
    zoom = resolve_zoom(zoom, predictor.config.name) if hasattr(embeddings, "window") else None
    if grid.n_tiles == 1:
        plane = PlaneMask(first, score, tile, logits, (tile,))
        return _zoomed(embeddings, predictor, slice_index, prompt, plane, start, zoom, multimask)

    negatives = prompt.negatives

    def predict_in_tile(neighbour: Tile, points: np.ndarray) -> np.ndarray:
        seeds = Prompt.from_points(np.concatenate([points, negatives]),
                                   [1] * len(points) + [0] * len(negatives))  # fmt: skip
        result = predictor.predict(embeddings.get(slice_index, neighbour.index),
                                   localise(seeds, neighbour), multimask)  # fmt: skip
        return result.masks[0].to_array()

    stitched = grow_across_tiles(grid, tile, first.to_array(), predict_in_tile,
                                 max_tiles=max_tiles)  # fmt: skip
    mask = crop_mask(stitched.mask, stitched.origin, grid.shape)
    plane = PlaneMask(mask, score, tile, logits, stitched.tiles, stitched.truncated)
    if len(stitched.tiles) > 1:
        return plane  # the object is not small
    return _zoomed(embeddings, predictor, slice_index, prompt, plane, start, zoom, multimask)


def _zoomed(
    embeddings: WindowSource, predictor, slice_index: int, prompt: Prompt, plane: PlaneMask,
    start: Tile, zoom: ZoomConfig | None, multimask: str = "auto",
) -> PlaneMask:
    """``plane`` with its mask from :func:`zoom_in` (as it is where that gives None)."""
    if zoom is None:
        return plane
    zoomed = zoom_in(embeddings, predictor, slice_index, prompt, plane.mask, start.window, zoom,
                     multimask)  # fmt: skip
    return plane if zoomed is None else replace(plane, mask=zoomed[0], zoomed=zoomed[1])


def zoom_in(
    embeddings: WindowSource, predictor, slice_index: int, prompt: Prompt, mask: ObjectMask,
    first_window: Box, zoom: ZoomConfig, multimask: str = "auto",
) -> tuple[ObjectMask, Box] | None:
    """The object of ``prompt`` (plane ``(row, col)``), first segmented as ``mask`` in
    ``first_window``, decoded again on a magnified window around it: ``(plane mask,
    window)``. None when the window would not magnify (:func:`~napari_sam.zoom.zoom_window`),
    a positive point or the box falls outside it, or the new mask is empty or runs into the
    window's edge inside the plane (the object is larger than the first mask said)."""
    shape = mask.shape
    window = zoom_window(mask.bbox, shape, first_window, zoom)
    if window is None:
        return None
    try:
        local = localise(replace(prompt, mask_logits=None), Tile(-1, window, window))
    except ValueError:  # nothing of the prompt is in the window (the mask missed the click)
        return None
    positives = int((prompt.labels == PointLabel.POSITIVE).sum())
    kept = int((local.labels == PointLabel.POSITIVE).sum())
    box_cut = prompt.box is not None and (local.box is None or not contains(
        window, pixel_box(prompt.box)))
    if kept < positives or box_cut or (not len(local.points) and local.box is None):
        return None
    result = predictor.predict(embeddings.window(slice_index, window), local, multimask).masks[0]
    if not result.area:
        return None
    r0, c0, r1, c1 = result.bbox
    h, w = window[2] - window[0], window[3] - window[1]
    edges = ((r0 == 0, window[0] > 0), (c0 == 0, window[1] > 0),
             (r1 == h, window[2] < shape[0]), (c1 == w, window[3] < shape[1]))
    if any(at_edge and inside for at_edge, inside in edges):
        return None
    return ObjectMask(result.crop, (window[0] + r0, window[1] + c0), shape), window


def crop_mask(mask: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]) -> ObjectMask:
    """A bool (h, w) ``mask`` placed at ``origin`` (row, col) of a ``shape`` plane, as an
    :class:`ObjectMask` cropped to its pixels."""
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    if not len(rows):
        return ObjectMask(np.zeros((0, 0), dtype=bool), (0, 0), shape)
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return ObjectMask(crop.copy(), (origin[0] + rows[0], origin[1] + cols[0]), shape)

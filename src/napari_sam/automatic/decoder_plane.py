"""One 2D plane segmented with the instance decoder (AIS or APG), over its tiles.

The decoder's maps of each tile's window are kept on the tile's core, so the plane's maps
are one mosaic whatever the tiling, and the watershed (AIS) and the seeds (APG) run once on
the whole plane: an object across a tile border is one object. APG then decodes each seed's
prompt on the tile whose window holds it with most room (:meth:`TileGrid.route`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import numpy as np

from napari_sam.automatic.config import DecoderModeConfig
from napari_sam.automatic.instances import instances_from_distances
from napari_sam.automatic.plane import Progress
from napari_sam.automatic.prompt_generation import (
    GeneratedMask,
    boxes_at,
    decode_prompts,
    generated_labels,
    seed_points,
)
from napari_sam.model.instance_decoder import Channel
from napari_sam.tile_grid import TileGrid
from napari_sam.transforms import ObjectMask

#: ``embedding_of(tile_index)``: the tile's embedding and its (h, w, 3) model image, or None
#: when the tile is blank
EmbeddingOf = Callable[[int], "tuple[object, np.ndarray] | None"]


def plane_steps(grid: TileGrid) -> int:
    """Progress steps of :func:`decoder_plane_steps`: per tile, its maps and its prompts."""
    return 2 * grid.n_tiles


def plane_maps(predictor, grid: TileGrid, embedding_of: EmbeddingOf
               ) -> Generator[Progress, None, np.ndarray]:  # fmt: skip
    """(3, H, W) float32 maps of the plane, tile by tile (background where a tile is blank)."""
    maps = np.ones((len(Channel), *grid.shape), np.float32)
    maps[Channel.FOREGROUND] = 0
    for tile in grid.tiles:
        found = embedding_of(tile.index)
        if found is not None:
            window = predictor.instance_maps(*found)  # (3, h, w) of the window
            (r0, c0, r1, c1), (wr, wc) = tile.core, tile.window[:2]
            maps[:, r0:r1, c0:c1] = window[:, r0 - wr : r1 - wr, c0 - wc : c1 - wc]
        yield tile.index + 1, plane_steps(grid)
    return maps


def decoder_plane_steps(predictor, grid: TileGrid, embedding_of: EmbeddingOf,
                        config: DecoderModeConfig) -> Generator[Progress, None, np.ndarray]:  # fmt: skip
    """(H, W) int32 labels of one plane by ``config.mode``; yields ``(done, total)``."""
    maps = yield from plane_maps(predictor, grid, embedding_of)
    instances = instances_from_distances(*maps, config.instances)
    if config.mode == "ais":
        yield plane_steps(grid), plane_steps(grid)
        return instances
    settings, thresholds = config.prompts, config.instances
    points = seed_points(maps, thresholds.foreground_threshold,
                         thresholds.center_distance_threshold,
                         thresholds.boundary_distance_threshold)  # fmt: skip
    boxes = (boxes_at(points, instances, settings.box_margin) if settings.with_box
             else [None] * len(points))  # fmt: skip
    by_tile: dict[int, list[int]] = {}
    for i, (point, box) in enumerate(zip(points, boxes, strict=True)):
        corners = np.asarray(point, float)[None] if box is None else box.reshape(2, 2)
        by_tile.setdefault(grid.route(corners), []).append(i)
    masks: list[GeneratedMask] = []
    for tile in grid.tiles:
        members = by_tile.get(tile.index, [])
        found = embedding_of(tile.index) if members else None
        if found is not None:
            embedding = found[0]
            origin = np.array(tile.window[:2] * 2, dtype=np.float64)
            local_points = tile.to_local(points[members])
            local_boxes = [None if boxes[i] is None else
                           clip_box(boxes[i] - origin, tile.window_shape) for i in members]  # fmt: skip
            for found in decode_prompts(predictor, embedding, local_points, local_boxes,
                                        settings):  # fmt: skip
                masks.extend(_to_plane(m, tile.window[:2], grid.shape) for m in found)
        yield grid.n_tiles + tile.index + 1, plane_steps(grid)
    return generated_labels(masks, grid.shape, settings)


def clip_box(box: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (row0, col0, row1, col1) box clipped to pixel centres of a ``shape`` window."""
    high = np.array([shape[0] - 1, shape[1] - 1] * 2, dtype=np.float64)
    return np.clip(box, 0, high)


def _to_plane(m: GeneratedMask, origin: tuple[int, int], shape: tuple[int, int]) -> GeneratedMask:
    """A window's mask in the plane's coordinates."""
    r, c = origin
    if (r, c) == (0, 0) and m.mask.shape == shape:
        return m
    mask = ObjectMask(m.mask.crop, (m.mask.offset[0] + r, m.mask.offset[1] + c), shape)
    box = (m.box[0] + r, m.box[1] + c, m.box[2] + r, m.box[3] + c)
    return GeneratedMask(mask, box, m.score, (m.point[0] + r, m.point[1] + c))

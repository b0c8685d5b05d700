"""Find the objects like the examples on one 2D plane, over its tiles ("find similar").

1. The plane's likeness map (:func:`~napari_sam.automatic.exemplars.score_map` per tile,
   kept on each tile's core) against the examples and the plane's own background.
2. Prompts: the map's peaks, and the peaks of the distance to the edge of the region that is
   like the examples, spaced by the examples' size; with the instance decoder's seeds (and
   their objects' boxes, as APG) where the model has one and they lie in that region.
3. Each prompt is decoded on the tile whose window holds it best; of SAM's four masks the
   one kept is the best by predicted IoU (plus ``likeness_weight`` x likeness) among those
   of the examples' size and like the examples. Then objects on committed pixels lose those
   pixels (and go when too little is left), non-maximum suppression removes duplicates, and
   the rest are painted best first.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
import torch
from scipy import ndimage

from napari_sam.automatic.config import DecoderModeConfig
from napari_sam.automatic.decoder_plane import EmbeddingOf, clip_box, plane_maps
from napari_sam.automatic.exemplars import (
    Exemplars,
    SimilarSettings,
    background_prototype,
    likeness,
    pooled_feature,
    score_map,
    window_contrast,
)
from napari_sam.automatic.instances import instances_from_distances
from napari_sam.automatic.mask_ops import paint_labels, tight_box
from napari_sam.automatic.plane import Progress
from napari_sam.automatic.prompt_generation import GeneratedMask, boxes_at, mask_nms, seed_points
from napari_sam.jobs import shifted
from napari_sam.prompts import Prompt
from napari_sam.tile_grid import TileGrid
from napari_sam.transforms import ObjectMask


def similar_steps(grid: TileGrid, decoder: bool) -> int:
    """Progress steps of :func:`similar_plane_steps`: per tile its map, its decoder maps
    (when the decoder's seeds are used) and its prompts."""
    return (3 if decoder else 2) * grid.n_tiles


def similar_plane_steps(
    predictor, grid: TileGrid, embedding_of: EmbeddingOf, exemplars: Exemplars,
    committed: np.ndarray, settings: SimilarSettings, decoder: DecoderModeConfig | None,
) -> Generator[Progress, None, np.ndarray]:  # fmt: skip
    """(H, W) int32 labels 1..n of the objects found like ``exemplars``, 0 elsewhere and on
    every pixel where ``committed`` (H, W) is not 0. ``decoder``: the model's APG settings,
    whose seeds are prompted too (None: the likeness map's prompts alone)."""
    total = similar_steps(grid, decoder is not None)
    found = {t.index: embedding_of(t.index) for t in grid.tiles}
    windows = {i: f[0] for i, f in found.items() if f is not None}
    images = {i: f[1] for i, f in found.items() if f is not None}
    background = background_prototype(list(windows.values()), exemplars,
                                      settings.background_quantile)  # fmt: skip
    score = np.full(grid.shape, -1.0, np.float32)
    for tile in grid.tiles:
        if tile.index in windows:
            (r0, c0, r1, c1), (wr, wc) = tile.core, tile.window[:2]
            window = score_map(windows[tile.index], exemplars, background)
            score[r0:r1, c0:c1] = window[r0 - wr : r1 - wr, c0 - wc : c1 - wc]
        yield tile.index + 1, total
    points, boxes = _similarity_prompts(score, exemplars.radius, settings)
    done = grid.n_tiles
    if decoder is not None:
        maps = yield from shifted(plane_maps(predictor, grid, embedding_of), done, total)
        done += grid.n_tiles
        seeds, seed_boxes = _decoder_prompts(maps, score, decoder)
        points, boxes = _merge(seeds, seed_boxes, points, boxes, settings.min_distance
                               * exemplars.radius)  # fmt: skip
    masks: list[GeneratedMask] = []
    by_tile: dict[int, list[int]] = {}
    for i, (point, box) in enumerate(zip(points, boxes, strict=True)):
        corners = np.asarray(point, float)[None] if box is None else box.reshape(2, 2)
        by_tile.setdefault(grid.route(corners), []).append(i)
    for tile in grid.tiles:
        members = by_tile.get(tile.index, [])
        if members and tile.index in windows:
            masks += _decode(predictor, windows[tile.index], images[tile.index], tile,
                             points[members],
                             [boxes[i] for i in members], exemplars, background, settings,
                             grid.shape)  # fmt: skip
        yield done + tile.index + 1, total
    return _labels(masks, committed, settings)


def _similarity_prompts(score: np.ndarray, radius: float, settings: SimilarSettings):
    """(N, 2) ``(row, col)`` peaks of the smoothed likeness map and of the depth of the
    region like the examples, at least ``min_distance * radius`` apart; no boxes."""
    spacing = max(1, round(settings.min_distance * radius))
    region = score > 0
    smooth = ndimage.gaussian_filter(score, max(0.5, radius / 4))
    depth = ndimage.distance_transform_edt(region)
    size = 2 * spacing + 1
    peaks = (smooth == ndimage.maximum_filter(smooth, size)) & region
    deep = (depth == ndimage.maximum_filter(depth, size)) & (depth >= max(1.0, radius / 2))
    points = np.argwhere(peaks | deep).astype(np.float64)
    return points, [None] * len(points)


def _decoder_prompts(maps: np.ndarray, score: np.ndarray, decoder: DecoderModeConfig):
    """The instance decoder's seeds that lie where the plane is like the examples, with
    their objects' boxes when the model's APG settings give boxes."""
    instances = instances_from_distances(*maps, decoder.instances)
    t = decoder.instances
    seeds = seed_points(maps, t.foreground_threshold, t.center_distance_threshold,
                        t.boundary_distance_threshold)  # fmt: skip
    seeds = seeds[score[seeds[:, 0], seeds[:, 1]] > 0] if len(seeds) else seeds
    boxes = (boxes_at(seeds, instances, decoder.prompts.box_margin)
             if decoder.prompts.with_box else [None] * len(seeds))  # fmt: skip
    return seeds.astype(np.float64), boxes


def _merge(seeds, seed_boxes, points, boxes, spacing: float):
    """The decoder's seeds, then the likeness prompts farther than ``spacing`` from them."""
    if len(seeds) and len(points):
        near = np.min(np.linalg.norm(points[:, None] - seeds[None], axis=-1), axis=1)
        keep = near > spacing
        points, boxes = points[keep], [b for b, k in zip(boxes, keep, strict=True) if k]
    return np.concatenate([seeds, points]).reshape(-1, 2), list(seed_boxes) + boxes


def _decode(predictor, embedding, image, tile, points, boxes, exemplars: Exemplars,
            background: torch.Tensor, settings: SimilarSettings, shape) -> list[GeneratedMask]:  # fmt: skip
    """The prompts decoded on one tile (``image``: its model image); per prompt the best of
    SAM's four masks that is of the examples' size, like them (:func:`~.exemplars.likeness`
    > 0) and stands out from its surroundings as they do; or none."""
    low, high = exemplars.area_range(settings.size_tolerance)
    origin = tile.window[:2]
    local = tile.to_local(points)
    shift = np.array(origin * 2, np.float64)
    prompts = [
        Prompt(points=p[None], labels=np.ones(1, np.int64),
               box=None if b is None else clip_box(b - shift, tile.window_shape))
        for p, b in zip(local, boxes, strict=True)
    ]
    out = []
    for start in range(0, len(prompts), settings.batch_size):
        batch = prompts[start : start + settings.batch_size]
        prediction = predictor.predict(embedding, batch, multimask="single")
        for b, prompt in enumerate(batch):
            best = None
            for k in range(prediction.all_scores.shape[1]):
                found = tight_box(prediction.candidate(b, k))
                if found is None or not low <= found[0].area <= high:
                    continue
                like = float(likeness(pooled_feature(embedding, found[0]), exemplars,
                                      background))  # fmt: skip
                quality = float(prediction.all_scores[b, k]) + settings.likeness_weight * like
                if like <= 0 or (best is not None and quality <= best[0]):
                    continue
                if exemplars.stands_out(*window_contrast(image, found[0]),
                                        settings.min_contrast):  # fmt: skip
                    best = (quality, found)
            if best is not None:
                out.append(_in_plane(best[1], best[0], prompt.points[0], origin, shape))
    return out


def _in_plane(found, quality: float, point, origin, shape) -> GeneratedMask:
    (mask, box), (r, c) = found, origin
    plane = ObjectMask(mask.crop, (mask.offset[0] + r, mask.offset[1] + c), shape)
    return GeneratedMask(plane, (box[0] + r, box[1] + c, box[2] + r, box[3] + c), quality,
                         (float(point[0]) + r, float(point[1]) + c))  # fmt: skip


def _labels(masks: list[GeneratedMask], committed: np.ndarray,
            settings: SimilarSettings) -> np.ndarray:  # fmt: skip
    """The masks off committed pixels (those left with too little go), NMS, painted."""
    free = []
    for m in masks:
        r0, c0, r1, c1 = m.mask.bbox
        crop = m.mask.crop & (committed[r0:r1, c0:c1] == 0)
        left = int(crop.sum())
        if left and left >= settings.min_free_fraction * m.mask.area:
            trimmed = tight_box(ObjectMask(crop, m.mask.offset, m.mask.shape))
            free.append(GeneratedMask(trimmed[0], trimmed[1], m.score, m.point))
    kept = mask_nms(free, settings.nms_threshold)
    return paint_labels([m.mask for m in kept], committed.shape, 1, settings.min_free_fraction)

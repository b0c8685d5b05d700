"""Automatic prompt generation (APG): prompts from the instance decoder's maps, decoded by SAM.

micro-sam's ``AutomaticPromptGenerator``: seeds where the centre and boundary distances are
both small inside the foreground (no smoothing); each seed's connected component gives one
positive point at its point farthest from the component's edge. SAM decodes the points in
batches, masks under ``min_size`` pixels go, and non-maximum suppression on mask IoU removes
duplicates. Then the masks are painted best first (predicted IoU) into instance labels.

Ours adds two choices (:class:`PromptSettings`): the point's prompt may carry the box of
the AIS object it lies in (``with_box``), and a mask left with less than
``min_free_fraction`` of its pixels after better ones are painted is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage
from skimage.segmentation import find_boundaries

from napari_sam.automatic.mask_ops import paint_labels, tight_box
from napari_sam.model.instance_decoder import Channel
from napari_sam.prompts import Prompt
from napari_sam.transforms import ObjectMask


@dataclass(frozen=True)
class PromptSettings:
    """APG settings; the defaults of the first four are micro-sam's (``generate``).

    Attributes:
        min_size: masks with at most this many pixels are dropped.
        nms_threshold: mask IoU above which the worse of two masks is dropped.
        batch_size: prompts decoded together.
        multimask: the mask chosen per prompt (:func:`napari_sam.predictor.mask_choice`):
            "single" (micro-sam's ``multimasking=False``), "best", "any" or "auto".
        with_box: give each point the box of the AIS object it lies in (with ``box_margin``
            pixels added per side).
        min_free_fraction: paint a mask only where at least this fraction of it is left by
            better masks.
    """

    min_size: int = 25
    nms_threshold: float = 0.9
    batch_size: int = 32
    multimask: Literal["single", "best", "any", "auto"] = "single"
    with_box: bool = False
    box_margin: int = 2
    min_free_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.min_size < 0 or self.batch_size < 1 or self.box_margin < 0:
            raise ValueError("min_size and box_margin must be >= 0 and batch_size >= 1")
        if not 0 <= self.nms_threshold <= 1 or not 0 <= self.min_free_fraction <= 1:
            raise ValueError("nms_threshold and min_free_fraction must be in [0, 1]")


@dataclass(frozen=True, eq=False)
class GeneratedMask:
    """One decoded prompt: its mask (tight crop), inclusive box ``(row0, col0, row1, col1)``
    and predicted IoU, and the ``(row, col)`` point it came from."""

    mask: ObjectMask
    box: tuple[int, int, int, int]
    score: float
    point: tuple[float, float]


def seed_points(maps: np.ndarray, foreground_threshold: float = 0.5,
                center_distance_threshold: float = 0.5,
                boundary_distance_threshold: float = 0.5) -> np.ndarray:  # fmt: skip
    """(N, 2) int ``(row, col)``: one point per seed component of the decoder's ``maps``
    (3, H, W) (micro-sam's ``_derive_point_prompts``): its pixel farthest from the
    component's outer boundary, away from the image border."""
    seeds = (
        (maps[Channel.CENTER_DISTANCE] < center_distance_threshold)
        & (maps[Channel.BOUNDARY_DISTANCE] < boundary_distance_threshold)
        & (maps[Channel.FOREGROUND] >= foreground_threshold)
    )
    components, n = ndimage.label(seeds)
    if n == 0:
        return np.zeros((0, 2), np.int64)
    inside = find_boundaries(components, mode="outer") == 0
    inside[[0, -1], :] = False
    inside[:, [0, -1]] = False
    depth = ndimage.distance_transform_edt(inside)
    # the deepest pixel of each component, the first in raster order among equals (as
    # micro-sam's np.argmax over the component's box)
    flat = np.flatnonzero(components)
    ids, values = components.ravel()[flat], depth.ravel()[flat]
    order = np.lexsort((flat, -values, ids))  # by id, then deepest, then raster order
    first = order[np.r_[0, np.flatnonzero(np.diff(ids[order])) + 1]]
    return np.stack(np.unravel_index(flat[first], components.shape), axis=1).astype(np.int64)


def boxes_at(points: np.ndarray, instances: np.ndarray, margin: int) -> list[np.ndarray | None]:
    """For each ``(row, col)`` point, the box ``(row0, col0, row1, col1)`` (through pixel
    centres) of the object of ``instances`` (H, W) it lies in, grown by ``margin`` and
    clipped to the image; None where it lies in the background."""
    found = ndimage.find_objects(instances)
    rows, cols = instances.shape
    out: list[np.ndarray | None] = []
    for r, c in np.asarray(points, dtype=np.int64):
        obj = int(instances[r, c])
        if obj == 0 or found[obj - 1] is None:
            out.append(None)
            continue
        sr, sc = found[obj - 1]
        out.append(np.array([max(sr.start - margin, 0), max(sc.start - margin, 0),
                             min(sr.stop - 1 + margin, rows - 1),
                             min(sc.stop - 1 + margin, cols - 1)], dtype=np.float64))  # fmt: skip
    return out


def decode_prompts(predictor, embedding, points: np.ndarray, boxes: list[np.ndarray | None],
                   settings: PromptSettings):  # fmt: skip
    """Yields, per batch of ``settings.batch_size`` prompts, the list of their
    :class:`GeneratedMask` s with more than ``min_size`` pixels. ``points`` (N, 2) ``(row,
    col)`` of the embedded image; ``boxes``: each point's box or None."""
    prompts = [
        Prompt(points=np.asarray([p], np.float64), labels=np.ones(1, np.int64), box=box)
        for p, box in zip(points, boxes, strict=True)
    ]
    for start in range(0, len(prompts), settings.batch_size):
        batch = prompts[start : start + settings.batch_size]
        prediction = predictor.predict(embedding, batch, multimask=settings.multimask)
        out = []
        for prompt, mask, score in zip(batch, prediction.masks, prediction.scores, strict=True):
            found = tight_box(mask)
            if found is None or found[0].area <= settings.min_size:
                continue
            point = (float(prompt.points[0, 0]), float(prompt.points[0, 1]))
            out.append(GeneratedMask(found[0], found[1], float(score), point))
        yield out


def mask_nms(masks: list[GeneratedMask], iou_threshold: float) -> list[GeneratedMask]:
    """Greedy NMS on mask IoU, best (predicted IoU) first: the masks kept, in that order."""
    order = sorted(masks, key=lambda m: -m.score)
    kept: list[GeneratedMask] = []
    for m in order:
        if all(_mask_iou(m, k) <= iou_threshold for k in kept):
            kept.append(m)
    return kept


def _mask_iou(a: GeneratedMask, b: GeneratedMask) -> float:
    ar0, ac0, ar1, ac1 = a.mask.bbox
    br0, bc0, br1, bc1 = b.mask.bbox
    r0, c0, r1, c1 = max(ar0, br0), max(ac0, bc0), min(ar1, br1), min(ac1, bc1)
    if r0 >= r1 or c0 >= c1:
        return 0.0
    pa = a.mask.crop[r0 - ar0 : r1 - ar0, c0 - ac0 : c1 - ac0]
    pb = b.mask.crop[r0 - br0 : r1 - br0, c0 - bc0 : c1 - bc0]
    inter = np.count_nonzero(pa & pb)
    return inter / (a.mask.area + b.mask.area - inter)


def generated_labels(masks: list[GeneratedMask], shape: tuple[int, int],
                     settings: PromptSettings) -> np.ndarray:  # fmt: skip
    """(rows, cols) int32 labels of the masks left by :func:`mask_nms`, painted best first."""
    kept = mask_nms(masks, settings.nms_threshold)
    return paint_labels([m.mask for m in kept], shape, settings.min_size + 1,
                        settings.min_free_fraction)  # fmt: skip

"""Mask helpers of automatic segmentation: point grids, crop boxes, boxes, NMS, clean-up.

No run-length encoding: masks stay :class:`~napari_sam.transforms.ObjectMask` s (a bool
crop and its offset). Coordinates are napari ``(row, col)``. Boxes here follow the
reference generator so that duplicate removal decides alike: ``(row0, col0, row1, col1)``
with the *last* row / col inside the mask (inclusive), area ``(row1 - row0) * (col1 - col0)``.
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np
from scipy import ndimage

from napari_sam.transforms import ObjectMask

Box = tuple[int, int, int, int]

_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity


def point_grid(n_per_side: int) -> np.ndarray:
    """(n^2, 2) float64 ``(row, col)`` points evenly spaced in [0, 1]^2 (cell centres), rows
    outer, as the reference generator orders them."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    rows, cols = np.meshgrid(side, side, indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=1)


def crop_boxes(
    shape: tuple[int, int], n_layers: int, overlap_ratio: float
) -> list[tuple[Box, int]]:
    """Crops ``((row0, col0, row1, col1) end exclusive, layer)``: the whole image (layer 0),
    then ``(2^i)^2`` overlapping crops for layer i = 1..n_layers (the reference's layout)."""
    rows, cols = shape
    out: list[tuple[Box, int]] = [((0, 0, rows, cols), 0)]
    short = min(rows, cols)
    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * short * (2 / n))
        crop_r = math.ceil((overlap * (n - 1) + rows) / n)
        crop_c = math.ceil((overlap * (n - 1) + cols) / n)
        starts_c = [int((crop_c - overlap) * i) for i in range(n)]
        starts_r = [int((crop_r - overlap) * i) for i in range(n)]
        for c0, r0 in product(starts_c, starts_r):
            out.append(((r0, c0, min(r0 + crop_r, rows), min(c0 + crop_c, cols)), layer))
    return out


def tight_box(mask: ObjectMask) -> tuple[ObjectMask, Box] | None:
    """``mask`` trimmed to its pixels and its inclusive box; None when it is empty. The
    trimmed crop is a copy: a view would keep the whole (image-sized) array alive."""
    crop = mask.crop
    rows = np.flatnonzero(crop.any(1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(crop.any(0))
    r0, r1, c0, c1 = rows[0], rows[-1], cols[0], cols[-1]
    trimmed = ObjectMask(crop[r0 : r1 + 1, c0 : c1 + 1].copy(),
                         (mask.offset[0] + int(r0), mask.offset[1] + int(c0)), mask.shape)  # fmt: skip
    R, C = mask.offset
    return trimmed, (R + int(r0), C + int(c0), R + int(r1), C + int(c1))


def near_crop_edge(box: Box, crop: Box, image: Box, atol: float = 20.0) -> bool:
    """Whether an (inclusive, image coordinates) box lies within ``atol`` px of an edge of
    the end-exclusive ``crop`` that is not an edge of ``image`` (cut by the crop)."""
    b, c, i = (np.asarray(x, dtype=np.float64) for x in (box, crop, image))
    return bool(np.any((np.abs(b - c) <= atol) & ~(np.abs(b - i) <= atol)))


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the boxes kept, by decreasing score
    (ties: earlier first). boxes (N, 4) inclusive; a box whose IoU with a kept, better box
    is above ``iou_thresh`` is dropped."""
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    b = np.asarray(boxes, dtype=np.float64)[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = slice(i + 1, n)
        h = np.clip(np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]), 0, None)
        w = np.clip(np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]), 0, None)
        inter = h * w
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / (area[i] + area[rest] - inter)
        suppressed[rest] |= iou > iou_thresh
    return order[np.asarray(keep, dtype=np.int64)]


def clean_small_regions(mask: ObjectMask, min_area: int) -> tuple[ObjectMask, bool]:
    """Fill holes, then drop islands, smaller than ``min_area`` pixels (8-connected); if
    every island is small the largest stays. Returns the mask and whether it changed.

    Background touching the mask's box (connected to the outside) is never a hole.
    """
    crop = mask.crop
    changed = False
    padded = np.pad(~crop, 1, constant_values=True)
    holes, n = ndimage.label(padded, structure=_EIGHT)
    if n > 1:
        sizes = np.bincount(holes.ravel())
        outer = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
        small = sizes < min_area
        small[0] = False
        small[outer] = False
        if small.any():
            crop = crop | small[holes[1:-1, 1:-1]]
            changed = True
    islands, n = ndimage.label(crop, structure=_EIGHT)
    if n > 0:
        sizes = np.bincount(islands.ravel())
        sizes[0] = 0
        big = sizes >= min_area
        big[0] = False
        if not big[1:].all():
            if not big.any():
                big[int(np.argmax(sizes))] = True
            crop = big[islands]
            changed = True
    return ObjectMask(crop, mask.offset, mask.shape), changed


def paint_labels(masks: list[ObjectMask], shape: tuple[int, int], min_area: int = 1,
                 min_free: float = 0.0) -> np.ndarray:  # fmt: skip
    """Instance labels (rows, cols) int32 from masks given best first: each mask takes the
    pixels no better mask took; a mask left with fewer than ``min_area`` pixels, or with less
    than the ``min_free`` fraction of its own, is dropped (a part or a duplicate of objects
    already painted). Ids are 1..n in painting order."""
    labels = np.zeros(shape, dtype=np.int32)
    next_id = 1
    for mask in masks:
        r0, c0, r1, c1 = mask.bbox
        window = labels[r0:r1, c0:c1]
        free = mask.crop & (window == 0)
        n_free = np.count_nonzero(free)
        if n_free < max(min_area, 1) or n_free < min_free * mask.area:
            continue
        window[free] = next_id
        next_id += 1
    return labels

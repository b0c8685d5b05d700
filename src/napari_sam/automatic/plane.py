"""Segment everything on one 2D image: a grid of point prompts decoded from one embedding.

Per batch of grid points: one prompt-encoder + mask-decoder pass gives 3 candidate masks per
point as low-res logits (B, 3, L, L). Candidates are filtered in low res where that is exact
(predicted IoU; logits that never reach the thresholds), and only the survivors are upsampled
to the image (:func:`~napari_sam.transforms.upsample_logits`, SAM's own postprocessing) for
the stability score, computed at full resolution as the reference does. Then duplicates go by
box NMS, per crop and between crops, holes and islands are cleaned, and the masks are painted
into instance labels, best first. No full-image logits
and no RLE round trip: masks stay bounding crops.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch

from napari_sam.automatic.config import AutoMaskConfig
from napari_sam.automatic.mask_ops import (
    Box,
    box_nms,
    clean_small_regions,
    crop_boxes,
    near_crop_edge,
    paint_labels,
    point_grid,
    tight_box,
)
from napari_sam.prompts import Prompt
from napari_sam.transforms import ObjectMask, upsample_logits

Progress = tuple[int, int]
"""``(done, total)`` steps; a step is one embedding or one decoded batch of points."""


@dataclass(frozen=True, eq=False)
class AutoMask:
    """One mask found by the grid, before painting.

    mask: the object at the image's resolution (tight bounding crop); box: inclusive
    ``(row0, col0, row1, col1)``; predicted_iou, stability_score: the quality scores it was
    filtered on; point: the ``(row, col)`` prompt that produced it; crop: the end-exclusive
    ``(row0, col0, row1, col1)`` crop of the image it was decoded on.
    """

    mask: ObjectMask
    box: Box
    predicted_iou: float
    stability_score: float
    point: tuple[float, float]
    crop: Box

    @property
    def area(self) -> int:
        return self.mask.area

    def quality(self, stability_weight: float = 0.0) -> float:
        """The ranking score: predicted IoU x stability score ** ``stability_weight``."""
        if stability_weight == 0:
            return self.predicted_iou
        return self.predicted_iou * self.stability_score**stability_weight


def plan_steps(shape: tuple[int, int], config: AutoMaskConfig) -> int:
    """Progress steps of :func:`generate_masks_steps` on a ``shape`` image: one per crop
    embedding after the first (given) one, one per decoded batch."""
    steps = 0
    for _, layer in crop_boxes(shape, config.crop_n_layers, config.crop_overlap_ratio):
        n = int(config.points_per_side / config.crop_n_points_downscale_factor**layer)
        steps += (layer > 0) + -(-(n * n) // config.points_per_batch)
    return steps


def generate_masks_steps(
    predictor, embedding, config: AutoMaskConfig, image: np.ndarray | None = None
) -> Generator[Progress, None, list[AutoMask]]:
    """All masks of one embedded 2D image; yields progress, returns the masks.

    predictor: :class:`~napari_sam.predictor.Predictor`; embedding: its
    :class:`~napari_sam.predictor.ImageEmbedding` of the image; image: the model image
    (H, W, 3) uint8 or float32 on 0-255 (see :func:`napari_sam.image.to_model_image`),
    needed only when ``config.crop_n_layers > 0`` (crops are embedded anew).
    Masks are in the image's coordinates, in no particular order.
    """
    shape = embedding.original_size
    crops = crop_boxes(shape, config.crop_n_layers, config.crop_overlap_ratio)
    if len(crops) > 1 and image is None:
        raise ValueError("crop layers need the model image to embed the crops")
    total, done = plan_steps(shape, config), 0
    found: list[AutoMask] = []
    for crop, layer in crops:
        if layer == 0:
            crop_embedding = embedding
        else:
            r0, c0, r1, c1 = crop
            crop_embedding = predictor.embed(image[r0:r1, c0:c1], rgb=True,
                                             contrast_limits=(0, 255))  # fmt: skip
            done += 1
            yield done, total
        n = int(config.points_per_side / config.crop_n_points_downscale_factor**layer)
        batches = _crop_masks(predictor, crop_embedding, n, config, crop, shape)
        in_crop: list[AutoMask] = []
        for masks in batches:
            in_crop.extend(masks)
            done += 1
            yield done, total
        # NMS within the crop now, so that only its survivors are held
        found.extend(_uncrop(m, crop, shape) for m in _crop_nms(in_crop, config))
    return _across_crops(found, config)


def select_masks(masks: list[AutoMask], config: AutoMaskConfig) -> list[AutoMask]:
    """The masks of ``masks`` (decoded candidates, image coordinates) that automatic mode
    keeps: those passing the quality filters; NMS within each crop (by
    :meth:`AutoMask.quality`); with crop layers, NMS between crops (masks of smaller crops
    preferred); then holes and islands cleaned (``min_mask_region_area``).

    :func:`generate_masks_steps` does the same as it decodes (filters in low res, NMS per
    crop as each crop ends). Applied to candidates decoded once with loose filters, it gives
    what stricter settings would have (``benchmarks/sweep_auto.py``).
    """
    by_crop: dict[Box, list[AutoMask]] = {}
    for m in masks:
        if config.pred_iou_thresh > 0 and not m.predicted_iou > config.pred_iou_thresh:
            continue
        if config.stability_score_thresh > 0 and m.stability_score < config.stability_score_thresh:
            continue
        by_crop.setdefault(m.crop, []).append(m)
    return _across_crops([m for group in by_crop.values() for m in _crop_nms(group, config)],
                         config)  # fmt: skip


def _across_crops(found: list[AutoMask], config: AutoMaskConfig) -> list[AutoMask]:
    """Masks already suppressed within their crop: NMS between crops (with crop layers),
    then holes and islands cleaned."""
    if config.crop_n_layers > 0:
        # between crops prefer masks from smaller crops
        scores = [1 / ((m.crop[2] - m.crop[0]) * (m.crop[3] - m.crop[1])) for m in found]
        keep = box_nms(np.array([m.box for m in found]).reshape(-1, 4), np.array(scores),
                       config.crop_nms_thresh)  # fmt: skip
        found = [found[i] for i in keep]
    if config.min_mask_region_area > 0:
        found = _clean(found, config)
    return found


def _crop_nms(masks: list[AutoMask], config: AutoMaskConfig) -> list[AutoMask]:
    """Box NMS among the masks of one crop, best (:meth:`AutoMask.quality`) first."""
    keep = box_nms(np.array([m.box for m in masks]).reshape(-1, 4),
                   np.array([m.quality(config.stability_rank_weight) for m in masks]),
                   config.box_nms_thresh)  # fmt: skip
    return [masks[i] for i in keep]


_UPSAMPLE_CHUNK = 16  # candidates upsampled together (each (rows, cols) float32 at once)


@torch.inference_mode()
def _crop_masks(predictor, embedding, n_per_side: int, config: AutoMaskConfig, crop: Box,
                image_shape: tuple[int, int]):  # fmt: skip
    """Per batch of grid points, the list of candidates of one crop that pass the filters
    (crop coordinates)."""
    geometry = embedding.geometry
    rows, cols = geometry.original_size
    points = point_grid(n_per_side) * np.array([rows, cols], dtype=np.float64)
    threshold, offset = predictor.config.mask_threshold, config.stability_score_offset
    image_box = (0, 0, *image_shape)
    check_edges = crop != image_box
    for start in range(0, len(points), config.points_per_batch):
        batch = points[start : start + config.points_per_batch]
        low, iou = predictor.decode_low_res(embedding, [Prompt.from_points([p]) for p in batch])
        low = low.flatten(0, 1)  # (3B, L, L), point-major
        iou = iou.flatten(0, 1).to("cpu", torch.float32)  # (3B,)
        keep = _low_res_filter(low, iou, threshold, offset, config)
        out = []
        for chunk in torch.split(torch.nonzero(keep)[:, 0], _UPSAMPLE_CHUNK):
            full = upsample_logits(low[chunk.to(low.device)], geometry)  # (k, rows, cols)
            inter = (full > threshold + offset).flatten(1).sum(1)
            union = (full > threshold - offset).flatten(1).sum(1)
            stability = inter / union  # union > 0 here (checked in low res)
            passed = (
                stability >= config.stability_score_thresh
                if (config.stability_score_thresh > 0)
                else torch.ones_like(stability, dtype=bool)
            )
            for j in torch.nonzero(passed)[:, 0].tolist():
                found = tight_box(ObjectMask((full[j] > threshold).numpy(), (0, 0), (rows, cols)))
                if found is None:
                    continue
                mask, box = found
                if check_edges and near_crop_edge(_shift(box, crop), crop, image_box):
                    continue
                k = int(chunk[j])
                point = batch[k // 3]
                out.append(AutoMask(mask, box, float(iou[k]), float(stability[j]),
                                    (float(point[0]), float(point[1])), crop))  # fmt: skip
        yield out


def _low_res_filter(low: torch.Tensor, iou: torch.Tensor, threshold: float, offset: float,
                    config: AutoMaskConfig) -> torch.Tensor:  # fmt: skip
    """(3B,) bool: candidates worth upsampling. Exact: the predicted-IoU filter, and, since
    a bilinear upsample never exceeds its largest tap, candidates whose low-res logits never
    exceed ``threshold - offset`` (empty: no stability) or, with a stability threshold,
    ``threshold + offset`` (stability 0)."""
    keep = (
        iou > config.pred_iou_thresh
        if config.pred_iou_thresh > 0
        else torch.ones_like(iou, dtype=torch.bool)
    )
    peak = low.flatten(1).amax(1).to("cpu", torch.float32)
    keep &= peak > threshold - offset
    keep &= peak > threshold
    if config.stability_score_thresh > 0:
        keep &= peak > threshold + offset
    return keep


def _shift(box: Box, crop: Box) -> Box:
    return (box[0] + crop[0], box[1] + crop[1], box[2] + crop[0], box[3] + crop[1])


def _uncrop(m: AutoMask, crop: Box, shape: tuple[int, int]) -> AutoMask:
    """A crop's mask in the coordinates of the whole ``shape`` image."""
    if crop == (0, 0, *shape):
        return m
    r, c = crop[:2]
    mask = ObjectMask(m.mask.crop, (m.mask.offset[0] + r, m.mask.offset[1] + c), shape)
    return AutoMask(mask, _shift(m.box, crop), m.predicted_iou, m.stability_score,
                    (m.point[0] + r, m.point[1] + c), m.crop)  # fmt: skip


def _clean(found: list[AutoMask], config: AutoMaskConfig) -> list[AutoMask]:
    """Small holes filled and islands dropped, then NMS again preferring untouched masks."""
    cleaned, scores = [], []
    for m in found:
        mask, changed = clean_small_regions(m.mask, config.min_mask_region_area)
        trimmed = tight_box(mask)
        if trimmed is None:
            continue
        cleaned.append(AutoMask(trimmed[0], trimmed[1], m.predicted_iou, m.stability_score,
                                m.point, m.crop))  # fmt: skip
        scores.append(0.0 if changed else 1.0)
    keep = box_nms(np.array([m.box for m in cleaned]).reshape(-1, 4), np.array(scores),
                   max(config.box_nms_thresh, config.crop_nms_thresh))  # fmt: skip
    return [cleaned[i] for i in keep]


def rank(masks: list[AutoMask], stability_weight: float = 0.0) -> list[AutoMask]:
    """Best first: by :meth:`AutoMask.quality`, then stability score."""
    return sorted(masks, key=lambda m: (-m.quality(stability_weight), -m.stability_score))


def masks_to_labels(masks: list[AutoMask], shape: tuple[int, int], min_area: int = 0) -> np.ndarray:
    """(rows, cols) int32 instance labels: masks painted best first without overlap (see
    :func:`~napari_sam.automatic.mask_ops.paint_labels`); ids 1..n, best first."""
    return paint_labels([m.mask for m in rank(masks)], shape, min_area)


def config_labels(masks: list[AutoMask], shape: tuple[int, int],
                  config: AutoMaskConfig) -> np.ndarray:  # fmt: skip
    """:func:`masks_to_labels` with the painting settings of ``config``: ranked by
    :meth:`AutoMask.quality`; a mask left with fewer than ``min_mask_region_area`` pixels, or
    with less than ``min_free_fraction`` of its own, is dropped."""
    ranked = rank(masks, config.stability_rank_weight)
    return paint_labels([m.mask for m in ranked], shape, config.min_mask_region_area,
                        config.min_free_fraction)  # fmt: skip

"""Quality of a model on held-out labelled objects: mIoU from a box prompt and from a single
centre click, next to the classical baseline (Otsu threshold inside the box).

Both run the plugin's own prompting path (:func:`napari_sam.plane_segmentation.segment_plane`: the
predictor's preprocessing and mask post-processing), so a figure here is what a user gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from napari_sam.training.data import ImagePair, sample_objects
from napari_sam.training.prompting import boxes_from_masks, interior_points
from napari_sam.training.synthetic import NucleiStyle, synthetic_nuclei


@dataclass(frozen=True)
class EvalObject:
    """Object ``label`` of ``pair`` (2D; image any dtype, normalised at evaluation)."""

    pair: ImagePair
    label: int


@dataclass(frozen=True)
class EvalResult:
    """Mean IoU over ``count`` objects from a box and from a centre point prompt."""

    box_miou: float
    point_miou: float
    count: int


def synthetic_eval_set(
    count: int = 200, seed: int = 10_000, shape: tuple[int, int] = (512, 512),
    style: NucleiStyle | None = None, per_image: int = 10,
) -> list[EvalObject]:
    """``count`` objects (at least 16 pixels each) from unseen synthetic images, at most
    ``per_image`` from each; ``seed`` keeps it apart from training (which seeds from 0).
    ``style`` defaults to the broad :class:`NucleiStyle`."""
    style = NucleiStyle() if style is None else style
    rng = np.random.default_rng(seed)
    objects: list[EvalObject] = []
    while len(objects) < count:
        sample = synthetic_nuclei(shape, seed=rng, style=style)
        pair = ImagePair(sample.image, sample.labels)
        ids = sample_objects(sample.labels, per_image, rng, min_area=16)
        ids = np.unique(ids)[: count - len(objects)]
        objects.extend(EvalObject(pair, int(i)) for i in ids)
    return objects


def _group(objects: Sequence[EvalObject]) -> list[tuple[ImagePair, list[int]]]:
    """Objects grouped by their image (in order of first appearance)."""
    groups: dict[int, tuple[ImagePair, list[int]]] = {}
    for obj in objects:
        groups.setdefault(id(obj.pair), (obj.pair, []))[1].append(obj.label)
    return list(groups.values())


def binary_iou(pred: np.ndarray, true: np.ndarray) -> float:
    """IoU of two boolean masks of one shape (1 when both are empty)."""
    union = np.logical_or(pred, true).sum()
    return float(np.logical_and(pred, true).sum() / union) if union else 1.0


def evaluate(model: nn.Module, objects: Sequence[EvalObject]) -> EvalResult:
    """Box and centre-point mIoU of ``model`` (SAM's submodules and ``config``) on
    ``objects``: the model alone, through the plugin's own prompting path with no zoom,
    each box's single mask and each click's best of three by predicted IoU (SAM's predictor
    for a single click); images are normalised to 0-255 by their 1st / 99.8th
    percentiles. The model's training mode is restored after."""
    from napari_sam.predictor import Predictor

    was_training = model.training
    try:
        return evaluate_prompting(Predictor(model), objects, zoom="off",
                                  multimask=("single", "best"))  # fmt: skip
    finally:
        model.train(was_training)


def otsu_in_box(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """(H, W) bool: the pixels of ``image`` inside ``box`` (x0, y0, x1, y1), x1 / y1
    exclusive, above the box's Otsu threshold (the classical baseline)."""
    from skimage.filters import threshold_otsu

    x0, y0, x1, y1 = box
    crop = image[y0:y1, x0:x1].astype(np.float32)
    mask = np.zeros(image.shape, bool)
    if crop.size and crop.max() > crop.min():
        mask[y0:y1, x0:x1] = crop > threshold_otsu(crop)
    return mask


def evaluate_otsu(objects: Sequence[EvalObject]) -> float:
    """mIoU of :func:`otsu_in_box` with each object's tight box."""
    ious = []
    for obj in objects:
        true = obj.pair.labels == obj.label
        ys, xs = np.nonzero(true)
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        ious.append(binary_iou(otsu_in_box(obj.pair.image, box), true))
    return float(np.mean(ious))


def evaluate_prompting(
    predictor, objects: Sequence[EvalObject], zoom="auto",
    multimask: tuple[str, str] = ("auto", "auto"),
) -> EvalResult:
    """Box and centre-click mIoU through the plugin's own prompting path
    (:func:`napari_sam.plane_segmentation.segment_plane`: what the widget, CLI and scripts run), with
    ``zoom`` and ``multimask`` (box mode, click mode) as there. Contrast limits are each
    image's 1st / 99.8th percentiles; the prompts are tight boxes and deepest-pixel
    clicks."""
    from napari_sam.image import percentile_limits
    from napari_sam.plane_segmentation import WindowEmbeddings, segment_plane
    from napari_sam.prompts import Prompt
    from napari_sam.tile_grid import TileGrid

    box_ious: list[float] = []
    point_ious: list[float] = []
    for pair, labels in _group(objects):
        image = pair.image
        limits = percentile_limits(image)

        def embed(_slice: int, window, image=image, limits=limits):
            r0, c0, r1, c1 = window
            return predictor.embed(image[r0:r1, c0:c1], contrast_limits=limits)

        embeddings = WindowEmbeddings(TileGrid(image.shape), embed)
        true = torch.as_tensor(pair.labels[None] == np.array(labels)[:, None, None])
        boxes = boxes_from_masks(true).numpy()[:, [1, 0, 3, 2]]  # (row0, col0, row1, col1)
        clicks = interior_points(true).numpy()[:, ::-1]  # (row, col)
        for i in range(len(labels)):
            for prompt, out, mode in ((Prompt.from_box(boxes[i]), box_ious, multimask[0]),
                                      (Prompt.from_points(clicks[i : i + 1]), point_ious,
                                       multimask[1])):  # fmt: skip
                mask = segment_plane(embeddings, predictor, 0, prompt, zoom=zoom,
                                     multimask=mode).mask  # fmt: skip
                out.append(binary_iou(mask.to_array(), true[i].numpy()))
    return EvalResult(float(np.mean(box_ious)), float(np.mean(point_ious)), len(box_ious))

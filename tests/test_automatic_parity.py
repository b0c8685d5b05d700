"""Parity of segment-everything with the official ``SamAutomaticMaskGenerator``.

Setup (small so CI stays fast): the tiny ViT SAM of ``tests/conftest.py`` (embed 32, depth 2,
256 input) with random weights (seed 0), the last layer of each mask hypernetwork scaled by
200 so that logits span about +-40 and the stability score (offset 1) spreads over 0.5-0.9
(unscaled random logits stay within +-0.2 and every stability score is 0). The official model
is built from the same config and loaded with the same state dict. Image: 256 x 256 synthetic
nuclei (seed 0), so neither side resizes. Grid 12 x 12 (432 candidates); pred_iou_thresh 0.1,
stability_score_thresh 0.8; box NMS off (1.0): random decoders give near-image-sized masks
whose boxes all overlap, so any NMS leaves one mask. 42 masks survive on both sides.

With NMS and crops on (as the nuclei-bundled preset runs): the bundled model (vit_nano, our
trained weights, loaded in both packages), whose masks are nuclei, on 512 x 512 synthetic
nuclei (its input size, so the full image is not resized; the crops are, by PIL there and
by torch here). Grid 12 x 12, one crop layer (four crops, 6 x 6 points each), box NMS 0.6
in each crop and crop NMS 0.7 across them: 15 masks survive on both sides (72 with both
NMS off), 14 of them found in a crop.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import reference_models
from napari_sam.automatic import AutoMaskConfig, generate_masks
from napari_sam.training.synthetic import synthetic_nuclei

CONFIG = AutoMaskConfig(
    points_per_side=12, pred_iou_thresh=0.1, stability_score_thresh=0.8, box_nms_thresh=1.0
)


def official_sam(model):
    """The official ``segment_anything`` Sam with ``model``'s ViT architecture and weights."""
    return reference_models.official_sam(model.config, model.state_dict())


def matched_fraction(a: np.ndarray, b: np.ndarray, iou: float = 0.9) -> tuple[float, float]:
    """Fractions of masks a (N, H, W) matched by some mask of b (M, H, W) at IoU >= iou,
    and of b matched by a."""
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    ious = inter / (fa.sum(1)[:, None] + fb.sum(1)[None] - inter)
    return float((ious.max(1) >= iou).mean()), float((ious.max(0) >= iou).mean())


@pytest.fixture(scope="module")
def sharp_models(tiny_sam):
    model = copy.deepcopy(tiny_sam)
    with torch.no_grad():
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(200)
            mlp.layers[-1].bias.mul_(200)
    return model.eval(), official_sam(model)


def _nuclei_rgb(size: int) -> np.ndarray:
    image = synthetic_nuclei((size, size), seed=0).image.astype(np.float32)
    image = 255 * (image - image.min()) / (image.max() - image.min())
    return np.repeat(image.astype(np.uint8)[..., None], 3, axis=2)


@pytest.fixture(scope="module")
def nuclei_rgb():
    return _nuclei_rgb(256)


def test_masks_match_the_official_generator(sharp_models, nuclei_rgb):
    from segment_anything import SamAutomaticMaskGenerator

    from napari_sam.predictor import Predictor

    ours_model, official = sharp_models
    torch.manual_seed(0)
    ours = generate_masks(Predictor(ours_model), nuclei_rgb, CONFIG, rgb=True)
    reference = SamAutomaticMaskGenerator(official, **CONFIG.official_kwargs()).generate(nuclei_rgb)
    assert len(reference) >= 20, "the setup must leave tens of masks to compare"
    a = np.stack([m.mask.to_array() for m in ours])
    b = np.stack([r["segmentation"] for r in reference])
    ours_matched, reference_matched = matched_fraction(a, b)
    assert ours_matched >= 0.95 and reference_matched >= 0.95
    assert abs(len(ours) - len(reference)) <= 0.05 * len(reference)
    # the same candidates pass: same prompt points (x, y) -> (row, col) and quality scores
    ref_keys = sorted((round(r["point_coords"][0][1], 3), round(r["point_coords"][0][0], 3),
                       round(r["predicted_iou"], 3)) for r in reference)  # fmt: skip
    our_keys = sorted((round(m.point[0], 3), round(m.point[1], 3), round(m.predicted_iou, 3))
                      for m in ours)  # fmt: skip
    assert len(set(ref_keys) & set(our_keys)) >= 0.95 * len(ref_keys)


CROPS_AND_NMS = AutoMaskConfig(
    points_per_side=12, pred_iou_thresh=0.45, stability_score_thresh=0.8, box_nms_thresh=0.6,
    crop_n_layers=1, crop_n_points_downscale_factor=2, crop_nms_thresh=0.7,
)


@pytest.mark.slow
def test_masks_match_the_official_generator_with_crops_and_nms():
    """About 50 s on the shared 2-core box, most of it the official generator."""
    from segment_anything import SamAutomaticMaskGenerator

    from napari_sam.model.checkpoints import load_model
    from napari_sam.predictor import Predictor

    model = load_model("bundled").model.float().eval()
    official = reference_models.official_sam(model.config, model.state_dict())
    image = _nuclei_rgb(model.config.image_size)
    ours = generate_masks(Predictor(model), image, CROPS_AND_NMS, rgb=True)
    reference = SamAutomaticMaskGenerator(
        official, **CROPS_AND_NMS.official_kwargs()).generate(image)
    whole = [0, 0, image.shape[1], image.shape[0]]  # x0, y0, w, h
    from_crops = [r for r in reference if list(r["crop_box"]) != whole]
    assert len(reference) >= 10 and len(from_crops) >= len(reference) / 2, (
        "the setup must leave masks, most of them found in crops, to compare")
    a = np.stack([m.mask.to_array() for m in ours])
    b = np.stack([r["segmentation"] for r in reference])
    ours_matched, reference_matched = matched_fraction(a, b)
    assert ours_matched >= 0.95 and reference_matched >= 0.95
    assert abs(len(ours) - len(reference)) <= 0.05 * len(reference)
    # the same candidates survive: prompt point (x, y) -> (row, col), the crop it was decoded
    # on ([x0, y0, w, h] -> (row0, col0, row1, col1)) and its predicted IoU
    def crop(x0, y0, w, h):
        return y0, x0, y0 + h, x0 + w

    ref_keys = {(round(r["point_coords"][0][1], 1), round(r["point_coords"][0][0], 1),
                 crop(*r["crop_box"]), round(r["predicted_iou"], 2))
                for r in reference}  # fmt: skip
    our_keys = {(round(m.point[0], 1), round(m.point[1], 1), tuple(m.crop),
                 round(m.predicted_iou, 2)) for m in ours}  # fmt: skip
    assert len(ref_keys & our_keys) >= 0.95 * len(ref_keys)

"""Resize / pad / coordinates and their inverse, against SAM's own transform code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from napari_sam.model.config import get_config
from napari_sam.transforms import (
    Geometry,
    ObjectMask,
    boxes_to_model,
    mask_to_logits,
    points_to_model,
    preprocess,
    upsample_logits,
    upsample_mask,
)

VIT_B = get_config("vit_b")


@pytest.mark.parametrize("shape", [(1024, 1024), (300, 200), (700, 1500), (2048, 1000)])
def test_geometry_and_resize_follow_reference(shape):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    reference = ResizeLongestSide(1024)
    expected = reference.apply_image(image)
    batch, geometry = preprocess(image, VIT_B)
    assert geometry.input_size == expected.shape[:2]
    assert batch.shape == (1, 3, 1024, 1024) and batch.dtype == torch.float32
    h, w = geometry.input_size
    mean = torch.tensor(VIT_B.pixel_mean).view(3, 1, 1)
    std = torch.tensor(VIT_B.pixel_std).view(3, 1, 1)
    pixels = (batch[0, :, :h, :w] * std + mean).round().permute(1, 2, 0).numpy()
    assert np.abs(pixels - expected).max() <= 1  # PIL's fixed point vs torch: +-1 grey level
    assert (batch[0, :, h:, :] == 0).all() and (batch[0, :, :, w:] == 0).all()


def test_points_are_row_col_in_and_xy_out():
    geometry = Geometry.for_image(500, 1000, VIT_B)  # scale 1.024
    reference = ResizeLongestSide(1024)
    rc = np.array([[10.0, 300.0], [499.0, 0.0]])
    xy = points_to_model(rc, geometry)
    np.testing.assert_allclose(xy.numpy(), reference.apply_coords(rc[:, ::-1], (500, 1000)))
    box = boxes_to_model(np.array([[10, 20, 110, 220]]), geometry)
    expected = reference.apply_boxes(np.array([[20, 10, 220, 110]]), (500, 1000))
    np.testing.assert_allclose(box.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("shape", [(1024, 1024), (300, 200), (333, 1000), (1500, 700)])
def test_upsample_mask_equals_sam_postprocess(shape):
    geometry = Geometry.for_image(*shape, VIT_B)
    torch.manual_seed(0)
    logits = torch.nn.functional.interpolate(torch.randn(1, 1, 16, 16), (256, 256))[0, 0] - 0.8
    fast = upsample_mask(logits, geometry, 0.0)
    exact = upsample_logits(logits, geometry) > 0
    assert fast.shape == shape
    assert np.count_nonzero(fast.to_array() != exact.numpy()) <= 2


def test_upsample_mask_crops_to_the_object():
    geometry = Geometry.for_image(1024, 1024, VIT_B)
    logits = torch.full((256, 256), -5.0)
    logits[100:110, 50:60] = 5.0
    mask = upsample_mask(logits, geometry, 0.0)
    assert mask.crop.shape[0] < 60 and mask.crop.shape[1] < 60
    np.testing.assert_array_equal(mask.to_array(), (upsample_logits(logits, geometry) > 0).numpy())
    empty = upsample_mask(torch.full((256, 256), -1.0), geometry, 0.0)
    assert empty.area == 0 and not empty.to_array().any()


def test_mask_to_logits_is_positive_inside_and_padded():
    geometry = Geometry.for_image(512, 1024, VIT_B)  # input 512 x 1024 -> low res 128 x 256
    mask = np.zeros((512, 1024), bool)
    mask[100:300, 200:600] = True
    logits = mask_to_logits(mask, geometry)
    assert logits.shape == (1, 256, 256)
    assert logits[0, 50, 100] > 5 and logits[0, 10, 10] < -5
    assert (logits[0, 128:] < -5).all()  # padding is outside


def test_object_mask_holds_the_points_it_covers():
    crop = np.array([[True, False], [True, True]])
    mask = ObjectMask(crop, (10, 20), (64, 64))
    points = [[10, 20], [10, 21], [11.4, 20.6], [9, 20], [12, 20], [0, 0]]
    np.testing.assert_array_equal(mask.holds(points), [True, False, True, False, False, False])
    assert mask.holds(np.zeros((0, 2))).shape == (0,)

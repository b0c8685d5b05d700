"""Every microscopy input the issue lists reaches the model as (H, W, 3) on 0-255."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.image import to_model_image
from napari_sam.predictor import Predictor
from napari_sam.prompts import Prompt

RNG = np.random.default_rng(0)


def test_uint8_reaches_model_unchanged():
    gray = RNG.integers(0, 256, (40, 50), dtype=np.uint8)
    out = to_model_image(gray)
    assert out.dtype == np.uint8 and out.shape == (40, 50, 3)
    np.testing.assert_array_equal(out[..., 1], gray)
    np.testing.assert_array_equal(to_model_image(gray, contrast_limits=(0, 255))[..., 0], gray)
    rgb = RNG.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_model_image(rgb), rgb)


def test_contrast_limits_are_what_the_user_sees():
    data = np.array([[100, 200], [300, 400]], dtype=np.uint16)
    out = to_model_image(data, contrast_limits=(200, 300))
    np.testing.assert_allclose(out[..., 0], [[0, 0], [255, 255]])


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32, np.float64])
def test_other_dtypes_are_percentile_normalised(dtype):
    data = (RNG.random((64, 64)) * 5000 - (1000 if dtype != np.uint16 else 0)).astype(dtype)
    out = to_model_image(data)
    assert out.dtype == np.float32 and out.shape == (64, 64, 3)
    assert out.min() == 0 and out.max() == 255


def test_nan_is_safe():
    data = RNG.random((32, 32)).astype(np.float32)
    data[5:10, 5:10] = np.nan
    out = to_model_image(data)
    assert np.isfinite(out).all() and (out[5:10, 5:10] == 0).all() and out.max() == 255


def test_boolean_channels_composite_like_a_boolean_plane():
    # a hypothesis-found crash: the composite of bool channels went to np.percentile (TypeError)
    stack = np.zeros((2, 5, 6), dtype=bool)
    stack[1, 1:3, 1:3] = True
    composite = to_model_image(stack, channel="composite")
    np.testing.assert_array_equal(composite, to_model_image(stack[1]))
    assert composite[1, 1, 0] == 255 and composite[0, 0, 0] == 0


def test_rgba_drops_alpha():
    rgba = RNG.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    np.testing.assert_array_equal(to_model_image(rgba), rgba[..., :3])


def test_multichannel_needs_a_choice():
    stack = RNG.random((5, 24, 24)).astype(np.float32)
    with pytest.raises(ValueError, match="5 channels: choose a channel"):
        to_model_image(stack)
    one = to_model_image(stack, channel=2)
    np.testing.assert_allclose(one[..., 0], to_model_image(stack[2])[..., 0])
    rgb = to_model_image(stack, channel=(0, 3))
    assert (rgb[..., 2] == 0).all() and rgb[..., 0].max() == 255
    composite = to_model_image(stack, channel="composite")
    assert composite.shape == (24, 24, 3)
    last_axis = to_model_image(np.moveaxis(stack, 0, -1), rgb=False, channel_axis=-1, channel=2)
    np.testing.assert_array_equal(last_axis, one)
    with pytest.raises(ValueError, match="does not exist"):
        to_model_image(stack, channel=7)


@pytest.mark.parametrize(
    "data",
    [
        RNG.integers(0, 256, (48, 64), dtype=np.uint8),
        RNG.integers(0, 60000, (48, 64), dtype=np.uint16),
        RNG.integers(-5, 1 << 20, (48, 64), dtype=np.int32),
        RNG.random((48, 64)).astype(np.float32),
        RNG.random((48, 64)),
        RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8),
        RNG.integers(0, 256, (48, 64, 4), dtype=np.uint8),
    ],
    ids=["uint8", "uint16", "int32", "float32", "float64", "rgb", "rgba"],
)
def test_every_dtype_segments(tiny_sam, data):
    predictor = Predictor(tiny_sam)
    result = predictor.predict(predictor.embed(data), Prompt.from_points([[20, 30]]))
    assert result.masks[0].shape == (48, 64)

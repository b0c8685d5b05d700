"""Prompts from layer-like data: points on the slice, shapes, labels; validation."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.prompts import (
    PointLabel,
    Prompt,
    points_on_slice,
    prompt_from_label,
    prompt_from_points,
    prompt_from_shape,
    rasterise_shape,
)


def test_points_default_positive_and_negative_flag():
    prompt = prompt_from_points([[1, 2], [3, 4]], positive=[True, False])
    assert prompt.labels.tolist() == [PointLabel.POSITIVE, PointLabel.NEGATIVE]
    assert prompt_from_points([[1, 2]]).labels.tolist() == [PointLabel.POSITIVE]
    with pytest.raises(ValueError, match="no points"):
        prompt_from_points(np.zeros((0, 2)))


def test_only_points_on_the_displayed_slice():
    coords = np.array([[3, 10, 10], [4, 11, 11], [3.2, 12, 12], [2.6, 1, 1]])
    assert points_on_slice(coords, (3,)).tolist() == [True, False, True, True]


def test_rectangle_is_a_box_polygon_adds_a_mask():
    rect = prompt_from_shape(np.array([[10, 20], [10, 40], [30, 40], [30, 20]]), "rectangle",
                             (64, 64))
    assert rect.box.tolist() == [10, 20, 30, 40] and rect.mask is None
    tri = prompt_from_shape(np.array([[10, 10], [50, 10], [50, 50]]), "polygon", (64, 64))
    assert tri.box.tolist() == [10, 10, 50, 50]
    assert tri.mask[45, 20] and not tri.mask[15, 45]


def test_ellipse_and_path_are_rasterised():
    ellipse = rasterise_shape(np.array([[10, 10], [10, 50], [30, 50], [30, 10]]), "ellipse",
                              (64, 64))
    assert ellipse[20, 30] and not ellipse[11, 11]
    path = prompt_from_shape(np.array([[5, 5], [5, 40], [40, 40]]), "path", (64, 64))
    assert path.mask[5, 20] and path.mask[20, 40] and not path.mask[20, 20]
    assert path.box.tolist() == [5, 5, 40, 40]


def test_label_becomes_a_mask_prompt():
    labels = np.zeros((32, 32), np.int32)
    labels[5:10, 6:12] = 3
    prompt = prompt_from_label(labels, 3)
    assert prompt.mask.sum() == 30 and prompt.box.tolist() == [5, 6, 9, 11]
    with pytest.raises(ValueError, match="label 4 is not in the labels"):
        prompt_from_label(labels, 4)


def test_invalid_prompts():
    with pytest.raises(ValueError, match="at least one point"):
        Prompt()
    with pytest.raises(ValueError, match="zero area"):
        Prompt.from_box([5, 5, 20, 5])
    with pytest.raises(ValueError, match=r"0 .negative. or 1"):
        Prompt.from_points([[1, 1]], [2])
    with pytest.raises(ValueError, match="outside"):
        Prompt.from_points([[1, 40]]).validate((32, 32))


def test_positives_first_only_for_points_of_both_kinds():
    both = Prompt.from_points([[5, 5], [9, 9], [1, 1]], [1, 0, 1])
    alone = both.positives_first()
    np.testing.assert_array_equal(alone.points, [[5, 5], [1, 1]])
    np.testing.assert_array_equal(alone.labels, [1, 1])
    np.testing.assert_array_equal(both.negatives, [[9, 9]])
    assert Prompt.from_points([[5, 5]]).positives_first() is None
    assert Prompt.from_points([[5, 5]], [0]).positives_first() is None
    boxed = Prompt(points=both.points, labels=both.labels, box=np.array([0.0, 0, 10, 10]))
    assert boxed.positives_first() is None

"""The napari adapter: world -> pixel mapping, slices, undoable writes (no Qt needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from napari.components import ViewerModel
from napari.layers import Image, Labels, Points, Shapes

from napari_sam import napari_layers as nl
from napari_sam.transforms import ObjectMask


def test_scaled_translated_layers_map_clicks_to_pixels():
    image = Image(np.zeros((50, 60)), scale=(2.0, 0.5), translate=(10.0, 20.0))
    points = Points(np.array([[30.0, 25.0], [10.0, 20.0]]))  # world == data for points
    prompt = nl.prompt_from_points_layer(points, image)
    np.testing.assert_allclose(prompt.points, [[10.0, 10.0], [0.0, 0.0]])


def test_anisotropic_stack_uses_the_displayed_slice():
    viewer = ViewerModel()
    image = viewer.add_image(np.zeros((10, 40, 40)), scale=(4.0, 1.0, 1.0))
    points = viewer.add_points(
        np.array([[12.0, 5, 6], [20.0, 7, 8], [12.0, 30, 31]]),
        features=pd.DataFrame({"positive": [True, True, False]}),
    )
    viewer.dims.set_point(0, 12.0)  # world z 12 -> slice 3
    index = nl.current_index(image, viewer)
    assert index == (3,)
    prompt = nl.prompt_from_points_layer(points, image, index, viewer)
    np.testing.assert_allclose(prompt.points, [[5, 6], [30, 31]])
    assert prompt.labels.tolist() == [1, 0]
    viewer.dims.set_point(0, 36.0)
    with pytest.raises(ValueError, match="no points"):
        nl.prompt_from_points_layer(points, image, nl.current_index(image, viewer), viewer)


def test_shapes_become_boxes_and_masks():
    image = Image(np.zeros((64, 64)), translate=(4.0, 0.0))
    shapes = Shapes(
        [np.array([[14, 10], [14, 30], [34, 30], [34, 10]]), np.array([[4, 0], [44, 0], [44, 40]])],
        shape_type=["rectangle", "polygon"],
    )
    rect, poly = nl.prompts_from_shapes_layer(shapes, image)
    assert rect.box.tolist() == [10, 10, 30, 30] and rect.mask is None
    assert poly.box.tolist() == [0, 0, 40, 40] and poly.mask[35, 5]


def test_image_from_layer_uses_contrast_limits():
    data = np.arange(100, dtype=np.uint16).reshape(10, 10)
    image = Image(data, contrast_limits=(0, 50))
    out = nl.image_from_layer(image)
    assert out[0, 0, 0] == 0 and out[5, 0, 0] == 255 and out.shape == (10, 10, 3)


def test_write_is_one_undoable_step_that_keeps_others():
    data = np.zeros((3, 20, 20), np.int32)
    data[1, :6, :6] = 4
    data[1, 15:, 15:] = 2
    layer = Labels(data)
    before = layer.data.copy()
    mask = ObjectMask(np.ones((10, 10), bool), (2, 2), (20, 20))
    changed = nl.write_to_labels_layer(layer, mask, 2, (1,))
    assert changed > 0
    assert (layer.data[1, :6, :6] == 4).all()  # other object kept
    assert (layer.data[1, 6:12, 2:12] == 2).all() and (layer.data[1, 15:, 15:] == 0).all()
    np.testing.assert_array_equal(layer.data[[0, 2]], before[[0, 2]])
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)


def test_missing_label_id_raises_and_leaves_labels():
    layer = Labels(np.zeros((16, 16), np.int32))
    with pytest.raises(ValueError, match="label 3 is not in the labels"):
        nl.prompt_from_labels_layer(layer, 3)
    assert not layer.data.any()

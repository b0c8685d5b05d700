"""The public scripting API on arrays and on napari layers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from napari.components import ViewerModel

import napari_sam
from napari_sam import Predictor, Prompt, Session


@pytest.fixture
def session(tiny_sam):
    return Session(Predictor(tiny_sam))


@pytest.fixture
def image():
    rr, cc = np.mgrid[:96, :128]
    return (200 * np.exp(-((rr - 40) ** 2 + (cc - 50) ** 2) / 300)).astype(np.uint16)


def test_import_loads_no_napari_qt_or_torch():
    code = "import sys, napari_sam; print(sorted(m for m in ('napari', 'qtpy', 'PyQt6', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert "Session" in dir(napari_sam)


def test_segment_arrays_returns_labels_with_ids(session, image, tiny_sam):
    prompts = [Prompt.from_points([[40, 50]]), Prompt.from_box([60, 80, 90, 120])]
    labels = session.segment(image, prompts, ids=[5, 9])
    assert labels.shape == (96, 128) and set(np.unique(labels)) <= {0, 5, 9}
    predictor = Predictor(tiny_sam)
    result = predictor.predict(predictor.embed(image), prompts)
    expected = np.zeros_like(labels)
    expected[result.masks[0].to_array()] = 5
    expected[result.masks[1].to_array() & (expected == 0)] = 9
    np.testing.assert_array_equal(labels, expected)


def test_segment_keeps_existing_objects_and_embeds_once(session, image):
    existing = np.zeros((96, 128), np.int32)
    existing[:10, :10] = 3
    calls = []
    original = session.predictor.embed
    session.predictor.embed = lambda *a, **k: calls.append(1) or original(*a, **k)
    session.segment(image, Prompt.from_points([[5, 5]]), labels=existing)
    session.segment(image, Prompt.from_points([[40, 50]]), labels=existing)
    assert (existing[:10, :10] == 3).all() and len(calls) == 1
    assert set(np.unique(existing)) >= {3, 4}


def test_segment_layers_writes_displayed_slice_undoably(session):
    viewer = ViewerModel()
    stack = np.random.default_rng(0).integers(0, 255, (4, 64, 64), dtype=np.uint8)
    image = viewer.add_image(stack)
    labels = viewer.add_labels(np.zeros((4, 64, 64), np.int32))
    labels.data[2, :4, :4] = 7
    points = viewer.add_points(np.array([[2, 30, 30], [1, 10, 10]]))
    viewer.dims.set_point(0, 2)
    session.viewer = viewer
    before = labels.data.copy()
    done = session.segment_layers(image, labels, points=points)
    assert done.index == (2,) and done.ids == (8,)
    assert (labels.data[[0, 1, 3]] == 0).all() and (labels.data[2] == 8).any()
    assert (labels.data[2, :4, :4] == 7).all()
    labels.undo()
    np.testing.assert_array_equal(labels.data, before)

    refined = session.segment_layers(image, labels, refine_label=7)
    assert refined.ids == (7,)
    with pytest.raises(ValueError, match="label 99 is not in the labels"):
        session.segment_layers(image, labels, refine_label=99)


def test_scripts_zoom_in_on_small_objects_like_the_widget_and_cli():
    """Session.segment with the bundled model decodes a small nucleus again on a magnified
    window, exactly as the one prompting path (segment_plane) of the widget and CLI does."""
    from napari_sam.image import percentile_limits
    from napari_sam.plane_segmentation import WindowEmbeddings, segment_plane
    from napari_sam.tile_grid import TileGrid
    from napari_sam.training.synthetic import NucleiStyle, synthetic_nuclei

    sample = synthetic_nuclei((256, 320), seed=3, style=NucleiStyle(radius=(5.0, 7.0)))
    rows, cols = np.nonzero(sample.labels == 1)
    box = Prompt.from_box([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1])
    predictor = Predictor.load("bundled", device="cpu", precision="fp32")
    limits = percentile_limits(sample.image)

    def embed(_s, w):
        return predictor.embed(sample.image[w[0] : w[2], w[1] : w[3]], contrast_limits=limits)

    plane = segment_plane(WindowEmbeddings(TileGrid(sample.image.shape), embed), predictor, 0,
                          box, zoom="auto")  # fmt: skip
    assert plane.zoomed is not None
    zoomed = Session(predictor).segment(sample.image, box, contrast_limits=limits)
    np.testing.assert_array_equal(zoomed > 0, plane.mask.to_array())
    plain = Session(predictor, zoom="off").segment(sample.image, box, contrast_limits=limits)
    assert not np.array_equal(plain > 0, zoomed > 0)


def test_a_negative_point_the_click_leaves_out_changes_nothing_as_in_the_widget():
    """Session.segment keeps a click's own mask when it already leaves out the negative
    point on a touching neighbour (where the model's answer to both differs), as
    segment_plane does for the widget and CLI."""
    from scipy import ndimage

    from napari_sam.image import percentile_limits
    from napari_sam.plane_segmentation import WindowEmbeddings, segment_plane
    from napari_sam.tile_grid import TileGrid
    from napari_sam.training.synthetic import NucleiStyle, synthetic_nuclei

    sample = synthetic_nuclei((256, 256), seed=20_001, style=NucleiStyle())
    predictor = Predictor.load("bundled", device="cpu", precision="fp32")
    limits = percentile_limits(sample.image)

    def embed(_s, w):
        return predictor.embed(sample.image[w[0] : w[2], w[1] : w[3]], contrast_limits=limits)

    windows = WindowEmbeddings(TileGrid(sample.image.shape), embed)
    session = Session(predictor)
    tried = 0
    for obj in np.unique(sample.labels[sample.labels > 0]):
        mask = sample.labels == obj
        ring = ndimage.binary_dilation(mask, iterations=2) & ~mask
        around = sample.labels[ring]
        around = around[(around != 0) & (around != obj)]
        if not len(around) or mask.sum() < 30:
            continue
        click = np.argwhere(mask)[np.argmax(ndimage.distance_transform_edt(mask)[mask])]
        other = sample.labels == np.bincount(around).argmax()
        negative = np.argwhere(other)[np.argmax(ndimage.distance_transform_edt(other)[other])]
        both = Prompt.from_points([click, negative], [1, 0])
        alone = segment_plane(windows, predictor, 0, Prompt.from_points([click]))
        raw = segment_plane(windows, predictor, 0, both, positives_first=False)
        if alone.mask.holds(negative[None])[0] or np.array_equal(
                raw.mask.to_array(), alone.mask.to_array()):  # fmt: skip
            continue
        tried += 1
        np.testing.assert_array_equal(segment_plane(windows, predictor, 0, both).mask.to_array(),
                                      alone.mask.to_array())  # fmt: skip
        labels = session.segment(sample.image, both, contrast_limits=limits)
        np.testing.assert_array_equal(labels > 0, alone.mask.to_array())
        if tried == 3:
            break
    assert tried == 3, "the sample has too few touching nuclei where the negative matters"

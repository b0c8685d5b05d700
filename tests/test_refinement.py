"""Refining a whole label image: ids kept, nothing merged or taken from another object, lost
objects kept and flagged, acceptance object by object; quality with the bundled model."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from napari_sam.image import percentile_limits
from napari_sam.jobs import drain
from napari_sam.plane_segmentation import PlaneMask, WindowEmbeddings
from napari_sam.predictor import Predictor
from napari_sam.refinement import refine_labels, refine_plane_steps
from napari_sam.sample_data import synthetic_2d
from napari_sam.tile_grid import TileGrid
from napari_sam.transforms import ObjectMask
from stub_sam import disc_predictor


def _embeddings(predictor, image):
    limits = percentile_limits(image)

    def embed(s, w):
        plane = image[s] if image.ndim == 3 else image
        return predictor.embed(plane[w[0] : w[2], w[1] : w[3]], contrast_limits=limits)

    return WindowEmbeddings(TileGrid(image.shape[-2:]), embed)


def rough_labels():
    """Two touching squares, a bar and an L-shaped object (the stub fills each box)."""
    labels = np.zeros((64, 64), np.uint16)
    labels[5:20, 5:20] = 4
    labels[5:20, 20:30] = 9  # touches 4
    labels[40:46, 10:40] = 2
    labels[35:60, 45:50] = 7
    labels[55:60, 50:60] = 7  # L: its box holds background the stub fills
    return labels


def test_ids_are_kept_and_no_object_takes_anothers_pixels():
    labels = rough_labels()
    predictor = disc_predictor()
    image = (labels > 0).astype(np.float32) * 100
    refinement = drain(refine_plane_steps(_embeddings(predictor, image), predictor, 0, labels))
    out = refinement.apply(labels)
    assert set(np.unique(out)) == set(np.unique(labels))
    for i in (2, 4, 7, 9):  # every old pixel of an object is its own or background now
        assert set(np.unique(out[labels == i])) <= {0, i}
    assert (out[35:60, 45:60] == 7).mean() > 0.9  # the stub fills the L's box
    assert refinement.changes[7].area_after > refinement.changes[7].area_before
    assert not refinement.lost


def test_objects_not_accepted_stay_exactly_as_they_were():
    labels = rough_labels()
    labels[50:52, 52:56] = 0  # a hole inside 7's box, that 7's refinement fills
    predictor = disc_predictor()
    image = (labels > 0).astype(np.float32) * 100
    refinement = drain(refine_plane_steps(_embeddings(predictor, image), predictor, 0, labels))
    before = labels.copy()
    only_four = refinement.apply(labels, [4])
    for i in (2, 7, 9):
        np.testing.assert_array_equal(only_four == i, labels == i)
    assert set(np.unique(only_four[labels == 4])) <= {0, 4}
    assert (refinement.apply(labels) == 7)[50, 52]  # accepted, 7 would fill its hole
    np.testing.assert_array_equal(labels, before)  # the input is never written


def test_an_object_the_model_loses_is_kept_and_flagged(monkeypatch):
    import napari_sam.refinement as refinement_module

    labels = rough_labels()
    real = refinement_module.segment_plane

    def losing(embeddings, predictor, s, prompt, **kwargs):
        plane = real(embeddings, predictor, s, prompt, **kwargs)
        if prompt.mask[10, 25]:  # object 9: nothing
            empty = ObjectMask(np.zeros((0, 0), bool), (0, 0), plane.mask.shape)
            return PlaneMask(empty, 0.1, plane.tile, plane.logits, plane.tiles)
        return plane

    monkeypatch.setattr(refinement_module, "segment_plane", losing)
    predictor = disc_predictor()
    image = (labels > 0).astype(np.float32) * 100
    refinement = drain(refine_plane_steps(_embeddings(predictor, image), predictor, 0, labels))
    assert refinement.lost == [9] and refinement.changes[9].area_after == (labels == 9).sum()
    np.testing.assert_array_equal(refinement.apply(labels) == 9, labels == 9)


@pytest.fixture(scope="module")
def bundled():
    return Predictor.load("bundled", device="cpu")


def _miou(pred, truth):
    ious = []
    for i in np.unique(truth[truth > 0]):
        a, b = pred == i, truth == i
        ious.append((a & b).sum() / (a | b).sum())
    return float(np.mean(ious))


@pytest.mark.parametrize("change", ["erode", "dilate"])
def test_refining_rough_labels_brings_them_closer_to_the_truth(bundled, change):
    sample = synthetic_2d()
    image, truth = sample.image[:256, :256], sample.labels[:256, :256]
    rough = np.zeros_like(truth)
    for i in np.unique(truth[truth > 0]):
        op = ndimage.binary_erosion if change == "erode" else ndimage.binary_dilation
        grown = op(truth == i, iterations=2)
        rough[grown & (rough == 0)] = i
    kept = [i for i in np.unique(truth[truth > 0]) if (rough == i).any()]
    refined, (plan,) = refine_labels(_embeddings(bundled, image), bundled, rough)
    assert set(np.unique(refined[refined > 0])) == set(kept)  # no id dropped or merged
    assert len(plan.lost) <= 2  # the tiniest eroded nuclei: kept as they were
    for i in plan.lost:
        np.testing.assert_array_equal(refined == i, rough == i)
    before, after = _miou(rough, truth), _miou(refined, truth)
    assert after >= before + 0.05, (before, after)


def test_cli_refines_a_stack_and_keeps_every_id(tmp_path, weights, capsys):
    from napari_sam.cli import main

    labels = np.stack([rough_labels(), np.roll(rough_labels(), 3, axis=1)])
    image = (labels > 0).astype(np.uint16) * 900 + 100
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "lab.tif", labels)
    out = tmp_path / "out.tif"
    assert main(["refine", str(tmp_path / "img.tif"), "--labels", str(tmp_path / "lab.tif"),
                 "-o", str(out), "--model", str(weights), "--quiet"]) == 0  # fmt: skip
    refined = tifffile.imread(out)
    assert refined.shape == labels.shape and refined.dtype == labels.dtype
    for z in range(2):
        for i in np.unique(labels[z][labels[z] > 0]):  # random weights: kept or refined
            assert (refined[z] == i).any()
            assert set(np.unique(refined[z][labels[z] == i])) <= {0, i}


def test_cli_refuses_labels_of_another_shape(tmp_path, weights, capsys):
    from napari_sam.cli import main

    tifffile.imwrite(tmp_path / "img.tif", np.ones((64, 64), np.uint16))
    tifffile.imwrite(tmp_path / "lab.tif", np.ones((32, 64), np.uint16))
    out = tmp_path / "out.tif"
    assert main(["refine", str(tmp_path / "img.tif"), "--labels", str(tmp_path / "lab.tif"),
                 "-o", str(out), "--model", str(weights)]) == 2  # fmt: skip
    assert not out.exists() and "the labels are (32, 64)" in capsys.readouterr().err

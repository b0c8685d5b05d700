"""The object's edge level: masks cut to the object's own pixels."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_sam.edge_level import cut_to_level, edge_level
from napari_sam.evidence import reference_contrast
from napari_sam.plane_segmentation import crop_mask

SHAPE = (64, 64)


def _disk(radius: float, centre=(32, 32)) -> np.ndarray:
    rows, cols = np.indices(SHAPE)
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def _reader(pixels: np.ndarray):
    return lambda w: pixels[w[0] : w[2], w[1] : w[3]]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _blurred(mask: np.ndarray, inside: float, outside: float) -> np.ndarray:
    pixels = np.where(mask, inside, outside).astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 2, SHAPE).astype(np.float32)
    return ndimage.gaussian_filter(pixels, 1.5) + noise


def test_a_mask_taking_in_the_halo_is_cut_to_the_object():
    # the level comes from a slice where the mask fits; on a slice where the object is
    # smaller, a mask of the first slice's size is cut to the object there
    fitted, smaller = _disk(12), _disk(8)
    level = edge_level(_reader(_blurred(fitted, 1000, 100)), crop_mask(fitted, (0, 0), SHAPE), 0.3)
    assert level is not None and 100 < level < 1000
    here = _blurred(smaller, 1000, 100) + 150 * _disk(14)  # out-of-focus light around it
    cut = cut_to_level(_reader(here), crop_mask(fitted, (0, 0), SHAPE), level)
    assert _iou(cut.to_array(), smaller) > 0.8 and _iou(fitted, smaller) < 0.5


def test_dark_objects_get_no_level():
    # as the contrast evidence, the edge level is for objects brighter than their surroundings
    fitted = _disk(12)
    assert edge_level(_reader(_blurred(fitted, 50, 900)), crop_mask(fitted, (0, 0), SHAPE), 0.3) is None


def test_an_object_that_does_not_stand_out_gets_no_level():
    flat = np.full(SHAPE, 500.0, np.float32) + np.random.default_rng(1).normal(0, 5, SHAPE)
    for surround in ("ring", "dark"):  # noise stands above the darker half, but not enough
        for percentile in (50.0, 95.0):  # a high percentile of noise stands above its mean
            assert edge_level(_reader(flat), crop_mask(_disk(10), (0, 0), SHAPE), 0.3,
                              surround, percentile=percentile) is None  # fmt: skip
    assert reference_contrast(_reader(flat), crop_mask(_disk(10), (0, 0), SHAPE)) == (0.0, "ring")
    empty = crop_mask(np.zeros(SHAPE, bool), (0, 0), SHAPE)
    assert edge_level(_reader(flat), empty, 0.3) is None


def test_a_dim_object_among_bright_neighbours_gets_its_level_against_the_darker_half():
    # bright nuclei press against a dim one on two sides: against the whole ring it does not
    # stand out; against the ring's darker half (the background between them) it does, and
    # the cut keeps the dim object, not the neighbours' light around it
    fitted = _disk(10)
    neighbours = _disk(10, (32, 12)) | _disk(10, (32, 52))
    pixels = _blurred(fitted, 400, 100) + ndimage.gaussian_filter(3000.0 * neighbours, 1.5)
    mask = crop_mask(fitted, (0, 0), SHAPE)
    assert edge_level(_reader(pixels), mask, 0.3) is None
    assert reference_contrast(_reader(pixels), mask)[1] == "dark"
    level = edge_level(_reader(pixels), mask, 0.3, surround="dark")
    assert level is not None and 100 < level < 400
    wider = crop_mask(_disk(13) & ~neighbours, (0, 0), SHAPE)  # a mask taking in the halo
    assert _iou(wider.to_array(), fitted) < 0.8
    assert _iou(cut_to_level(_reader(pixels), wider, level).to_array(), fitted) > 0.8


def test_one_piece_is_kept_with_its_holes_filled():
    # a nucleus with a dark nucleolus, and a larger bright blob inside the mask apart from it
    pixels = np.full(SHAPE, 100.0, np.float32)
    pixels[_disk(8)] = 1000
    pixels[_disk(2)] = 100  # the nucleolus
    blob = _disk(9, centre=(32, 54))
    pixels[blob] = 1000
    mask = crop_mask(_disk(31), (0, 0), SHAPE)
    largest = cut_to_level(_reader(pixels), mask, 400.0)
    np.testing.assert_array_equal(largest.to_array(), blob & _disk(31))
    # the piece holding the click, even a click on the nucleolus (a hole, filled)
    clicked = cut_to_level(_reader(pixels), mask, 400.0, seed=(32, 32))
    np.testing.assert_array_equal(clicked.to_array(), _disk(8))
    assert cut_to_level(_reader(pixels), mask, 5000.0).area == 0


def test_channels_are_averaged_and_masks_at_the_plane_edge_are_read_inside_it():
    corner = _disk(10, centre=(0, 0))
    pixels = np.stack([_blurred(corner, 1000, 100)] * 3, axis=-1)  # (H, W, 3)
    level = edge_level(_reader(pixels), crop_mask(corner, (0, 0), SHAPE), 0.3)
    assert level is not None
    cut = cut_to_level(_reader(pixels), crop_mask(_disk(14, centre=(0, 0)), (0, 0), SHAPE), level)
    assert _iou(cut.to_array(), corner) > 0.85


def test_the_peak_level_cuts_a_mask_that_is_mostly_halo_to_its_core():
    # an end slice under axial blur: a small core inside a wide, dimmer halo that fills most
    # of the mask. The median lies in the halo, so its level keeps the whole halo; the level
    # taken towards the 95th percentile (the core's peak) cuts the halo away and keeps the
    # core (with its own blurred edge)
    core, halo = _disk(5), _disk(13)
    pixels = _blurred(core, 1000, 100) + 250 * halo
    mask = crop_mask(halo, (0, 0), SHAPE)
    median_level = edge_level(_reader(pixels), mask, 0.3)
    peak_level = edge_level(_reader(pixels), mask, 0.3, percentile=95.0)
    assert median_level is not None and peak_level is not None
    assert 100 < median_level < 350 < peak_level < 1000 + 250
    assert cut_to_level(_reader(pixels), mask, median_level).area == halo.sum()
    cut = cut_to_level(_reader(pixels), mask, peak_level).to_array()
    assert cut[core].all() and cut.sum() < halo.sum() / 3

"""Following an object's move between planes: the shift the carried mask moves by."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_sam import motion
from napari_sam.motion import moved_mask, object_shift
from napari_sam.plane_segmentation import crop_mask

SHAPE = (128, 128)


def _reader(pixels: np.ndarray):
    return lambda w: pixels[w[0] : w[2], w[1] : w[3]]


def _field(seed: int = 0) -> np.ndarray:
    """Blobs of light: nuclei and their neighbours, (128, 128) float32."""
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(SHAPE), 3).astype(np.float32) * 1000


def _box_mask(r0: int, c0: int, r1: int, c1: int):
    full = np.zeros(SHAPE, bool)
    full[r0:r1, c0:c1] = True
    return crop_mask(full, (0, 0), SHAPE)


def _disk(radius: float, centre) -> np.ndarray:
    rows, cols = np.indices(SHAPE)
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


@pytest.mark.parametrize("move", [(3, -2), (-1, 4), (0, 1)])
def test_the_shift_is_the_move_of_the_pixels_around_the_object(move):
    before = _field()
    after = np.roll(before, move, axis=(0, 1))
    assert object_shift(_reader(before), _reader(after), _box_mask(50, 40, 70, 62), 4) == move


def test_the_move_is_found_through_a_change_of_brightness():
    # bleaching and uneven light between frames change the level and the gain of the pixels
    # (and a few pixels are missing), not where the object went
    before = _field()
    after = 0.4 * np.roll(before, (2, -3), axis=(0, 1)) + 300 + np.linspace(0, 50, 128)[None]
    after[60, 50] = np.nan
    assert object_shift(_reader(before), _reader(after), _box_mask(50, 40, 70, 62), 4) == (2, -3)


def test_no_move_no_shift_and_of_equal_matches_the_smallest():
    before = _field()
    mask = _box_mask(50, 40, 70, 62)
    assert object_shift(_reader(before), _reader(before), mask, 4) == (0, 0)
    stripes = np.tile(np.array([0.0, 1000.0], np.float32), (128, 64))  # the same every 2 px
    assert object_shift(_reader(stripes), _reader(stripes), mask, 4) == (0, 0)


def _end_of_a_nucleus(neighbours: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two planes in z: a nucleus (radius 14) and, on the next, its end (radius 6, two px
    off its centre), with or without neighbours around it that stay where they are."""
    around = sum(_disk(9, centre) * 600.0 for centre in ((30, 30), (30, 95), (95, 30), (100, 100)))
    around = around * neighbours
    noise = np.random.default_rng(1).normal(0, 10, (2, *SHAPE))
    wide, narrow = _disk(14, (64, 60)), _disk(6, (66, 60))
    before = ndimage.gaussian_filter(around + 900.0 * wide, 1.5) + noise[0]
    after = ndimage.gaussian_filter(around + 300.0 * narrow, 1.5) + noise[1]
    return before, after, wide


def test_the_surroundings_keep_an_object_that_only_changes_its_outline_in_place(monkeypatch):
    # z: the neighbours stay where they are while the nucleus narrows to its end off its
    # centre. Even with every move taken (no gate), the window's surroundings hold it
    monkeypatch.setattr(motion, "MIN_GAIN", 0.0)
    before, after, wide = _end_of_a_nucleus(neighbours=True)
    mask = crop_mask(wide, (0, 0), SHAPE)
    assert object_shift(_reader(before), _reader(after), mask, 4) == (0, 0)


def test_a_move_that_matches_little_better_than_staying_is_not_taken(monkeypatch):
    # with nothing around it, the narrowing end pulls the best match off centre; the move
    # removes too little of the mismatch of staying to be a drift
    before, after, wide = _end_of_a_nucleus(neighbours=False)
    mask = crop_mask(wide, (0, 0), SHAPE)
    assert object_shift(_reader(before), _reader(after), mask, 4) == (0, 0)
    monkeypatch.setattr(motion, "MIN_GAIN", 0.0)
    assert object_shift(_reader(before), _reader(after), mask, 4) != (0, 0)


def test_no_shift_without_something_to_match():
    flat = np.full(SHAPE, 100.0, np.float32)
    mask = _box_mask(50, 40, 70, 62)
    assert object_shift(_reader(flat), _reader(flat), mask, 4) == (0, 0)
    empty = crop_mask(np.zeros(SHAPE, bool), (0, 0), SHAPE)
    assert object_shift(_reader(_field()), _reader(_field(1)), empty, 4) == (0, 0)
    assert object_shift(_reader(_field()), _reader(np.roll(_field(), 2, 0)), mask, 0) == (0, 0)
    tiny = crop_mask(np.ones((6, 6), bool), (0, 0), (6, 6))
    pixels = _field()[:6, :6]
    assert object_shift(_reader(pixels), _reader(pixels[::-1]), tiny, 4) == (0, 0)


def test_a_mask_at_the_plane_edge_is_matched_inside_it():
    before = np.stack([_field()] * 3, axis=-1)  # (H, W, 3)
    after = np.roll(before, (2, 1), axis=(0, 1))
    assert object_shift(_reader(before), _reader(after), _box_mask(0, 0, 20, 20), 4) == (2, 1)


def test_a_moved_mask_keeps_its_pixels_and_drops_those_off_the_plane():
    mask = _box_mask(50, 40, 70, 62)
    moved = moved_mask(mask, (3, -2))
    np.testing.assert_array_equal(moved.to_array(), np.roll(mask.to_array(), (3, -2), (0, 1)))
    assert moved_mask(mask, (0, 0)) is mask
    edge = moved_mask(mask, (68, 0))  # rows 118..138 of 128
    assert edge.area == 10 * 22 and edge.to_array()[118:, 40:62].all()
    gone = moved_mask(mask, (200, 0))
    assert gone.area == 0 and gone.shape == SHAPE
    # what is left is cropped to its pixels: an L whose long arm leaves the plane
    ell = np.zeros(SHAPE, bool)
    ell[100:128, 10:14] = True
    ell[124:128, 10:30] = True
    left = moved_mask(crop_mask(ell, (0, 0), SHAPE), (0, -15))
    assert left.bbox == (124, 0, 128, 15) and left.area == 4 * 15

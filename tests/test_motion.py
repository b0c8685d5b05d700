"""Following an object's move between planes: the shift the carried mask moves by."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_sam.motion import object_shift, shifted
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


@pytest.mark.parametrize("move", [(3, -2), (-1, 4), (0, 1)])
def test_the_shift_is_the_move_of_the_pixels_around_the_object(move):
    before = _field()
    after = np.roll(before, move, axis=(0, 1))
    assert object_shift(_reader(before), _reader(after), _box_mask(50, 40, 70, 62), 4) == move


def test_no_move_no_shift_and_a_move_past_reach_is_not_made_up():
    before = _field()
    mask = _box_mask(50, 40, 70, 62)
    assert object_shift(_reader(before), _reader(before), mask, 4) == (0, 0)
    far = object_shift(_reader(before), _reader(np.roll(before, (9, 0), (0, 1))), mask, 4)
    assert all(abs(v) <= 4 for v in far)


def test_an_object_that_only_changes_its_outline_is_not_moved():
    # z: the neighbours stay where they are while the object's cross-section shrinks about
    # its centre (its end); a window of the object alone would be pulled around by that
    rows, cols = np.indices(SHAPE)
    neighbours = sum(((rows - r) ** 2 + (cols - c) ** 2 <= 81) * 600.0
                     for r, c in ((30, 30), (30, 95), (95, 30), (100, 100)))  # fmt: skip
    noise = np.random.default_rng(1).normal(0, 10, (2, *SHAPE))
    wide = (rows - 64) ** 2 + (cols - 60) ** 2 <= 14**2
    narrow = (rows - 65) ** 2 + (cols - 60) ** 2 <= 8**2  # a pixel off the centre
    before = ndimage.gaussian_filter(neighbours + 900.0 * wide, 1.5) + noise[0]
    after = ndimage.gaussian_filter(neighbours + 900.0 * narrow, 1.5) + noise[1]
    mask = crop_mask(wide, (0, 0), SHAPE)
    assert object_shift(_reader(before), _reader(after), mask, 4) == (0, 0)


def test_no_shift_without_something_to_match():
    flat = np.full(SHAPE, 100.0, np.float32)
    mask = _box_mask(50, 40, 70, 62)
    assert object_shift(_reader(flat), _reader(flat), mask, 4) == (0, 0)
    empty = crop_mask(np.zeros(SHAPE, bool), (0, 0), SHAPE)
    assert object_shift(_reader(_field()), _reader(_field(1)), empty, 4) == (0, 0)
    assert object_shift(_reader(_field()), _reader(np.roll(_field(), 2, 0)), mask, 0) == (0, 0)


def test_a_mask_at_the_plane_edge_is_matched_inside_it_and_channels_are_averaged():
    before = np.stack([_field()] * 3, axis=-1)  # (H, W, 3)
    after = np.roll(before, (2, 1), axis=(0, 1))
    assert object_shift(_reader(before), _reader(after), _box_mask(0, 0, 20, 20), 4) == (2, 1)


def test_a_shifted_mask_keeps_its_pixels_and_drops_those_off_the_plane():
    mask = _box_mask(50, 40, 70, 62)
    moved = shifted(mask, (3, -2))
    np.testing.assert_array_equal(moved.to_array(), np.roll(mask.to_array(), (3, -2), (0, 1)))
    assert shifted(mask, (0, 0)) is mask
    edge = shifted(mask, (68, 0))  # rows 118..138 of 128
    assert edge.area == 10 * 22 and edge.to_array()[118:, 40:62].all()
    gone = shifted(mask, (200, 0))
    assert gone.area == 0 and gone.shape == SHAPE

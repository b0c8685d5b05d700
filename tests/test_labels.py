"""Writing a mask keeps other objects, replaces the object's old pixels, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.labels import apply_edit, plan_write, write_mask
from napari_sam.transforms import ObjectMask


def _mask(shape, r0, c0, r1, c1) -> ObjectMask:
    return ObjectMask(np.ones((r1 - r0, c1 - c0), bool), (r0, c0), shape)


@pytest.fixture
def labels():
    labels = np.zeros((2, 20, 20), np.uint16)
    labels[1, 0:8, 0:8] = 1  # another object
    labels[1, 15:18, 15:18] = 2  # the object's old pixels
    labels[0, 5:10, 5:10] = 7  # another slice
    return labels


def test_write_keeps_other_objects_and_replaces_own(labels):
    before = labels.copy()
    write_mask(labels, _mask((20, 20), 5, 5, 12, 12), 2, index=(1,))
    assert (labels[1, 0:8, 0:8] == 1).all()  # kept where they overlap
    assert (labels[1, 8:12, 5:12] == 2).all() and (labels[1, 5:8, 8:12] == 2).all()
    assert (labels[1, 15:18, 15:18] == 0).all()  # re-segmented object replaced
    np.testing.assert_array_equal(labels[0], before[0])  # other slice untouched


def test_overwrite_and_keep_previous(labels):
    write_mask(labels, _mask((20, 20), 5, 5, 12, 12), 2, index=(1,), overwrite=True,
               replace=False)
    assert (labels[1, 5:8, 5:8] == 2).all() and (labels[1, 15:18, 15:18] == 2).all()


def test_plan_equals_write(labels):
    mask = ObjectMask(np.random.default_rng(0).random((9, 11)) > 0.5, (4, 3), (20, 20))
    a, b = labels.copy(), labels.copy()
    n = write_mask(a, mask, 2, index=(1,))
    edit = plan_write(b, mask, 2, index=(1,))
    apply_edit(b, edit)
    np.testing.assert_array_equal(a, b)
    assert n == edit.n_changed > 0


def test_bad_writes_leave_labels_untouched(labels):
    before = labels.copy()
    with pytest.raises(ValueError, match="slice indices"):
        write_mask(labels, _mask((20, 20), 0, 0, 3, 3), 2)
    with pytest.raises(ValueError, match="positive integer"):
        write_mask(labels, _mask((20, 20), 0, 0, 3, 3), 0, index=(0,))
    with pytest.raises(ValueError, match="does not fit"):
        write_mask(labels, _mask((20, 20), 0, 0, 3, 3), 70000, index=(0,))
    with pytest.raises(ValueError, match="mask is"):
        write_mask(labels, _mask((10, 10), 0, 0, 3, 3), 2, index=(0,))
    np.testing.assert_array_equal(labels, before)

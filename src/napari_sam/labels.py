"""Writing object masks into label arrays (numpy; the napari adapter reuses the plan).

Rules, the same for a script, the CLI and the napari layer: the object's mask pixels get its
id; pixels of *other* objects are kept unless ``overwrite``; the object's earlier pixels on
the same slice that fall outside the new mask are cleared when ``replace`` (re-segmenting an
object replaces it). Nothing outside the written slice changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_sam.transforms import ObjectMask


@dataclass(frozen=True)
class LabelEdit:
    """The pixels one write changes, as full nD fancy indices into the label array.

    paint: tuple of D int64 arrays (pixels that become ``label_id``); clear: tuple of D int64
    arrays (the object's old pixels that become 0).
    """

    label_id: int
    paint: tuple[np.ndarray, ...]
    clear: tuple[np.ndarray, ...]

    @property
    def n_changed(self) -> int:
        return len(self.paint[0]) + len(self.clear[0])


def _check(labels: np.ndarray, mask: ObjectMask, label_id: int, index: tuple[int, ...]):
    if label_id <= 0:
        raise ValueError(f"an object's label id must be a positive integer, got {label_id}")
    if labels.ndim != len(index) + 2:
        raise ValueError(
            f"labels of shape {labels.shape} need {labels.ndim - 2} slice indices, got {index}"
        )
    if tuple(labels.shape[-2:]) != mask.shape:
        raise ValueError(f"the mask is {mask.shape} but the labels' slice is {labels.shape[-2:]}")
    if np.iinfo(labels.dtype).max < label_id if labels.dtype.kind in "ui" else False:
        raise ValueError(f"label id {label_id} does not fit the labels' dtype {labels.dtype}")
    for i, n in zip(index, labels.shape):
        if not 0 <= i < n:
            raise ValueError(f"slice index {index} is outside the labels' shape {labels.shape}")


def _paint_selection(window: np.ndarray, crop: np.ndarray, label_id: int, overwrite: bool):
    """Pixels of ``window`` (h, w) to paint: in the mask, not already the id, and free (0)
    unless ``overwrite``."""
    sel = crop & (window != label_id)
    if not overwrite:
        sel &= window == 0
    return sel


def plan_write(
    labels: np.ndarray,
    mask: ObjectMask,
    label_id: int,
    *,
    index: Sequence[int] = (),
    overwrite: bool = False,
    replace: bool = True,
) -> LabelEdit:
    """The :class:`LabelEdit` that writes ``mask`` into ``labels[index]`` (see the module
    rules). labels: (..., H, W) integer; index: the leading indices of the slice."""
    index = tuple(int(i) for i in index)
    _check(labels, mask, label_id, index)
    plane = labels[index]
    r0, c0, r1, c1 = mask.bbox
    sel = _paint_selection(np.asarray(plane[r0:r1, c0:c1]), mask.crop, label_id, overwrite)
    rr, cc = np.nonzero(sel)
    paint = _full_index(index, rr + r0, cc + c0)
    if replace:
        old = np.asarray(plane) == label_id
        old[r0:r1, c0:c1] &= ~mask.crop
        rr, cc = np.nonzero(old)
    else:
        rr = cc = np.zeros(0, np.int64)
    return LabelEdit(label_id, paint, _full_index(index, rr, cc))


def _full_index(index: tuple[int, ...], rr: np.ndarray, cc: np.ndarray):
    lead = tuple(np.full(len(rr), i, dtype=np.int64) for i in index)
    return (*lead, rr.astype(np.int64), cc.astype(np.int64))


def apply_edit(labels: np.ndarray, edit: LabelEdit) -> None:
    """Apply ``edit`` to ``labels`` in place."""
    labels[edit.clear] = 0
    labels[edit.paint] = edit.label_id


def write_mask(
    labels: np.ndarray,
    mask: ObjectMask,
    label_id: int,
    *,
    index: Sequence[int] = (),
    overwrite: bool = False,
    replace: bool = True,
) -> int:
    """Write ``mask`` into ``labels[index]`` in place (module rules); returns the number of
    pixels changed: :func:`plan_write` then :func:`apply_edit`. labels: (..., H, W) integer
    numpy array."""
    edit = plan_write(labels, mask, label_id, index=index, overwrite=overwrite, replace=replace)
    apply_edit(labels, edit)
    return edit.n_changed

"""How far an object moved between two planes, so that the mask carried to the next plane
follows it.

A nucleus that drifts between frames leaves the previous frame's mask behind: sent as it is
as the dense prompt, that mask is followed closely, and the strip the nucleus moved into is
lost frame after frame. Propagation (:mod:`napari_sam.propagation`) therefore moves the
carried mask by the shift that best matches the previous plane's pixels around it with the
next plane's: the zero-mean normalised cross-correlation of a window that holds the object
and as much again of its surroundings on each side. The surroundings are what keeps the
shift honest in z: there the neighbours stay where they are while the object's own outline
changes from slice to slice, and a window of the object alone would chase that change.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.signal import fftconvolve

from napari_sam.evidence import read_plane
from napari_sam.plane_segmentation import crop_mask
from napari_sam.tile_grid import Box
from napari_sam.transforms import ObjectMask

#: the most surroundings (px per side) the match reads: bounds the work for large objects
MAX_CONTEXT = 64
#: a move is taken only where it removes at least this share of the mismatch of staying
#: (1 - the correlation without a shift). Through t a drift removes most of it (median 0.57
#: on bench_foreign's drifting nuclei, ours); in z, where nothing moves and the object only
#: changes its outline, a shift removes 0.12 or less at 9 in 10 steps, and taken there it
#: pulled the faint pole of the widget's 3D sample off its nucleus
MIN_GAIN = 0.25


def object_shift(before: Callable[[Box], np.ndarray], after: Callable[[Box], np.ndarray],
                 mask: ObjectMask, reach: int) -> tuple[int, int]:  # fmt: skip
    """The ``(rows, cols)`` shift, each in ``[-reach, reach]``, by which the pixels around
    ``mask`` on plane ``before`` best match those of plane ``after``: the window is the
    mask's box grown on each side by the larger of ``reach`` and its longer side, but by
    no more than :data:`MAX_CONTEXT` px, and kept ``reach`` px inside the plane. ``(0, 0)``
    for an empty mask, ``reach`` 0, a window too thin to match or a flat one, and where the
    best shift matches too little better than none (:data:`MIN_GAIN`). Of equal matches
    the smallest shift wins. NaN pixels count as the window's mean. ``before`` / ``after``:
    ``read(window)`` (row0, col0, row1, col1; end exclusive) giving (h, w) or (h, w, C)
    pixels, as for :func:`~napari_sam.evidence.read_plane`."""
    if mask.area == 0 or reach <= 0:
        return (0, 0)
    rows, cols = mask.shape
    r0, c0, r1, c1 = mask.bbox
    pad = min(max(reach, r1 - r0, c1 - c0), MAX_CONTEXT)
    t0, l0 = max(r0 - pad, reach), max(c0 - pad, reach)
    t1, l1 = min(r1 + pad, rows - reach), min(c1 + pad, cols - reach)
    if t1 - t0 < 2 or l1 - l0 < 2:
        return (0, 0)
    template = _filled(read_plane(before, (t0, l0, t1, l1)))
    search = _filled(read_plane(after, (t0 - reach, l0 - reach, t1 + reach, l1 + reach)))
    template -= template.mean()
    norm = float(np.sqrt((template**2).sum()))
    if not norm > 0:
        return (0, 0)
    h, w = template.shape
    product = fftconvolve(search, template[::-1, ::-1], mode="valid")  # (2R+1, 2R+1)
    sums, squares = _window_sums(search, h, w), _window_sums(search**2, h, w)
    spread = np.sqrt(np.maximum(squares - sums**2 / template.size, 0.0))
    score = np.where(spread > 0, product / np.maximum(spread * norm, 1e-12), -np.inf)
    if not np.isfinite(score).any():
        return (0, 0)
    staying = float(score[reach, reach])
    if score.max() - staying < MIN_GAIN * (1 - staying):
        return (0, 0)
    offsets = np.arange(-reach, reach + 1)
    distance = (np.abs(offsets)[:, None] + np.abs(offsets)[None, :]).ravel()
    best = np.flatnonzero(score.ravel() >= score.max() - 1e-9)
    i, j = np.unravel_index(best[np.argmin(distance[best])], score.shape)
    return (int(offsets[i]), int(offsets[j]))


def _filled(pixels: np.ndarray) -> np.ndarray:
    """(h, w) float64 ``pixels`` with NaN set to their mean (all NaN: left NaN)."""
    pixels = pixels.astype(np.float64)
    missing = np.isnan(pixels)
    if missing.any() and not missing.all():
        pixels[missing] = pixels[~missing].mean()
    return pixels


def _window_sums(values: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H - h + 1, W - w + 1): the sum of ``values`` (H, W) over every (h, w) window that
    fits, by its top-left corner."""
    total = np.pad(values.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return total[h:, w:] - total[:-h, w:] - total[h:, :-w] + total[:-h, :-w]


def moved_mask(mask: ObjectMask, shift: tuple[int, int]) -> ObjectMask:
    """``mask`` moved by ``shift`` ``(rows, cols)``, cropped to its pixels; those moved off
    the plane are dropped."""
    if mask.area == 0 or shift == (0, 0):
        return mask
    rows, cols = mask.shape
    r0, c0 = int(mask.offset[0]) + shift[0], int(mask.offset[1]) + shift[1]
    h, w = mask.crop.shape
    top, left = max(-r0, 0), max(-c0, 0)
    bottom, right = max(r0 + h - rows, 0), max(c0 + w - cols, 0)
    crop = mask.crop[top : max(h - bottom, top), left : max(w - right, left)]
    return crop_mask(crop, (r0 + top, c0 + left), mask.shape)

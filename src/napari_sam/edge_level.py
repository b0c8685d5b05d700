"""The object's own intensity edge on a stack's slices: its annotated slice's, or its own peak's.

Past the middle of a nucleus in a coarse-z stack, SAM's mask takes in the out-of-focus light
around the smaller cross-section: a slice or two from the middle the mask keeps the middle's
size. The pixels still tell: blurred in z, the nucleus's light at its true edge has about the
same level on every slice, while the out-of-focus halo is dimmer. So propagation
(:mod:`napari_sam.propagation`) reads a level at the object's edge on the slice the user
annotated, between the ring just outside the mask and the median inside it, and cuts the
masks of slices where the object fades to the pixels at or above that level. Under strong
blur along z the halo a slice or two from the middle is brighter than that level; there the
level is taken on the slice itself, between the ring and the object's peak (a high
percentile inside the mask), as one takes an edge at a fraction of the object's maximum.

Only objects brighter than their surroundings (fluorescence) get a level, as only they get
the contrast evidence (:func:`~napari_sam.evidence.reference_contrast`), measured against the
same surroundings (the ring, or for a dim nucleus among brighter ones its darker half); an
object that does not stand out on a slice gets no level there, and where it has none its
masks are left as the model gave them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from napari_sam.evidence import (
    STANDS_OUT,
    Surround,
    mask_neighbourhood,
    read_plane,
    surroundings,
)
from napari_sam.plane_segmentation import crop_mask
from napari_sam.tile_grid import Box
from napari_sam.transforms import ObjectMask


def edge_level(read: Callable[[Box], np.ndarray], mask: ObjectMask, fraction: float,
               surround: Surround = "ring", percentile: float = 50.0) -> float | None:  # fmt: skip
    """The level ``fraction`` of the way from the mean of the ring just outside ``mask`` (1 px
    wide, 2 px off; with ``surround="dark"`` its darker half,
    :func:`~napari_sam.evidence.surroundings`) to the ``percentile`` of the pixels in it (the
    median by default; 95: the object's peak, where the mask also holds a dimmer halo), in
    the image's own units. ``read(window)`` gives the plane's pixels in ``window`` (row0,
    col0, row1, col1; end exclusive), (h, w) or (h, w, C) (channels averaged). None when the
    mask is empty or the object does not stand out from those pixels: its median must stand
    above them by more than half their standard deviation, twice for the darker half
    (:data:`~napari_sam.evidence.STANDS_OUT`), whatever the percentile (a high percentile of
    noise alone stands above its mean)."""
    if mask.area == 0:
        return None
    window, held = mask_neighbourhood(mask, pad=4)
    pixels = read_plane(read, window)
    ring = ndimage.binary_dilation(held, iterations=2) & ~ndimage.binary_dilation(held)
    if not ring.any():
        return None
    around = surroundings(pixels[ring], surround)
    middle, low = float(np.nanmedian(pixels[held])), float(np.nanmean(around))
    if not np.isfinite(middle - low) or middle - low <= STANDS_OUT[surround] * float(np.nanstd(around)):
        return None
    return low + fraction * (float(np.nanpercentile(pixels[held], percentile)) - low)


def cut_to_level(read: Callable[[Box], np.ndarray], mask: ObjectMask, level: float,
                 seed: tuple[int, int] | None = None) -> ObjectMask:  # fmt: skip
    """``mask`` cut to its pixels at or above ``level``, holes filled (texture darker than the
    edge stays inside), then one connected piece: the one holding ``seed`` (a plane
    ``(row, col)`` pixel, e.g. the click that prompted the mask), else the largest. Empty when
    no pixel is left."""
    if mask.area == 0:
        return mask
    window, inside = mask_neighbourhood(mask, pad=0)
    keep = ndimage.binary_fill_holes(inside & (read_plane(read, window) >= level))
    pieces, count = ndimage.label(keep)
    if count > 1:
        held = _piece_at(pieces, seed, window)
        sizes = ndimage.sum_labels(keep, pieces, range(1, count + 1))
        keep = pieces == (held or 1 + int(np.argmax(sizes)))
    return crop_mask(keep, window[:2], mask.shape)


def _piece_at(pieces: np.ndarray, seed: tuple[int, int] | None, window: Box) -> int:
    """The label of ``pieces`` (h, w, in ``window``) at plane pixel ``seed`` (0: none)."""
    if seed is None:
        return 0
    r, c = seed[0] - window[0], seed[1] - window[1]
    inside = 0 <= r < pieces.shape[0] and 0 <= c < pieces.shape[1]
    return int(pieces[r, c]) if inside else 0

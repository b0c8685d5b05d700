"""Where an object ends: the evidence each propagated slice carries, beyond the model's word.

A model's predicted IoU stays high on wrong masks (the out-of-focus light past a nucleus's end,
a neighbour it runs into), so propagation (:mod:`napari_sam.propagation`) also weighs what it can
measure itself, per slice, against the slice it came from:

- ``overlap``: intersection over the smaller area with the previous slice's mask (small when
  the mask jumps to a neighbour; 1 when an object narrows inside its previous outline);
- ``growth``: area over the previous slice's area (a leak into a neighbour or haze grows it
  at once; a nucleus seen from its middle outwards narrows);
- ``contrast``: the object's mean intensity above its surroundings (a ring around the mask;
  for a dim nucleus pressed among brighter ones, the ring's darker half), relative to that
  on the annotated slice it started from (past an object's end only blur
  is left, and the contrast falls); ``fade``: the same over the previous slice's (an end in z fades within a slice or two; an object that
  bleaches through t fades a little per frame, and is not cut for it);
- ``stability``: SAM's stability score of the mask's low-res logits (IoU of the masks at
  logit +1 and -1: a blurred end has soft logits);
- ``score``: the model's predicted IoU.

:func:`confidence` folds them into one number per slice in [0, 1] that the widget shows, so
the user can jump to the doubtful slices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from napari_sam.tile_grid import Box
from napari_sam.transforms import ObjectMask

Surround = Literal["ring", "dark"]
"""What an object's contrast is measured against: the whole ring around its mask, or the
ring's darker half (its pixels at or below the ring's median)."""


@dataclass(frozen=True)
class SliceEvidence:
    """What one slice's mask says about itself (see the module docstring); floats."""

    score: float
    overlap: float
    growth: float
    contrast: float
    stability: float
    fade: float = 1.0


def stability_score(logits: np.ndarray, threshold: float = 0.0, offset: float = 1.0) -> float:
    """SAM's stability score of (L, L) ``logits``: IoU of the masks above ``threshold`` +
    ``offset`` and above ``threshold`` - ``offset`` (1 for an empty mask)."""
    wide = np.count_nonzero(logits > threshold - offset)
    return float(np.count_nonzero(logits > threshold + offset) / wide) if wide else 1.0


def object_contrast(
    read: Callable[[Box], np.ndarray], mask: ObjectMask, surround: Surround = "ring"
) -> tuple[float, float]:
    """``(difference, spread)``: mean inside ``mask`` - mean of its surroundings, and their
    standard deviation, in the image's own units (compare differences between slices
    of one stack as a ratio). ``read(window)`` gives the plane's pixels in ``window`` (row0,
    col0, row1, col1; end exclusive) as (h, w) or (h, w, C) (channels averaged): only the
    mask's neighbourhood is read. (0, 0) for an empty mask. The surroundings are a ring one
    pixel off the mask, about a quarter of the object's size wide, or with ``surround="dark"``
    the ring's darker half (:func:`surroundings`)."""
    if mask.area == 0:
        return 0.0, 0.0
    width = max(2, round(np.sqrt(mask.area) / 4))
    box, inside = mask_neighbourhood(mask, pad=width + 2)
    near = ndimage.binary_dilation(inside, iterations=1)
    ring = ndimage.binary_dilation(near, iterations=width) & ~near
    if not ring.any():
        return 0.0, 0.0
    window = read_plane(read, box)
    around = surroundings(window[ring], surround)
    return float(np.nanmean(window[inside]) - np.nanmean(around)), float(np.nanstd(around))


def surroundings(ring: np.ndarray, surround: Surround) -> np.ndarray:
    """(K,) the pixels of (N,) ``ring`` an object is measured against: all of them, or for
    ``"dark"`` those at or below their median (around a nucleus pressed among brighter ones,
    the gaps and background rather than the neighbours)."""
    if surround == "ring":
        return ring
    if surround == "dark":
        return ring[ring <= np.nanmedian(ring)]
    raise ValueError(f"surround must be 'ring' or 'dark', got {surround!r}")


STANDS_OUT = {"ring": 0.5, "dark": 2.0}
"""How many of its surroundings' standard deviations an object's mean must stand above them
to stand out. The darker half is cut at the median, so noise alone stands about 1.3 of that
half's deviation above it: the fallback asks for 2."""


def mask_neighbourhood(mask: ObjectMask, pad: int) -> tuple[Box, np.ndarray]:
    """The window around ``mask`` grown by ``pad`` px (clipped to the plane), and the mask
    in it, (h, w) bool."""
    r0, c0, r1, c1 = mask.bbox
    rows, cols = mask.shape
    window = (max(r0 - pad, 0), max(c0 - pad, 0), min(r1 + pad, rows), min(c1 + pad, cols))
    inside = np.zeros((window[2] - window[0], window[3] - window[1]), dtype=bool)
    inside[r0 - window[0] : r1 - window[0], c0 - window[1] : c1 - window[1]] = mask.crop
    return window, inside


def read_plane(read: Callable[[Box], np.ndarray], window: Box) -> np.ndarray:
    """(h, w) float32 pixels of ``window`` from ``read`` ((h, w) or (h, w, C): channels
    averaged)."""
    pixels = np.asarray(read(window), dtype=np.float32)
    return pixels.mean(-1) if pixels.ndim == 3 else pixels


def reference_contrast(
    read: Callable[[Box], np.ndarray], mask: ObjectMask
) -> tuple[float, Surround]:
    """The contrast later slices are measured against, on an annotated slice, and what it is
    measured against there: :func:`object_contrast`'s difference against the whole ring when
    the object stands out from it by more than half its standard deviation; else (a dim
    nucleus among brighter neighbours) against the ring's darker half, when it stands out
    from that by more than twice its deviation (:data:`STANDS_OUT`); else ``(0.0, "ring")``
    (the contrast evidence is then neutral)."""
    for surround in ("ring", "dark"):
        difference, spread = object_contrast(read, mask, surround)
        if difference > STANDS_OUT[surround] * spread:
            return difference, surround
    return 0.0, "ring"


def mask_overlap(a: ObjectMask, b: ObjectMask) -> float:
    """Overlap coefficient of two masks on one plane: intersection over the smaller area (0
    if either is empty). 1 when an object shrinks inside its previous outline (its end in z),
    small when the mask jumps to a neighbour."""
    if a.area == 0 or b.area == 0:
        return 0.0
    r0, c0 = min(a.bbox[0], b.bbox[0]), min(a.bbox[1], b.bbox[1])
    r1, c1 = max(a.bbox[2], b.bbox[2]), max(a.bbox[3], b.bbox[3])
    canvas = np.zeros((2, r1 - r0, c1 - c0), dtype=bool)
    for k, m in enumerate((a, b)):
        (mr0, mc0, mr1, mc1) = m.bbox
        canvas[k, mr0 - r0 : mr1 - r0, mc0 - c0 : mc1 - c0] = m.crop
    return float((canvas[0] & canvas[1]).sum() / min(a.area, b.area))


def confidence(evidence: SliceEvidence) -> float:
    """One number in [0, 1] per slice: the weakest of overlap, contrast (relative, capped at
    1), stability and predicted IoU, lowered further by growth beyond 1.25x. An annotated
    slice is 1 (the user said so)."""
    growth = min(1.0, 1.25 / evidence.growth) if evidence.growth > 0 else 0.0
    parts = (evidence.overlap, min(evidence.contrast, 1.0), evidence.stability,
             evidence.score, growth)  # fmt: skip
    return float(np.clip(min(parts), 0.0, 1.0))

"""Prompts: what the user says about one object, in image pixel ``(row, col)`` coordinates.

Numpy in, numpy out; no napari here (see :mod:`napari_sam.napari_layers` for the adapter).
A :class:`Prompt` holds any of: points with :class:`PointLabel` s, a box, and a dense mask
(a full-resolution binary mask, e.g. a drawn polygon or an existing label, or the low-res
logits of an earlier prediction for iterative refinement).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class PointLabel(IntEnum):
    """What a point says about the object (SAM's point label values)."""

    NEGATIVE = 0  # background: not part of the object
    POSITIVE = 1  # foreground: part of the object


@dataclass(frozen=True, eq=False)
class Prompt:
    """One object's prompt on a 2D image (or the displayed 2D slice of nD data).

    points: (N, 2) float64 ``(row, col)`` pixel coordinates (pixel centres are integers);
    labels: (N,) int64 :class:`PointLabel` values; box: (4,) float64
    ``(row0, col0, row1, col1)`` or None; mask: (H, W) bool at the image's resolution or
    None; mask_logits: (L, L) float32 low-res logits (``MaskPrediction.logits[i]``) or None.
    Use the constructors :meth:`from_points`, :meth:`from_box`, or ``Prompt(...)``.
    """

    points: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 2)))
    labels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    box: np.ndarray | None = None
    mask: np.ndarray | None = None
    mask_logits: np.ndarray | None = None

    def __post_init__(self) -> None:
        points = np.asarray(self.points, dtype=np.float64).reshape(-1, 2)
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(points) != len(labels):
            raise ValueError(f"{len(points)} points but {len(labels)} point labels")
        if not np.isfinite(points).all():
            bad = points[~np.isfinite(points).all(1)][0].tolist()
            raise ValueError(f"the point {bad} (row, col) is not a finite position")
        if not np.isin(labels, [int(v) for v in PointLabel]).all():
            raise ValueError(f"point labels must be 0 (negative) or 1 (positive), got {labels}")
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "labels", labels)
        if self.box is not None:
            box = np.asarray(self.box, dtype=np.float64).reshape(-1)
            if box.shape != (4,) or not np.isfinite(box).all():
                raise ValueError(f"a box is (row0, col0, row1, col1), got {self.box!r}")
            r0, r1 = sorted(box[[0, 2]])
            c0, c1 = sorted(box[[1, 3]])
            if r1 - r0 <= 0 or c1 - c0 <= 0:
                raise ValueError(f"the box {box.tolist()} has zero area")
            object.__setattr__(self, "box", np.array([r0, c0, r1, c1]))
        if self.mask is not None:
            mask = np.asarray(self.mask, dtype=bool)
            if mask.ndim != 2 or not mask.any():
                raise ValueError("a mask prompt must be a non-empty 2D mask")
            object.__setattr__(self, "mask", mask)
        if self.mask_logits is not None:
            logits = np.asarray(self.mask_logits, dtype=np.float32)
            logits = logits.reshape(logits.shape[-2:]) if logits.ndim == 3 else logits
            object.__setattr__(self, "mask_logits", logits)
            if self.mask is not None:
                raise ValueError("give a mask or mask logits, not both")
        if not len(points) and self.box is None and self.mask is None:
            raise ValueError("a prompt needs at least one point, a box or a mask")

    @classmethod
    def from_points(cls, points_rc, labels=None) -> Prompt:
        """Points ``(row, col)`` (N, 2); labels (N,) PointLabel / bool / 0-1, default all
        positive."""
        points = np.asarray(points_rc, dtype=np.float64).reshape(-1, 2)
        if labels is None:
            labels = np.full(len(points), PointLabel.POSITIVE)
        return cls(points=points, labels=np.asarray(labels).astype(np.int64))

    @classmethod
    def from_box(cls, box_rc) -> Prompt:
        """A box ``(row0, col0, row1, col1)``."""
        return cls(box=np.asarray(box_rc, dtype=np.float64))

    def positives_first(self) -> Prompt | None:
        """For points alone of both kinds (no box, no mask): the prompt of its positive
        points alone, tried first by the prompting path; a negative point the positives'
        mask already leaves out then changes nothing (docs/prompting.md). Else None."""
        negative = self.labels == PointLabel.NEGATIVE
        if (self.box is not None or self.mask is not None or self.mask_logits is not None
                or not negative.any() or negative.all()):  # fmt: skip
            return None
        return Prompt(points=self.points[~negative], labels=self.labels[~negative])

    @property
    def negatives(self) -> np.ndarray:
        """(M, 2) the negative points."""
        return self.points[self.labels == PointLabel.NEGATIVE]

    def with_mask_logits(self, logits) -> Prompt:
        """This prompt plus an earlier prediction's low-res logits (L, L), for refinement."""
        return dataclasses.replace(self, mask=None, mask_logits=np.asarray(logits))

    @property
    def kind(self) -> tuple[int, bool, bool]:
        """(number of points, has box, has dense mask): prompts of one kind decode together."""
        dense = self.mask is not None or self.mask_logits is not None
        return (len(self.points), self.box is not None, dense)

    def validate(self, image_shape: tuple[int, int]) -> None:
        """Raise ``ValueError`` unless this prompt fits an image of ``(rows, cols)``."""
        rows, cols = image_shape
        outside = (
            (self.points[:, 0] < -0.5)
            | (self.points[:, 0] >= rows - 0.5)
            | (self.points[:, 1] < -0.5)
            | (self.points[:, 1] >= cols - 0.5)
        )
        if outside.any():
            bad = self.points[outside][0].tolist()
            raise ValueError(f"the point {bad} (row, col) is outside the {rows} x {cols} image")
        if self.box is not None:
            r0, c0, r1, c1 = self.box
            if r1 <= -0.5 or c1 <= -0.5 or r0 >= rows - 0.5 or c0 >= cols - 0.5:
                raise ValueError(
                    f"the box {self.box.tolist()} lies outside the {rows} x {cols} image"
                )
        if self.mask is not None and self.mask.shape != (rows, cols):
            raise ValueError(f"the mask prompt is {self.mask.shape}, the image {(rows, cols)}")

    def within(self, image_shape: tuple[int, int]) -> Prompt:
        """This prompt with its box clipped to the image's pixels (validate first): a box
        reaching far outside (1e308) says no more than one ending at the border."""
        if self.box is None:
            return self
        rows, cols = image_shape
        low, high = np.array([-0.5, -0.5] * 2), np.array([rows - 0.5, cols - 0.5] * 2)
        box = np.clip(self.box, low, high)
        return self if np.array_equal(box, self.box) else dataclasses.replace(self, box=box)


# ------------------------------------------------------------------ from layer-like data


def points_on_slice(
    coords: np.ndarray,
    slice_index: Sequence[int] = (),
    displayed: tuple[int, int] | None = None,
) -> np.ndarray:
    """Which of the points lie on the displayed slice: bool (N,).

    coords: (N, D) data coordinates; slice_index: the index along each non-displayed axis, in
    axis order (length D - 2); displayed: the two displayed axes (default: the last two).
    """
    coords = np.asarray(coords, dtype=np.float64).reshape(len(coords), -1)
    ndim = coords.shape[1]
    displayed = displayed or (ndim - 2, ndim - 1)
    others = [a for a in range(ndim) if a not in displayed]
    if len(slice_index) != len(others):
        raise ValueError(f"{ndim}D points need {len(others)} slice indices, got {slice_index}")
    keep = np.ones(len(coords), dtype=bool)
    for axis, index in zip(others, slice_index):
        keep &= np.round(coords[:, axis]) == index
    return keep


def prompt_from_points(coords_rc: np.ndarray, positive: np.ndarray | None = None) -> Prompt:
    """Points (N, 2) ``(row, col)`` and a ``positive`` bool (N,) flag (default True)."""
    coords_rc = np.asarray(coords_rc, dtype=np.float64).reshape(-1, 2)
    if len(coords_rc) == 0:
        raise ValueError("no points to segment from: add a point on the displayed slice")
    if positive is None:
        positive = np.ones(len(coords_rc), dtype=bool)
    labels = np.where(np.asarray(positive, dtype=bool), PointLabel.POSITIVE, PointLabel.NEGATIVE)
    return Prompt.from_points(coords_rc, labels)


def box_of(vertices_rc: np.ndarray) -> np.ndarray:
    """The bounding box ``(row0, col0, row1, col1)`` of vertices (V, 2)."""
    v = np.asarray(vertices_rc, dtype=np.float64).reshape(-1, 2)
    return np.concatenate((v.min(0), v.max(0)))


def rasterise_shape(
    vertices_rc: np.ndarray, shape_type: str, image_shape: tuple[int, int]
) -> np.ndarray:
    """A napari shape's (V, 2) ``(row, col)`` vertices filled into an (H, W) bool mask.

    shape_type: ``polygon``, ``ellipse`` (4 corners of its bounding box), ``rectangle``,
    ``path`` / ``line`` (1-pixel lines along the vertices).
    """
    from skimage.draw import ellipse, line, polygon

    v = np.asarray(vertices_rc, dtype=np.float64).reshape(-1, 2)
    mask = np.zeros(image_shape, dtype=bool)
    if shape_type in ("polygon", "rectangle"):
        rr, cc = polygon(v[:, 0], v[:, 1], shape=image_shape)
        mask[rr, cc] = True
        rr, cc = np.round(v).astype(int).T  # vertices themselves (thin polygons)
    elif shape_type == "ellipse":
        (r0, c0), (r1, c1) = v.min(0), v.max(0)
        rr, cc = ellipse(
            (r0 + r1) / 2, (c0 + c1) / 2, (r1 - r0) / 2, (c1 - c0) / 2, shape=image_shape
        )
    elif shape_type in ("path", "line"):
        ends = np.round(v).astype(int)
        parts = [line(*a, *b) for a, b in itertools.pairwise(ends)] or [(ends[:, 0], ends[:, 1])]
        rr, cc = (np.concatenate(p) for p in zip(*parts))
    else:
        raise ValueError(f"unknown shape type {shape_type!r}")
    inside = (rr >= 0) & (rr < image_shape[0]) & (cc >= 0) & (cc < image_shape[1])
    mask[rr[inside], cc[inside]] = True
    return mask


def prompt_from_shape(
    vertices_rc: np.ndarray, shape_type: str, image_shape: tuple[int, int]
) -> Prompt:
    """A rectangle as a box; a polygon, ellipse or path as its box plus its rasterised mask
    as the dense prompt. vertices_rc: (V, 2) ``(row, col)`` in image pixels."""
    box = box_of(vertices_rc)
    if shape_type == "rectangle":
        return Prompt(box=box)
    mask = rasterise_shape(vertices_rc, shape_type, image_shape)
    if not mask.any():
        raise ValueError(f"the {shape_type} lies outside the {image_shape} image")
    return Prompt(box=box, mask=mask)


def prompt_from_label(labels: np.ndarray, label_id: int, with_box: bool = True) -> Prompt:
    """An existing object of a 2D label image (H, W) as a dense mask prompt (and, by default,
    its bounding box), for refining it."""
    mask = np.asarray(labels) == label_id
    if label_id == 0 or not mask.any():
        present = np.unique(labels)
        shown = ", ".join(map(str, present[present != 0][:10])) or "none"
        raise ValueError(f"label {label_id} is not in the labels (ids present: {shown})")
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    box = np.array([rows[0], cols[0], rows[-1], cols[-1]], dtype=np.float64)
    if with_box and box[2] > box[0] and box[3] > box[1]:
        return Prompt(box=box, mask=mask)
    return Prompt(mask=mask)

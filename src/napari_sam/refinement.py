"""Refine a whole label image: each object is its own dense mask prompt (with its box).

Labels from another tool (a threshold and watershed, Cellpose, an older annotation) go in;
:func:`refine_plane` decodes every object of one 2D plane with its mask and box
(:func:`~napari_sam.plane_segmentation.segment_plane`: tiles and zoom as for any prompt)
and returns a :class:`Refinement`, a proposal that changes nothing until accepted:

- every object keeps its id; an object takes only pixels that were its own or background,
  so no object is merged into another, none gives pixels to another, and none the user did
  not accept changes;
- an object SAM loses (an empty mask, or one that misses the object entirely) is kept as
  it was and flagged (:attr:`ObjectChange.lost`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from napari_sam.plane_segmentation import TiledEmbeddings, segment_plane
from napari_sam.prompts import Prompt
from napari_sam.transforms import ObjectMask


@dataclass(frozen=True)
class ObjectChange:
    """What refining did to one object: its areas (pixels) before and after, the IoU of
    the two masks, SAM's predicted IoU, and whether SAM lost it (then it is unchanged)."""

    label: int
    area_before: int
    area_after: int
    iou: float
    score: float
    lost: bool


@dataclass(frozen=True, eq=False)
class Refinement:
    """A proposal for one 2D plane: ``masks`` (label id -> refined :class:`ObjectMask`, lost
    objects absent) and ``changes`` (label id -> :class:`ObjectChange`, every object)."""

    masks: dict[int, ObjectMask]
    changes: dict[int, ObjectChange]

    @property
    def lost(self) -> list[int]:
        """Ids SAM lost (kept unchanged)."""
        return [i for i, c in self.changes.items() if c.lost]

    def apply(self, labels: np.ndarray, ids: Iterable[int] | None = None) -> np.ndarray:
        """A copy of ``labels`` (H, W) with the refinement of ``ids`` (default: every object
        not lost) accepted. An accepted object gives up its pixels outside its new mask, then
        takes those of its new mask that were its own or background in ``labels`` and are
        still free (higher predicted IoU first); pixels of other objects never change hands."""
        labels = np.asarray(labels)
        ids = [i for i in (self.masks if ids is None else ids) if i in self.masks]
        out = labels.copy()
        for i in ids:
            out[(labels == i) & ~self.masks[i].to_array()] = 0
        for i in sorted(ids, key=lambda i: -self.changes[i].score):
            r0, c0, r1, c1 = self.masks[i].bbox
            window, before = out[r0:r1, c0:c1], labels[r0:r1, c0:c1]
            window[self.masks[i].crop & (window == 0) & ((before == 0) | (before == i))] = i
        return out


def refine_plane_steps(
    embeddings: TiledEmbeddings, predictor, slice_index: int, labels: np.ndarray,
    *, multimask: str = "single",
) -> Generator[tuple[int, int], None, Refinement]:  # fmt: skip
    """Refine every object of ``labels`` (H, W) int of slice ``slice_index``; yields ``(done,
    total)`` objects, returns the :class:`Refinement`. ``multimask``: the mask chosen per
    object (default SAM's single-mask output, which a mask and box prompt asks for)."""
    labels = np.asarray(labels)
    boxes = ndimage.find_objects(labels)
    ids = [i + 1 for i, box in enumerate(boxes) if box is not None]
    masks: dict[int, ObjectMask] = {}
    changes: dict[int, ObjectChange] = {}
    for n, i in enumerate(ids, 1):
        sr, sc = boxes[i - 1]
        old = labels == i
        box = np.array([sr.start, sc.start, sr.stop - 1, sc.stop - 1], dtype=np.float64)
        flat = box[2] <= box[0] or box[3] <= box[1]  # one row or column: mask alone
        prompt = Prompt(mask=old) if flat else Prompt(box=box, mask=old)
        plane = segment_plane(embeddings, predictor, slice_index, prompt, multimask=multimask)
        new = plane.mask
        inter = _overlap(new, old)
        area = int(old.sum())
        lost = new.area == 0 or inter == 0
        iou = inter / (area + new.area - inter) if not lost else 0.0
        changes[i] = ObjectChange(i, area, area if lost else new.area, iou, plane.score, lost)
        if not lost:
            masks[i] = new
        yield n, len(ids)
    return Refinement(masks, changes)


def _overlap(mask: ObjectMask, full: np.ndarray) -> int:
    r0, c0, r1, c1 = mask.bbox
    return int(np.count_nonzero(mask.crop & full[r0:r1, c0:c1]))


def refine_labels(
    embeddings: TiledEmbeddings, predictor, labels: np.ndarray,
    progress: Callable[[int, int], object] | None = None, **kwargs,
) -> tuple[np.ndarray, list[Refinement]]:  # fmt: skip
    """Every plane of ``labels`` (*leading, H, W) refined and accepted whole: the refined
    labels (same shape and dtype) and each plane's :class:`Refinement` (flat slice order).
    ``embeddings``: of the image the labels belong to, one slice per plane."""
    from napari_sam.jobs import drain

    labels = np.asarray(labels)
    planes = labels.reshape(-1, *labels.shape[-2:])
    out = np.empty_like(planes)
    found = []
    for s, plane in enumerate(planes):
        refinement = drain(refine_plane_steps(embeddings, predictor, s, plane, **kwargs),
                           progress)  # fmt: skip
        out[s] = refinement.apply(plane)
        found.append(refinement)
    return out.reshape(labels.shape), found

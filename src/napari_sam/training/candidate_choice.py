"""Which of SAM's four masks suits the user's objects: learned from the objects committed.

SAM decodes four candidates per prompt (:data:`~napari_sam.predictor.Multimask`), and the
model's ``"auto"`` choice per prompt family is a default measured once, on other data. The
predicted IoU that picks among the candidates is often wrong on data the model has not seen:
on one image the single-mask output may fit the nuclei, on another the first ambiguity-aware
mask. The committed objects say which: each is prompted as a user would (a tight box; a click
at its deepest pixel and at random pixels well inside it) through the plugin's own path
(:func:`~napari_sam.plane_segmentation.segment_plane`), every candidate is scored against the
object, and each family gets the mode with the best mean IoU. The model's own choice is kept
unless that mode is better by more than ``margin`` and by more than twice the standard error
of the per-object gain, over at least :data:`MIN_OBJECTS` objects (ten objects are few; a
choice that only fits them must not stick).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from napari_sam.jobs import checkpoint
from napari_sam.predictor import CANDIDATES, mask_choice

#: Modes a family can be given: a fixed candidate, or a choice by predicted IoU.
FITTED_MODES: tuple[str, ...] = ("0", "1", "2", "3", "best", "any")


@dataclass(frozen=True)
class FittedChoice:
    """The mode chosen per prompt family (``modes``: family -> mode pairs, as
    ``SamConfig.auto_multimask``), with each family's mean IoU on the committed objects under
    the model's own choice (``before``) and under the chosen mode (``after``), over
    ``prompts`` prompts."""

    modes: tuple[tuple[str, str], ...]
    before: tuple[tuple[str, float], ...]
    after: tuple[tuple[str, float], ...]
    prompts: int


def fit_candidate_choice(
    predictor, planes: Sequence, objects: Sequence[tuple[int, int]], *,
    clicks_per_object: int = 2, margin: float = 0.01, seed: int = 0,
) -> Generator[tuple[int, int], None, FittedChoice]:
    """Score every candidate of ``predictor`` on the committed ``objects`` (``(plane, id)``
    of ``planes``: :class:`~napari_sam.training.adapt.CommittedPlane`), yielding ``(objects
    done, objects)``; returns the :class:`FittedChoice` for the "click" and "box" families.
    ``clicks_per_object``: clicks per object, the deepest pixel first."""
    from napari_sam.plane_segmentation import WindowEmbeddings, segment_plane
    from napari_sam.prompts import Prompt
    from napari_sam.tile_grid import default_grid
    from napari_sam.training.evaluate import binary_iou

    rng = np.random.default_rng(seed)
    embeddings = {}
    # family -> per prompt: (4,) IoU and (4,) predicted IoU of the candidates
    scored: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"click": [], "box": []}
    owners: dict[str, list[int]] = {"click": [], "box": []}  # per prompt: its object
    for done, (p, label) in enumerate(objects):
        checkpoint()
        plane = planes[p]
        if p not in embeddings:
            grid = default_grid(plane.labels.shape, predictor.config.image_size)
            embeddings[p] = WindowEmbeddings(grid, _embedder(predictor, plane))
        truth = plane.labels == label
        prompts = [("box", Prompt.from_box(_box(truth)))]
        prompts += [("click", Prompt.from_points(c[None])) for c in
                    _clicks(truth, clicks_per_object, rng)]  # fmt: skip
        for family, prompt in prompts:
            ious, scores = np.zeros(4), np.zeros(4)
            for k in CANDIDATES:
                out = segment_plane(embeddings[p], predictor, 0, prompt, multimask=k)
                ious[int(k)] = binary_iou(out.mask.to_array(), truth)
                scores[int(k)] = out.score
            scored[family].append((ious, scores))
            owners[family].append(done)
        yield done + 1, len(objects)
    auto = predictor.config.auto_multimask
    modes, before, after = [], [], []
    for family, rows in scored.items():
        ious = np.array([r[0] for r in rows])
        scores = np.array([r[1] for r in rows])
        picked = {m: _picked(m, ious, scores) for m in FITTED_MODES}
        current = mask_choice(_example(family), "auto", auto)
        own = picked["0" if current == "single" else current]
        best = max(picked, key=lambda m: picked[m].mean())
        gain = picked[best] - own
        chosen = best if _clearly_better(gain, np.array(owners[family]), margin) else current
        modes.append((family, chosen))
        before.append((family, float(own.mean())))
        after.append((family, float(picked[best].mean() if chosen == best else own.mean())))
    kept = tuple((f, m) for f, m in auto if f not in scored)
    return FittedChoice(tuple(modes) + kept, tuple(before), tuple(after),
                        sum(len(r) for r in scored.values()))  # fmt: skip


#: Fewer objects than this never change a family's choice.
MIN_OBJECTS = 5


def _clearly_better(gain: np.ndarray, owners: np.ndarray, margin: float) -> bool:
    """True when the IoU ``gain`` (P,) of the prompts, averaged per object (``owners`` (P,):
    each prompt's object), is more than ``margin`` on average and more than twice its
    standard error, over at least :data:`MIN_OBJECTS` objects: a few objects that happen to
    favour a mode do not change the choice."""
    per_object = np.array([gain[owners == o].mean() for o in np.unique(owners)])
    if len(per_object) < MIN_OBJECTS:
        return False
    spread = per_object.std(ddof=1) / np.sqrt(len(per_object))
    return bool(per_object.mean() > margin and per_object.mean() > 2 * spread)


def _picked(mode: str, ious: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(P,) IoU of the candidate ``mode`` picks, per prompt, from (P, 4) IoUs and scores."""
    if mode in CANDIDATES:
        return ious[:, int(mode)]
    if mode == "best":
        pick = 1 + scores[:, 1:].argmax(1)
    else:  # "any"
        pick = scores.argmax(1)
    return ious[np.arange(len(ious)), pick]


def _example(family: str):
    """A prompt of ``family`` (for :func:`~napari_sam.predictor.mask_choice`)."""
    from napari_sam.prompts import Prompt

    if family == "box":
        return Prompt.from_box(np.array([0, 0, 1, 1]))
    return Prompt.from_points(np.array([[0.5, 0.5]]))


def _embedder(predictor, plane):
    """``embed(slice, window)`` of ``plane``'s image as it is shown."""
    limits = None if plane.rgb else plane.contrast_limits

    def embed(_slice: int, window):
        r0, c0, r1, c1 = window
        return predictor.embed(plane.image[r0:r1, c0:c1], rgb=plane.rgb, contrast_limits=limits)

    return embed


def _box(mask: np.ndarray) -> np.ndarray:
    """(4,) the tight box of ``mask``: (row0, col0, row1, col1), ends exclusive."""
    rows, cols = np.nonzero(mask)
    return np.array([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1], np.float64)


def _clicks(mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 2) (row, col) clicks on pixel centres (napari's data coordinates, a pixel's
    centre at its index): the deepest pixel of ``mask`` first, then random pixels at least
    half as deep (a user's clicks land well inside)."""
    depth = ndimage.distance_transform_edt(mask)
    deepest = np.unravel_index(int(depth.argmax()), mask.shape)
    inner = np.argwhere(depth >= depth.max() / 2)
    extra = inner[rng.choice(len(inner), size=max(count - 1, 0))] if count > 1 else inner[:0]
    return np.concatenate([np.array([deepest]), extra]).astype(np.float64)

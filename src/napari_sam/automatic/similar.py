"""Find every object like a few examples ("find similar"), in an image or a stack: entry points.

::

    from napari_sam.automatic.similar import find_similar
    found = find_similar(predictor, image, committed)   # examples: committed's objects

:func:`exemplars_from_labels` turns objects of a label image into :class:`Exemplars`
(positives, and rejected objects as negatives); :func:`find_similar_steps` finds their like
on every slice (the generator a widget runs in a worker: it yields ``(done, total)``,
closing it cancels between two steps) and :func:`find_similar` runs it to the end. The
examples may come from another image of the same model (a folder: examples from one image,
found in all). The result holds new objects only, never on a committed pixel.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from napari_sam.automatic.config import DecoderModeConfig, auto_config
from napari_sam.automatic.exemplars import (
    Exemplars,
    SimilarSettings,
    pooled_feature,
    window_contrast,
)
from napari_sam.automatic.plane import Progress
from napari_sam.automatic.run import _link, plane_embeddings, tile_embeddings
from napari_sam.automatic.similar_plane import similar_plane_steps, similar_steps
from napari_sam.jobs import drain, shifted
from napari_sam.transforms import ObjectMask

#: IoU at which objects found on adjacent slices are one object
LINK_IOU = 0.5


def exemplars_from_labels(
    embeddings, labels: np.ndarray, ids: Iterable[int] | None = None,
    rejected: np.ndarray | None = None,
) -> Exemplars:  # fmt: skip
    """The examples of ``labels`` (*leading, H, W) of the image ``embeddings`` hold (one
    slice per plane): each object with an id in ``ids`` (default every object) is one
    positive prototype; each object of ``rejected`` (same shape, or None) a negative one.
    Raises ``ValueError`` when no example is left or the shapes disagree."""
    labels = _planes(labels, embeddings, "labels")
    wanted = None if ids is None else {int(i) for i in ids}
    positives, areas, contrasts = _prototypes(embeddings, labels, wanted)
    if not positives:
        which = "" if wanted is None else f" with ids {sorted(wanted)}"
        raise ValueError(f"find similar needs at least one example: no object{which} in the "
                         "labels")  # fmt: skip
    negatives: list[torch.Tensor] = []
    if rejected is not None:
        negatives, _, _ = _prototypes(embeddings, _planes(rejected, embeddings, "rejected"), None)
    width = positives[0].shape[0]
    return Exemplars(torch.stack(positives), np.asarray(areas, np.float64),
                     np.asarray(contrasts, np.float64), torch.stack(negatives) if negatives else torch.zeros((0, width)),
                     embeddings.embedder.predictor.signature)  # fmt: skip


def _planes(labels: np.ndarray, embeddings, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    source = embeddings.source
    if labels.dtype.kind not in "iu":
        raise ValueError(f"the {name} must be integer labels, got {labels.dtype}")
    if labels.shape != (*source.leading_shape, *source.plane_shape):
        raise ValueError(f"the {name} are {labels.shape}, the image's planes "
                         f"{(*source.leading_shape, *source.plane_shape)}")  # fmt: skip
    return labels.reshape(-1, *source.plane_shape)


def _prototypes(embeddings, planes: np.ndarray, wanted: set[int] | None):
    """Per object of ``planes`` (S, H, W) (id in ``wanted``, or every one): its unit
    feature, pooled on the tile that holds it best, its area and its contrast there."""
    grid = embeddings.grid
    features, areas, contrasts = [], [], []
    for s, plane in enumerate(planes):
        embedding_of = tile_embeddings(embeddings, s)
        for i, box in enumerate(ndimage.find_objects(plane), 1):
            if box is None or (wanted is not None and i not in wanted):
                continue
            crop = plane[box] == i
            mask = ObjectMask(crop, (box[0].start, box[1].start), plane.shape)
            r0, c0, r1, c1 = mask.bbox
            tile = grid[grid.route(np.array([[r0, c0], [r1 - 1, c1 - 1]], np.float64))]
            found = embedding_of(tile.index)
            if found is None:  # a constant tile: nothing there to be like
                continue
            features.append(pooled_feature(found[0], mask, tile.window[:2]))
            areas.append(mask.area)
            contrasts.append(window_contrast(found[1], mask, tile.window[:2])[0])
    return features, areas, contrasts


def similar_settings(predictor, settings: SimilarSettings | None = None) -> SimilarSettings:
    """``settings`` (default :class:`SimilarSettings`) with the model's own magnification
    when it names none: its APG settings' where it has an instance decoder, else 1."""
    settings = settings or SimilarSettings()
    if settings.magnification is None:
        decoder = _decoder_config(predictor, settings)
        settings = replace(settings, magnification=decoder.magnification if decoder else 1.0)
    return settings


def _decoder_config(predictor, settings: SimilarSettings) -> DecoderModeConfig | None:
    if not settings.decoder_seeds or getattr(predictor, "instance_decoder", None) is None:
        return None
    return auto_config(predictor, "apg")


def find_similar_steps(
    predictor, data: Any, committed: np.ndarray | None = None,
    exemplars: Exemplars | None = None, settings: SimilarSettings | None = None, *,
    rejected: np.ndarray | None = None, ids: Iterable[int] | None = None, rgb: bool = False,
    contrast_limits: tuple[float, float] | None = None, embeddings=None,
    tile: tuple[int, int] | None = None, halo: tuple[int, int] | None = None,
) -> Generator[Progress, None, np.ndarray]:  # fmt: skip
    """The objects like the examples on every slice of ``data``; yields ``(done, total)``.

    data: numpy / dask / zarr ``(*leading, H, W)`` (``(..., C)`` when ``rgb``);
    committed: int labels of the same planes, the objects already there (never touched;
    default none); exemplars: the examples (default every object of ``committed``, via
    :func:`exemplars_from_labels`: the objects with an id in ``ids`` when given, with
    ``rejected`` as negatives); embeddings, tile, halo,
    contrast_limits: as for :func:`~napari_sam.automatic.segment_everything_steps` (the
    model's magnification tiles the planes its own way unless the embeddings are tiled).

    Returns int32 labels ``(*leading, H, W)`` of the new objects only: ids from
    ``committed.max() + 1`` on, 0 elsewhere and on every committed pixel; objects on
    adjacent slices along the last leading axis that overlap share an id.
    """
    settings = similar_settings(predictor, settings)
    embeddings = plane_embeddings(predictor, data, settings.magnification, rgb=rgb,
                                  contrast_limits=contrast_limits, embeddings=embeddings,
                                  tile=tile, halo=halo)  # fmt: skip
    source, grid = embeddings.source, embeddings.grid
    shape = (*source.leading_shape, *source.plane_shape)
    committed = _planes(np.zeros(shape, np.int32) if committed is None else committed,
                        embeddings, "committed labels")  # fmt: skip
    if exemplars is not None and (rejected is not None or ids is not None):
        raise ValueError("give the rejected objects and the example ids to "
                         "exemplars_from_labels with the examples")  # fmt: skip
    if exemplars is None:
        exemplars = exemplars_from_labels(embeddings, committed.reshape(shape), ids,
                                          rejected=rejected)  # fmt: skip
    if exemplars.signature != predictor.signature:
        raise ValueError("the examples were taken with another model: take them again")
    decoder = _decoder_config(predictor, settings)
    per_slice = similar_steps(grid, decoder is not None)
    total = source.n_slices * per_slice
    planes = []
    for s in range(source.n_slices):
        steps = similar_plane_steps(predictor, grid, tile_embeddings(embeddings, s), exemplars,
                                    committed[s], settings, decoder)  # fmt: skip
        planes.append((yield from shifted(steps, s * per_slice, total)))
    found = _link(planes, source.leading_shape, LINK_IOU)
    start = int(committed.max()) if committed.size else 0
    return np.where(found > 0, found + start, 0).astype(np.int32)


def find_similar(predictor, data: Any, committed: np.ndarray | None = None,
                 exemplars: Exemplars | None = None, settings: SimilarSettings | None = None,
                 progress: Callable[[int, int], Any] | None = None, **kwargs) -> np.ndarray:  # fmt: skip
    """:func:`find_similar_steps` run to the end (``progress(done, total)`` per step)."""
    return drain(find_similar_steps(predictor, data, committed, exemplars, settings, **kwargs),
                 progress)  # fmt: skip

"""Segment everything in an image of any size and dimensionality: the entry points.

:func:`segment_everything_steps` is the generator the widget runs in a worker (it yields
``(done, total)`` and returns the labels; closing it cancels between two steps);
:func:`segment_everything` runs it to the end for scripts and the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from napari_sam.automatic.config import AutoConfig, AutoMaskConfig, auto_config, mode_of
from napari_sam.automatic.decoder_plane import decoder_plane_steps, plane_steps
from napari_sam.automatic.plane import (
    AutoMask,
    Progress,
    config_labels,
    generate_masks_steps,
    plan_steps,
)
from napari_sam.automatic.stitch import link_slices, merge_tiles
from napari_sam.jobs import drain, shifted


def generate_masks(predictor, image: np.ndarray, config: AutoMaskConfig | None = None,
                   **image_kwargs) -> list[AutoMask]:  # fmt: skip
    """Every mask the grid finds on one 2D image, overlapping, unpainted: the counterpart of
    the reference ``SamAutomaticMaskGenerator.generate``. ``image_kwargs``: as for
    :func:`napari_sam.image.to_model_image` (rgb, channel, contrast_limits, ...)."""
    from napari_sam.image import to_model_image

    config = config or AutoMaskConfig()
    model_image = to_model_image(image, **image_kwargs)
    embedding = predictor.embed(model_image, rgb=True, contrast_limits=(0, 255))
    return drain(generate_masks_steps(predictor, embedding, config, model_image))


def segment_everything_steps(
    predictor,
    data: Any,
    config: AutoConfig | None = None,
    *,
    rgb: bool = False,
    contrast_limits: tuple[float, float] | None = None,
    embeddings=None,
    tile: tuple[int, int] | None = None,
    halo: tuple[int, int] | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Instance labels of ``data``, yielding ``(done, total)`` steps as it goes.

    data: numpy / dask / zarr ``(*leading, H, W)``, or ``(*leading, H, W, C)`` when ``rgb``;
    every leading index is a 2D slice. contrast_limits: the same for every slice and tile
    (default: uint8 unchanged, else percentiles sampled from the whole stack).
    embeddings: a :class:`~napari_sam.stack_embeddings.StackEmbeddings` of ``data`` to reuse (e.g. the
    widget's; its tiling is used), else an in-memory one is made with ``tile`` / ``halo``
    (default: :func:`~napari_sam.tile_grid.default_grid`). A decoder mode with a
    ``magnification`` over 1 tiles the plane its own way
    (:func:`~napari_sam.tile_grid.magnified_grid`) unless ``tile`` is given or the
    embeddings are already tiled; given untiled embeddings are then not used (their
    contrast limits are).

    config: an :class:`AutoMaskConfig` runs SAM's grid (AMG), a
    :class:`~napari_sam.automatic.config.DecoderModeConfig` the instance decoder (AIS / APG);
    default: the model's own settings for its best mode (:func:`~napari_sam.automatic.config.
    auto_config`: APG when the model has an instance decoder).

    Returns int32 labels ``(*leading, H, W)``: 0 background, objects 1..n. Objects on
    adjacent slices along the last leading axis that overlap with IoU >=
    ``config.link_iou_thresh`` share an id (3D objects); tiles are merged across borders.
    A constant tile (blank, or one value throughout) holds no object.
    """
    from napari_sam.image import to_model_image

    config = auto_config(predictor) if config is None else config
    decoder_mode = mode_of(config) != "amg"
    embeddings = plane_embeddings(predictor, data, config.magnification if decoder_mode else 1.0,
                                  rgb=rgb, contrast_limits=contrast_limits, embeddings=embeddings,
                                  tile=tile, halo=halo,
                                  magnified_halo=config.magnified_halo if decoder_mode else None)  # fmt: skip
    source, grid = embeddings.source, embeddings.grid
    contrast_limits = embeddings.embedder.contrast_limits
    if mode_of(config) != "amg":
        planes = yield from _decoder_planes(predictor, embeddings, config)
        return _link(planes, source.leading_shape, config.link_iou_thresh)
    per_tile = [1 + plan_steps(t.window_shape, config) for t in grid.tiles]
    total, done = source.n_slices * sum(per_tile), 0
    planes = []
    for s in range(source.n_slices):
        windows = []
        for t in grid.tiles:
            pixels = source.read(s, t.window)  # read once: the check and the crop layers
            if _constant(pixels):
                done += per_tile[t.index]
                yield done, total
                windows.append(np.zeros(t.window_shape, np.int32))
                continue
            embedding = embeddings.get(s, t.index)
            done += 1
            yield done, total
            image = None
            if config.crop_n_layers > 0:
                image = to_model_image(pixels, rgb=source.rgb,
                                       contrast_limits=contrast_limits)  # fmt: skip
            steps = generate_masks_steps(predictor, embedding, config, image)
            base = done
            while True:
                try:
                    step, _ = next(steps)
                except StopIteration as stop:
                    masks = stop.value
                    break
                done = base + step
                yield done, total
            done = base + per_tile[t.index] - 1
            windows.append(config_labels(masks, t.window_shape, config))
        planes.append(windows[0] if grid.n_tiles == 1 else
                      merge_tiles(grid, windows, config.link_iou_thresh))  # fmt: skip
    return _link(planes, source.leading_shape, config.link_iou_thresh)


def _decoder_planes(predictor, embeddings, config) -> Generator[Progress, None, list]:
    """Per slice, the (H, W) labels of AIS / APG (:mod:`~napari_sam.automatic.decoder_plane`)."""
    per_slice = plane_steps(embeddings.grid)
    total = embeddings.source.n_slices * per_slice
    planes = []
    for s in range(embeddings.source.n_slices):
        steps = decoder_plane_steps(predictor, embeddings.grid, tile_embeddings(embeddings, s),
                                    config)  # fmt: skip
        planes.append((yield from shifted(steps, s * per_slice, total)))
    return planes


def plane_embeddings(predictor, data: Any, magnification: float = 1.0, *, rgb: bool = False,
                     contrast_limits: tuple[float, float] | None = None, embeddings=None,
                     tile: tuple[int, int] | None = None, halo: tuple[int, int] | None = None,
                     magnified_halo: int | None = None):  # fmt: skip
    """The :class:`~napari_sam.stack_embeddings.StackEmbeddings` a run over ``data`` uses:
    the given ``embeddings``, or an in-memory one tiled by ``tile`` / ``halo`` (default
    :func:`~napari_sam.tile_grid.default_grid`). A ``magnification`` over 1 tiles the plane
    its own way (:func:`~napari_sam.tile_grid.magnified_grid`, its halo ``magnified_halo``)
    unless ``tile`` is given or the embeddings are already tiled; given untiled embeddings
    are then not used (their contrast limits are)."""
    from napari_sam.slice_source import SliceSource, sample_limits
    from napari_sam.stack_embeddings import PredictorEmbedder, StackEmbeddings
    from napari_sam.tile_grid import magnified_grid

    if magnification > 1 and (embeddings is None or embeddings.grid.n_tiles == 1) and tile is None:
        plane = SliceSource(data, rgb=rgb).plane_shape
        grid = magnified_grid(plane, predictor.config.image_size, magnification, magnified_halo)
        if grid.n_tiles > 1:
            if embeddings is not None and contrast_limits is None:
                contrast_limits = embeddings.embedder.contrast_limits
            embeddings, tile, halo = None, grid.tile, grid.halo
    if embeddings is None:
        source = SliceSource(data, rgb=rgb)
        if contrast_limits is None and np.dtype(source.dtype) != np.uint8:
            contrast_limits = sample_limits(source)
        embedder = PredictorEmbedder(predictor, contrast_limits=contrast_limits, rgb=rgb)
        embeddings = StackEmbeddings.open(source, embedder, tile=tile, halo=halo,
                                          data_fingerprint="in-memory")  # fmt: skip
    return embeddings


def tile_embeddings(embeddings, s: int) -> Callable[[int], tuple[Any, np.ndarray] | None]:
    """``embedding_of(tile)`` of slice ``s`` (what the decoder planes read): the tile's
    embedding and model image, or None when the tile is constant (nothing to find)."""
    from napari_sam.image import to_model_image

    source, grid = embeddings.source, embeddings.grid
    limits = embeddings.embedder.contrast_limits
    images: dict[int, np.ndarray | None] = {}

    def embedding_of(index: int):
        if index not in images:
            pixels = source.read(s, grid[index].window)
            images[index] = None if _constant(pixels) else to_model_image(
                pixels, rgb=source.rgb, contrast_limits=limits)  # fmt: skip
        image = images[index]
        return None if image is None else (embeddings.get(s, index), image)

    return embedding_of


def _constant(window: np.ndarray) -> bool:
    """Whether a tile holds one value only (NaN ignored): nothing there to segment."""
    values = np.asarray(window)
    if values.dtype.kind == "f":
        values = values[np.isfinite(values)]
    return values.size == 0 or bool(values.min() == values.max())


def _link(planes: list[np.ndarray], leading: tuple[int, ...], iou: float) -> np.ndarray:
    """Per-slice labels -> (*leading, H, W), linked along the last leading axis."""
    if not leading:
        return planes[0]
    depth = leading[-1]
    out = np.zeros((len(planes), *planes[0].shape), dtype=np.int32)
    offset = 0
    for start in range(0, len(planes), depth):
        linked = link_slices(planes[start : start + depth], iou)
        out[start : start + depth] = np.where(linked > 0, linked + offset, 0)
        offset += int(linked.max())
    return out.reshape(*leading, *planes[0].shape)


def segment_everything(predictor, data: Any, config: AutoConfig | None = None,
                       progress: Callable[[int, int], Any] | None = None, **kwargs) -> np.ndarray:  # fmt: skip
    """:func:`segment_everything_steps` run to the end (``progress(done, total)`` per step)."""
    return drain(segment_everything_steps(predictor, data, config, **kwargs), progress)

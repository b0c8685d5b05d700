"""The thin napari adapter: layers -> image and prompts, masks -> an undoable Labels write.

All coordinates go world -> the image layer's data pixels through the layers' own
transforms (scale, translate, rotate...), so anisotropic voxels and shifted layers work.
The displayed 2D slice is the image layer's last two axes at the viewer's current point.
Layers are used through their public API only (duck typed); napari itself is not imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from napari_sam.image import to_model_image
from napari_sam.labels import plan_write
from napari_sam.prompts import (
    Prompt,
    points_on_slice,
    prompt_from_label,
    prompt_from_points,
    prompt_from_shape,
)
from napari_sam.transforms import ObjectMask

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from napari.layers import Image, Labels, Points, Shapes

POSITIVE_FEATURE = "positive"


def current_index(image_layer: Image, viewer: napari.Viewer | None = None) -> tuple[int, ...]:
    """Leading data indices of the displayed 2D slice of ``image_layer`` (empty for 2D
    data): the viewer's current world point mapped into the layer's data coordinates."""
    ndim = _spatial_ndim(image_layer)
    if ndim == 2:
        return ()
    if viewer is None:
        raise ValueError(f"{ndim}D data: give the viewer (or the slice index) to pick a slice")
    if viewer.dims.ndisplay != 2:
        raise ValueError("segmenting needs the 2D view (the viewer shows 3D)")
    data_point = _world_to_data(image_layer, np.asarray(viewer.dims.point))
    shape = spatial_shape(image_layer)
    return tuple(int(np.clip(round(x), 0, n - 1)) for x, n in zip(data_point[:-2], shape[:-2]))


def image_from_layer(image_layer: Image, index: Sequence[int] = ()) -> np.ndarray:
    """The model's (H, W, 3) input for the displayed slice, with the layer's contrast limits
    (the model sees what the user sees). Multiscale data use the full resolution."""
    data = image_layer.data[0] if image_layer.multiscale else image_layer.data
    plane = np.asarray(data[tuple(index)])
    limits = tuple(image_layer.contrast_limits)
    return to_model_image(plane, rgb=bool(image_layer.rgb), contrast_limits=limits)


def prompt_from_points_layer(
    points_layer: Points,
    image_layer: Image,
    index: Sequence[int] = (),
    viewer: napari.Viewer | None = None,
) -> Prompt:
    """All points of ``points_layer`` on the displayed slice as one object's prompt,
    positive unless their ``positive`` feature is False. Raises ``ValueError`` when none."""
    coords = to_image_pixels(points_layer, np.asarray(points_layer.data), image_layer, viewer)
    features = points_layer.features
    if POSITIVE_FEATURE in features:
        positive = np.asarray(features[POSITIVE_FEATURE], dtype=bool)
    else:
        positive = np.ones(len(coords), dtype=bool)
    keep = points_on_slice(coords, index) if len(coords) else np.zeros(0, bool)
    return prompt_from_points(coords[keep][:, -2:], positive[keep])


def prompts_from_shapes_layer(
    shapes_layer: Shapes,
    image_layer: Image,
    index: Sequence[int] = (),
    viewer: napari.Viewer | None = None,
) -> list[Prompt]:
    """One prompt per shape on the displayed slice: rectangles as boxes; polygons, ellipses
    and paths as a box plus their rasterised mask."""
    rows_cols = tuple(spatial_shape(image_layer)[-2:])
    prompts = []
    for vertices, kind in zip(shapes_layer.data, shapes_layer.shape_type):
        pix = to_image_pixels(shapes_layer, np.asarray(vertices), image_layer, viewer)
        if points_on_slice(pix, index).all():
            prompts.append(prompt_from_shape(pix[:, -2:], kind, rows_cols))
    if not prompts:
        raise ValueError("no shapes on the displayed slice")
    return prompts


def prompt_from_labels_layer(
    labels_layer: Labels, label_id: int, index: Sequence[int] = ()
) -> Prompt:
    """Object ``label_id`` of the displayed slice as a dense mask prompt (plus its box)."""
    return prompt_from_label(np.asarray(labels_layer.data[tuple(index)]), label_id)


def write_to_labels_layer(
    labels_layer: Labels,
    mask: ObjectMask,
    label_id: int,
    index: Sequence[int] = (),
    *,
    overwrite: bool = False,
    replace: bool = True,
) -> int:
    """Write ``mask`` into the layer at slice ``index`` as one step of its undo history
    (``labels_layer.undo()`` restores the previous array exactly). Returns pixels changed."""
    edit = plan_write(
        labels_layer.data, mask, label_id, index=index, overwrite=overwrite, replace=replace
    )
    with labels_layer.block_history():
        if len(edit.clear[0]):
            labels_layer.data_setitem(edit.clear, 0)
        if len(edit.paint[0]):
            labels_layer.data_setitem(edit.paint, label_id)
    return edit.n_changed


# ------------------------------------------------------------------------ coordinates


def to_image_pixels(layer, coords: np.ndarray, image_layer: Image, viewer=None) -> np.ndarray:
    """Coordinates (N, D) in ``layer``'s data space -> (N, D_image) in ``image_layer``'s
    data (pixel) space, via world coordinates. Leading axes ``layer`` lacks are taken from
    the viewer's current point (so a 2D points layer lies on every slice)."""
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, layer.ndim)
    world_ndim = max(layer.ndim, image_layer.ndim)
    base = np.zeros(world_ndim)
    if viewer is not None:
        base = np.asarray(viewer.dims.point, dtype=np.float64)[-world_ndim:]
        base = np.concatenate((np.zeros(world_ndim - len(base)), base))
    out = np.empty((len(coords), image_layer.ndim))
    for i, c in enumerate(coords):
        world = base.copy()
        world[world_ndim - layer.ndim :] = layer.data_to_world(c)
        out[i] = _world_to_data(image_layer, world)
    return out[:, -_spatial_ndim(image_layer) :]


def _world_to_data(layer, world: np.ndarray) -> np.ndarray:
    return np.asarray(layer.world_to_data(world), dtype=np.float64)


def spatial_shape(image_layer) -> tuple[int, ...]:
    """The image layer's pixel grid ``(*leading, H, W)``: channels of RGB data left out,
    level 0 of multiscale data."""
    data = image_layer.data[0] if getattr(image_layer, "multiscale", False) else image_layer.data
    shape = tuple(data.shape)
    return shape[:-1] if getattr(image_layer, "rgb", False) else shape


def _spatial_ndim(image_layer) -> int:
    return len(spatial_shape(image_layer))


def set_pixels(layer: Labels, indices: tuple[np.ndarray, ...], values: np.ndarray) -> None:
    """One ``data_setitem`` per distinct value (napari's undoable, partially refreshed
    write); the view refreshes once at the end. ``indices``: one int array per data axis."""
    distinct = np.unique(values)
    for n, v in enumerate(distinct):
        sel = values == v
        layer.data_setitem(tuple(i[sel] for i in indices), int(v), refresh=n == len(distinct) - 1)


def write_changes(layer: Labels, index: tuple[int, ...], before: np.ndarray,
                  after: np.ndarray) -> int:  # fmt: skip
    """Write the pixels where ``after`` differs from ``before`` (same shape: what
    ``layer.data[index]`` was, e.g. one (H, W) plane, or the whole stack for ``index=()``)
    into ``layer`` as one undoable step; returns how many."""
    where = np.nonzero(after != before)
    lead = tuple(np.full(len(where[0]), i, np.int64) for i in index)
    with layer.block_history():
        set_pixels(layer, (*lead, *(w.astype(np.int64) for w in where)), after[where])
    return len(where[0])

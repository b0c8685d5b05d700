"""What the widget does with layers, without Qt: prompt layers, prompts, preview, commit.

:class:`LayerBinding` holds references to the layers it made or was given (never
looks them up by name). Coordinates: everything is in the image layer's data pixels; the
displayed slice is ``index`` (leading data indices, ``()`` for 2D images).
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from napari_sam.labels import apply_edit, plan_write
from napari_sam.napari_layers import (
    POSITIVE_FEATURE,
    current_index,
    prompt_from_labels_layer,
    prompt_from_points_layer,
    prompts_from_shapes_layer,
    set_pixels,
    spatial_shape,
    to_image_pixels,
    write_changes,
)
from napari_sam.prompts import Prompt, points_on_slice
from napari_sam.transforms import ObjectMask

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels, Points, Shapes

POSITIVE_COLOR = "lime"
NEGATIVE_COLOR = "magenta"
POSITIVE_SYMBOL = "disc"
NEGATIVE_SYMBOL = "x"


# Preview updates over regions larger than this (pixels) write the array and refresh the view.
WHOLE_REFRESH_PIXELS = 100_000


class LayerBinding:
    """The prompt layers, preview and output of interactive segmentation in one viewer."""

    def __init__(self, viewer: napari.Viewer) -> None:
        self.viewer = viewer
        self.image: Image | None = None
        self.points: Points | None = None
        self.shapes: Shapes | None = None
        self.preview: Labels | None = None
        self.output: Labels | None = None
        self.negative = False
        # what the preview layer shows: slice index, bbox (r0, c0, r1, c1), and the masks
        self._shown: tuple[tuple[int, ...], tuple[int, int, int, int]] | None = None
        self.masks: tuple[ObjectMask, ...] = ()
        self.masks_index: tuple[int, ...] | None = None
        # the output layer of each image used: image B's objects never go into image A's
        # layer, and coming back to A finds A's again (weak: a deleted image is forgotten)
        self._outputs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    # ------------------------------------------------------------------ layers

    def _fits(self, layer, shape: tuple[int, ...]) -> bool:
        if layer is None or layer not in self.viewer.layers:
            return False
        if hasattr(layer, "data") and getattr(layer.data, "shape", None) is not None:
            return tuple(layer.data.shape) == shape
        return layer.ndim == len(shape)

    def use_image(self, image: Image | None) -> list:
        """Make ``image`` the one segmented; creates the prompt and preview layers it needs
        (and an output layer if none fits). Returns the layers created."""
        if self.image is not None and self.output is not None:
            self._outputs[self.image] = self.output
        self.image = image
        self.masks, self.masks_index, self._shown = (), None, None
        if image is None:
            return []
        shape = spatial_shape(image)
        nd = len(shape)
        where = {"scale": image.scale[-nd:], "translate": image.translate[-nd:]}
        made = []
        self.output = self._outputs.get(image)
        if self.output is None or not self._fits(self.output, shape):
            self.output = self.viewer.add_labels(
                np.zeros(shape, np.int32), name=f"{image.name} objects", **where
            )
            made.append(self.output)
        if not self._fits(self.preview, shape):
            self.preview = self.viewer.add_labels(
                np.zeros(shape, np.uint8), name=f"{image.name} SAM preview", opacity=0.5,
                **where,
            )  # fmt: skip
            made.append(self.preview)
        else:
            self.preview.data[...] = 0
            self.preview.refresh()
        if self.shapes is None or self.shapes not in self.viewer.layers or self.shapes.ndim != nd:
            self.shapes = self.viewer.add_shapes(
                ndim=nd, name=f"{image.name} SAM boxes", edge_color="yellow",
                face_color="transparent", edge_width=max(1.0, max(shape[-2:]) / 400), **where,
            )  # fmt: skip
            made.append(self.shapes)
        if self.points is None or self.points not in self.viewer.layers or self.points.ndim != nd:
            self.points = self.viewer.add_points(
                ndim=nd, name=f"{image.name} SAM points",
                features={POSITIVE_FEATURE: np.zeros(0, bool)},
                feature_defaults={POSITIVE_FEATURE: True},
                face_color=POSITIVE_COLOR, border_color="black", symbol=POSITIVE_SYMBOL,
                size=max(6.0, max(shape[-2:]) / 60), **where,
            )  # fmt: skip
            made.append(self.points)
        self.set_negative(self.negative)
        return made

    def set_negative(self, negative: bool) -> None:
        """New points are negative (background) if ``negative``: drawn as magenta crosses."""
        self.negative = negative
        if self.points is None:
            return
        pts = self.points
        pts.selected_data = set()  # the "current" styles below apply to selected points too
        defaults = pts.feature_defaults.copy()
        defaults[POSITIVE_FEATURE] = not negative
        pts.feature_defaults = defaults
        pts.current_face_color = NEGATIVE_COLOR if negative else POSITIVE_COLOR
        pts.current_symbol = NEGATIVE_SYMBOL if negative else POSITIVE_SYMBOL

    def layers_present(self) -> bool:
        layers = self.viewer.layers
        return all(
            lay is not None and lay in layers
            for lay in (self.image, self.points, self.shapes, self.preview)
        )

    # ------------------------------------------------------------------ prompts

    def slice_index(self) -> tuple[int, ...]:
        """Leading indices of the displayed slice of the image (``()`` for 2D)."""
        assert self.image is not None
        return current_index(self.image, self.viewer)

    def _shapes_on_slice(self, index: tuple[int, ...]) -> bool:
        shapes = self.shapes
        if shapes is None or not len(shapes.data):
            return False
        for vertices in shapes.data:
            pix = to_image_pixels(shapes, np.asarray(vertices), self.image, self.viewer)
            if points_on_slice(pix, index).all():
                return True
        return False

    def prompts(self, index: tuple[int, ...], refine_id: int = 0) -> list[Prompt]:
        """The objects prompted on slice ``index``: one per shape (points inside a shape's
        box join it), else one from the points; with ``refine_id`` one object: that label's
        mask on the output layer plus the points. Empty when nothing is prompted there.
        Raises ``ValueError`` (a message for the user) for prompts that cannot be used."""
        image = self.image
        points = None
        if self.points is not None and len(self.points.data):
            pix = to_image_pixels(self.points, np.asarray(self.points.data), image, self.viewer)
            if points_on_slice(pix, index).any():
                points = prompt_from_points_layer(self.points, image, index, self.viewer)
        if refine_id:
            if self.output is None:
                raise ValueError("choose an output layer to refine an object of")
            dense = prompt_from_labels_layer(self.output, refine_id, index)
            if points is None:
                return [dense]
            return [dataclasses.replace(dense, points=points.points, labels=points.labels)]
        if not self._shapes_on_slice(index):
            return [] if points is None else [points]
        boxes = prompts_from_shapes_layer(self.shapes, image, index, self.viewer)
        if points is None:
            return boxes
        if len(boxes) == 1:
            return [dataclasses.replace(boxes[0], points=points.points, labels=points.labels)]
        out = []
        for box in boxes:
            r0, c0, r1, c1 = box.box
            inside = (
                (points.points[:, 0] >= r0) & (points.points[:, 0] <= r1)
                & (points.points[:, 1] >= c0) & (points.points[:, 1] <= c1)
            )  # fmt: skip
            if inside.any():
                box = dataclasses.replace(
                    box, points=points.points[inside], labels=points.labels[inside]
                )
            out.append(box)
        return out

    def clear_prompts(self) -> None:
        """Remove every point and shape (all slices) and empty the preview."""
        if self.points is not None and len(self.points.data):
            self.points.data = np.zeros((0, self.points.ndim))
        if self.shapes is not None and len(self.shapes.data):
            self.shapes.data = []
        self.show_preview((), None)

    # ------------------------------------------------------------------ preview

    def show_preview(self, masks: Sequence[ObjectMask], index: tuple[int, ...] | None) -> int:
        """Show ``masks`` (object k as value k + 1) on slice ``index`` of the preview layer,
        changing only the pixels that differ from what it showed. Returns pixels changed."""
        self.masks, self.masks_index = tuple(masks), index
        preview = self.preview
        if preview is None or preview not in self.viewer.layers:
            return 0
        boxes = [m.bbox for m in masks if m.area]
        regions = []
        if self._shown is not None:
            regions.append(self._shown)
        if boxes and index is not None:
            b = np.array(boxes)
            regions.append((index, (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())))
        self._shown = regions[-1] if boxes and index is not None else None
        if sum((r1 - r0) * (c1 - c0) for _, (r0, c0, r1, c1) in regions) > WHOLE_REFRESH_PIXELS:
            return self._redraw(masks, index, regions)
        lead_idx: list[np.ndarray] = []
        rows_l, cols_l, vals_l = [], [], []
        for where, (r0, c0, r1, c1) in regions:
            new = np.zeros((r1 - r0, c1 - c0), np.uint8)
            if where == index:
                for k, m in enumerate(masks, start=1):
                    if not m.area:
                        continue
                    # the part of the mask inside this region (an earlier, smaller one too)
                    mr0, mc0, mr1, mc1 = m.bbox
                    ir0, ic0, ir1, ic1 = max(mr0, r0), max(mc0, c0), min(mr1, r1), min(mc1, c1)
                    if ir0 >= ir1 or ic0 >= ic1:
                        continue
                    crop = m.crop[ir0 - mr0 : ir1 - mr0, ic0 - mc0 : ic1 - mc0]
                    new[ir0 - r0 : ir1 - r0, ic0 - c0 : ic1 - c0][crop] = k
            old = np.asarray(preview.data[where][r0:r1, c0:c1])
            rr, cc = np.nonzero(old != new)  # two regions on one slice agree where they overlap
            rows_l.append(rr + r0)
            cols_l.append(cc + c0)
            vals_l.append(new[rr, cc])
            lead_idx.append(np.array([where] * len(rr), dtype=np.int64).reshape(len(rr), len(where)))
        if not rows_l or not sum(map(len, rows_l)):
            return 0
        rows, cols, vals = (np.concatenate(x) for x in (rows_l, cols_l, vals_l))
        lead = np.concatenate(lead_idx)
        indices = (*lead.T.astype(np.int64), rows.astype(np.int64), cols.astype(np.int64))
        set_pixels(preview, indices, vals)
        return len(rows)

    def _redraw(self, masks: Sequence[ObjectMask], index, regions) -> int:
        """:meth:`show_preview` for large objects: napari's indexed, undo-recording write
        costs ~70 ns a pixel and finding the changed pixels as much again, while writing
        the regions in place and refreshing the whole view takes a few ms (the preview
        needs no undo history). Returns the pixels written."""
        data = self.preview.data
        for where, (r0, c0, r1, c1) in regions:
            data[where][r0:r1, c0:c1] = 0
        if index is not None:
            plane = data[index]
            for k, m in enumerate(masks, start=1):
                if m.area:
                    r0, c0 = m.offset
                    plane[r0 : r0 + m.crop.shape[0], c0 : c0 + m.crop.shape[1]][m.crop] = k
        self.preview.refresh()
        return sum((r1 - r0) * (c1 - c0) for _, (r0, c0, r1, c1) in regions)

    # ------------------------------------------------------------------ commit

    def has_label(self, label_id: int) -> bool:
        """Whether the output layer holds ``label_id`` on the slice the preview shows."""
        output = self.output
        if output is None or self.masks_index is None or output not in self.viewer.layers:
            return False
        return bool(np.any(np.asarray(output.data[self.masks_index]) == label_id))

    def next_free_id(self) -> int:
        assert self.output is not None
        data = self.output.data
        return int(np.max(data)) + 1 if data.size else 1

    def commit(self, first_id: int = 0, replace: bool = False) -> list[int]:
        """Write the preview's objects into the output layer as ONE undo step: the first gets
        ``first_id`` (0: the next free id), the others the next free ids after it; pixels of
        other objects are kept. With ``replace`` (refining object ``first_id``) the first
        object's old pixels on the slice outside its new mask are cleared; without it an
        existing ``first_id`` keeps all its pixels and gains the new ones. Then the prompts
        and preview are cleared. Returns the ids written (empty when the preview is empty).
        Raises ``ValueError`` when the output layer does not fit the image."""
        masks = [m for m in self.masks if m.area]
        if not masks or self.masks_index is None:
            return []
        output = self.output
        if output is None or output not in self.viewer.layers:
            raise ValueError("choose an output labels layer first")
        index = self.masks_index
        shape = tuple(output.data.shape)
        if shape[len(index) :] != masks[0].shape or len(shape) != len(index) + 2:
            raise ValueError(
                f"the output layer {output.name!r} is {shape}; it must have the image's shape "
                f"{spatial_shape(self.image) if self.image is not None else ''}"
            )
        plane_before = np.array(output.data[index])
        plane = plane_before.copy()
        next_id = first_id or self.next_free_id()
        ids = []
        for mask in masks:
            while next_id in ids:
                next_id += 1
            apply_edit(plane, plan_write(plane, mask, next_id, replace=replace and not ids))
            ids.append(next_id)
            next_id = max(next_id + 1, int(plane.max()) + 1)
        write_changes(output, index, plane_before, plane)
        self.clear_prompts()
        return ids


    def write_object(self, planes: Sequence[tuple[tuple[int, ...], ObjectMask]],
                     label_id: int, replace: bool = True) -> int:  # fmt: skip
        """Write one object found on several slices (``(index, mask)`` pairs, e.g. from
        propagation) into the output layer as ONE undo step with ``label_id``: with
        ``replace`` (refining that object) its old pixels on those slices are replaced,
        without it they are kept and the new ones join them; other objects are kept.
        Returns pixels changed. Raises ``ValueError`` when the output layer is gone or does
        not fit."""
        output = self.output
        if output is None or output not in self.viewer.layers:
            raise ValueError("choose an output labels layer first")
        labels = np.asarray(output.data)
        parts: dict[int, list[tuple[np.ndarray, ...]]] = {0: [], label_id: []}
        for index, mask in planes:
            if labels.ndim != len(index) + 2 or labels.shape[len(index) :] != mask.shape:
                raise ValueError(f"the output layer {output.name!r} is {labels.shape}; it "
                                 "must have the image's shape")  # fmt: skip
            edit = plan_write(labels, mask, label_id, index=index, replace=replace)
            parts[0].append(edit.clear)
            parts[label_id].append(edit.paint)
        writes = [(value, tuple(np.concatenate(axis) for axis in zip(*where)))
                  for value, where in parts.items() if where]  # fmt: skip
        writes = [(value, ix) for value, ix in writes if len(ix[-1])]
        if not writes:
            return 0
        # two writes (cleared, painted) with known values: no np.unique over a whole stack
        with output.block_history():
            for n, (value, ix) in enumerate(writes):
                output.data_setitem(ix, value, refresh=n == len(writes) - 1)
        return sum(len(ix[-1]) for _, ix in writes)

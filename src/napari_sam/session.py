"""The public scripting API: segment objects in arrays or in a napari viewer's layers.

>>> import napari_sam
>>> session = napari_sam.Session.load("vit_b")               # or a file, or Session(predictor)
>>> labels = session.segment(image, [napari_sam.Prompt.from_points([[120, 80]])])

With a viewer (nothing here imports napari; layers are passed in)::

    session = napari_sam.Session.load(viewer=viewer)
    session.segment_layers(image_layer, labels_layer, points=points_layer)  # one undo step

A session keeps the embedding of the last image (or slice) it encoded, keyed by a hash of
the pixels, so repeated prompts on the same image cost only the decoder. Small objects are
decoded once more on a magnified window, as in the widget and the CLI (``zoom``, see
:mod:`napari_sam.zoom`; ``"auto"``: on for the bundled model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xxhash

from napari_sam.labels import apply_edit, plan_write, write_mask
from napari_sam.predictor import ImageEmbedding, MaskPrediction, Predictor
from napari_sam.prompts import Prompt
from napari_sam.transforms import ObjectMask
from napari_sam.zoom import ZoomConfig, resolve_zoom


@dataclass(frozen=True, eq=False)
class LayerSegmentation:
    """What :meth:`Session.segment_layers` wrote: ids (B,) per object in prompt order, the
    slice ``index`` (leading data indices), the predictions of the whole-image decode, and
    the masks written (those of ``prediction``, or their zoomed decode, or, for points of
    both kinds, the positive points' own mask where it answers the whole prompt, whose
    scores and logits ``prediction`` does not hold: see
    :func:`~napari_sam.plane_segmentation.answers_whole`)."""

    ids: tuple[int, ...]
    index: tuple[int, ...]
    prediction: MaskPrediction
    masks: tuple[ObjectMask, ...]


class Session:
    """Segment Anything on arrays or napari layers. ``predictor``: a :class:`Predictor`;
    ``viewer``: a napari viewer, needed only to find the displayed slice of nD layers;
    ``zoom``: ``"auto"``, ``"on"``, ``"off"`` or a :class:`~napari_sam.zoom.ZoomConfig`;
    ``multimask``: which of SAM's masks an object gets, ``"auto"``, ``"best"``,
    ``"single"`` or ``"any"`` (:func:`~napari_sam.predictor.mask_choice`)."""

    def __init__(
        self, predictor: Predictor, viewer=None, zoom: ZoomConfig | str | None = "auto",
        multimask: str = "auto",
    ) -> None:
        self.predictor = predictor
        self.viewer = viewer
        self.zoom = zoom
        self.multimask = multimask
        self._cache: tuple[str, ImageEmbedding] | None = None

    @classmethod
    def load(
        cls,
        model: str | None = None,
        *,
        device: str = "auto",
        precision: str = "auto",
        viewer=None,
        zoom: ZoomConfig | str | None = "auto",
        multimask: str = "auto",
    ) -> Session:
        """A session with ``model`` (a weights name or file path; default: the bundled
        model, else the default published one) on ``device`` in ``precision``."""
        return cls(Predictor.load(model, device=device, precision=precision), viewer, zoom,
                   multimask)  # fmt: skip

    def embed(self, image: np.ndarray, **image_kwargs) -> ImageEmbedding:
        """The embedding of a 2D image (cached: the same pixels are encoded once).
        ``image_kwargs`` go to :func:`napari_sam.image.to_model_image`."""
        data = np.ascontiguousarray(image)
        key = f"{data.shape}{data.dtype}{sorted(image_kwargs.items())}" + xxhash.xxh3_128_hexdigest(
            data.view(np.uint8).reshape(-1)
        )
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.predictor.embed(data, **image_kwargs))
        return self._cache[1]

    def segment(
        self,
        image: np.ndarray,
        prompts: Prompt | Sequence[Prompt],
        *,
        ids: Sequence[int] | None = None,
        labels: np.ndarray | None = None,
        overwrite: bool = False,
        **image_kwargs,
    ) -> np.ndarray:
        """Segment one object per prompt on a 2D image; returns the (H, W) label array.

        ids: label id per prompt (default: 1, 2, ... above the largest id in ``labels``);
        labels: an existing (H, W) integer array to write into in place (default: a new
        int32 array); other objects are kept unless ``overwrite``.
        """
        prompts = [prompts] if isinstance(prompts, Prompt) else list(prompts)
        embedding = self.embed(image, **image_kwargs)
        if labels is None:
            labels = np.zeros(embedding.original_size, dtype=np.int32)
        ids = _ids_for(prompts, ids, labels)
        masks = self._masks(image, image_kwargs, embedding, prompts)
        out = np.array(labels)  # every object is written, or (on an error) none
        for mask, label_id in zip(masks, ids):
            write_mask(out, mask, label_id, overwrite=overwrite)
        labels[...] = out
        return labels

    def segment_layers(
        self,
        image_layer,
        labels_layer,
        *,
        points=None,
        shapes=None,
        refine_label: int | None = None,
        label_id: int | None = None,
        overwrite: bool = False,
    ) -> LayerSegmentation:
        """Segment the objects that layers describe on the displayed slice and write them
        into ``labels_layer`` as one undoable step per object.

        points: a Points layer, all of whose points on the slice describe one object
        (``positive`` feature, default True); shapes: a Shapes layer, one object per shape;
        refine_label: an existing id of ``labels_layer`` used as a mask prompt (with the
        points, if any) and rewritten. label_id: the id of the points / refined object
        (default: ``refine_label`` or a new id). Shapes get new ids after it.
        """
        from napari_sam import napari_layers as nl

        index = nl.current_index(image_layer, self.viewer)
        prompts: list[Prompt] = []
        if points is not None or refine_label is not None:
            prompts.append(
                self._object_prompt(image_layer, labels_layer, points, refine_label, index)
            )
        if shapes is not None:
            prompts.extend(nl.prompts_from_shapes_layer(shapes, image_layer, index, self.viewer))
        if not prompts:
            raise ValueError("give points, shapes or a label to refine")
        first = label_id if label_id is not None else refine_label
        plane = np.asarray(labels_layer.data[index])
        ids = _ids_for(prompts, None, plane, first)
        image = nl.image_from_layer(image_layer, index)
        embedding = self.embed(image, contrast_limits=(0, 255))
        prediction = self.predictor.predict(embedding, prompts, self.multimask)
        masks = self._finish(image, {"contrast_limits": (0, 255)}, embedding, prompts,
                             prediction.masks)  # fmt: skip
        trial = plane.copy()  # plan every write first: a bad id leaves the layer unchanged
        for mask, obj_id in zip(masks, ids):
            apply_edit(trial, plan_write(trial, mask, obj_id, overwrite=overwrite))
        for mask, obj_id in zip(masks, ids):
            nl.write_to_labels_layer(labels_layer, mask, obj_id, index, overwrite=overwrite)
        return LayerSegmentation(tuple(ids), index, prediction, masks)

    def _masks(self, image, image_kwargs: dict, embedding: ImageEmbedding,
               prompts: list[Prompt]) -> tuple[ObjectMask, ...]:  # fmt: skip
        """Each prompt's mask: decoded on ``embedding`` (one batch), then finished
        (:meth:`_finish`)."""
        masks = self.predictor.predict(embedding, prompts, self.multimask).masks
        return self._finish(image, image_kwargs, embedding, prompts, masks)

    def _finish(self, image, image_kwargs: dict, embedding: ImageEmbedding,
                prompts: list[Prompt], masks: Sequence[ObjectMask]) -> tuple[ObjectMask, ...]:  # fmt: skip
        """The masks decoded for ``prompts``, zoomed; a prompt of points of both kinds whose
        positive points alone give a mask that answers it whole gets that mask instead, as on
        the widget's path (:func:`~napari_sam.plane_segmentation.positives_to_try`,
        :func:`~napari_sam.plane_segmentation.answers_whole`)."""
        from napari_sam.plane_segmentation import answers_whole, positives_to_try

        firsts = [(i, positives_to_try(p, self.multimask)) for i, p in enumerate(prompts)]
        firsts = [(i, alone) for i, alone in firsts if alone is not None]
        out: dict[int, ObjectMask] = {}
        if firsts:
            alone = [a for _, a in firsts]
            decoded = self.predictor.predict(embedding, alone, self.multimask).masks
            for (i, _), mask in zip(firsts, self._zoom(image, image_kwargs, alone, decoded)):
                if answers_whole(prompts[i], mask):
                    out[i] = mask
        rest = [i for i in range(len(prompts)) if i not in out]
        zoomed = self._zoom(image, image_kwargs, [prompts[i] for i in rest],
                            [masks[i] for i in rest])  # fmt: skip
        out.update(zip(rest, zoomed))
        return tuple(out[i] for i in range(len(prompts)))

    def _zoom(self, image, image_kwargs: dict, prompts: list[Prompt],
              masks: Sequence[ObjectMask]) -> tuple[ObjectMask, ...]:  # fmt: skip
        """``masks`` of ``prompts`` on the 2D ``image``, small ones decoded again on a
        magnified window (:func:`~napari_sam.plane_segmentation.zoom_in`) when :attr:`zoom` says so.
        Windows are cut from the model's view of the whole image, so they keep its
        contrast."""
        zoom = resolve_zoom(self.zoom, self.predictor.config.name)
        if zoom is None or not prompts:
            return tuple(masks)
        from napari_sam.image import to_model_image
        from napari_sam.plane_segmentation import WindowEmbeddings, zoom_in
        from napari_sam.tile_grid import TileGrid

        model_image = to_model_image(np.asarray(image), **image_kwargs)  # (H, W, 3), 0-255

        def embed(_slice: int, window):
            r0, c0, r1, c1 = window
            return self.predictor.embed(model_image[r0:r1, c0:c1], contrast_limits=(0, 255))

        shape = model_image.shape[:2]
        windows = WindowEmbeddings(TileGrid(shape), embed)
        whole = (0, 0, *shape)
        out = []
        for prompt, mask in zip(prompts, masks):
            zoomed = zoom_in(windows, self.predictor, 0, prompt, mask, whole, zoom,
                             self.multimask)  # fmt: skip
            out.append(mask if zoomed is None else zoomed[0])
        return tuple(out)

    def _object_prompt(self, image_layer, labels_layer, points, refine_label, index) -> Prompt:
        from napari_sam import napari_layers as nl

        base = (
            nl.prompt_from_labels_layer(labels_layer, refine_label, index)
            if refine_label is not None
            else None
        )
        if points is None:
            return base
        clicks = nl.prompt_from_points_layer(points, image_layer, index, self.viewer)
        if base is None:
            return clicks
        return Prompt(points=clicks.points, labels=clicks.labels, box=base.box, mask=base.mask)


def _ids_for(
    prompts: list[Prompt], ids: Sequence[int] | None, labels: np.ndarray, first: int | None = None
) -> list[int]:
    if ids is not None:
        ids = [int(i) for i in ids]
        if len(ids) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(ids)} ids")
        return ids
    nxt = int(labels.max(initial=0)) + 1
    if first is None:
        return list(range(nxt, nxt + len(prompts)))
    others = [i for i in range(nxt, nxt + len(prompts)) if i != first]
    return [first, *others[: len(prompts) - 1]]

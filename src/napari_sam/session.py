"""The public scripting API: segment objects in arrays or in a napari viewer's layers.

>>> import napari_sam
>>> session = napari_sam.Session.load("vit_b_lm")            # or Session(predictor)
>>> labels = session.segment(image, [napari_sam.Prompt.from_points([[120, 80]])])

With a viewer (nothing here imports napari; layers are passed in)::

    session = napari_sam.Session.load(viewer=viewer)
    session.segment_layers(image_layer, labels_layer, points=points_layer)  # one undo step

A session keeps the embedding of the last image (or slice) it encoded, keyed by a hash of
the pixels, so repeated prompts on the same image cost only the decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xxhash

from napari_sam.labels import apply_edit, plan_write, write_mask
from napari_sam.predictor import ImageEmbedding, MaskPrediction, Predictor
from napari_sam.prompts import Prompt


@dataclass(frozen=True, eq=False)
class LayerSegmentation:
    """What :meth:`Session.segment_layers` wrote: ids (B,) per object in prompt order, the
    slice ``index`` (leading data indices), and the predictions."""

    ids: tuple[int, ...]
    index: tuple[int, ...]
    prediction: MaskPrediction


class Session:
    """Segment Anything on arrays or napari layers. ``predictor``: a :class:`Predictor`;
    ``viewer``: a napari viewer, needed only to find the displayed slice of nD layers."""

    def __init__(self, predictor: Predictor, viewer=None) -> None:
        self.predictor = predictor
        self.viewer = viewer
        self._cache: tuple[str, ImageEmbedding] | None = None

    @classmethod
    def load(
        cls,
        model: str | None = None,
        *,
        device: str = "auto",
        precision: str = "auto",
        viewer=None,
    ) -> Session:
        """A session with ``model`` (a weights name or file path; default: the bundled
        model, else the default published one) on ``device`` in ``precision``."""
        return cls(Predictor.load(model, device=device, precision=precision), viewer)

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
        prediction = self.predictor.predict(embedding, prompts)
        out = np.array(labels)  # every object is written, or (on an error) none
        for mask, label_id in zip(prediction.masks, ids):
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
        embedding = self.embed(nl.image_from_layer(image_layer, index), contrast_limits=(0, 255))
        prediction = self.predictor.predict(embedding, prompts)
        trial = plane.copy()  # plan every write first: a bad id leaves the layer unchanged
        for mask, obj_id in zip(prediction.masks, ids):
            apply_edit(trial, plan_write(trial, mask, obj_id, overwrite=overwrite))
        for mask, obj_id in zip(prediction.masks, ids):
            nl.write_to_labels_layer(labels_layer, mask, obj_id, index, overwrite=overwrite)
        return LayerSegmentation(tuple(ids), index, prediction)

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

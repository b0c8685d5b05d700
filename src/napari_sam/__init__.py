"""napari-sam: Segment Anything for microscopy in napari.

Importing this package loads neither Qt nor napari (nor torch): the public names below are
imported on first use.

Scripting API::

    import napari_sam

    session = napari_sam.Session.load()               # bundled / default weights
    labels = session.segment(image, [napari_sam.Prompt.from_points([[120, 80]])])

    predictor = napari_sam.Predictor.load("vit_b")  # or a weights file; embed once, predict many
    embedding = predictor.embed(image)
    result = predictor.predict(embedding, napari_sam.Prompt.from_box([10, 20, 80, 90]))
    result.masks[0].to_array(), result.scores, result.all_scores

- ``Session(predictor, viewer=None)``: ``segment(image, prompts, ids=, labels=)`` -> labels;
  ``segment_layers(image_layer, labels_layer, points=, shapes=, refine_label=)``.
- ``Predictor(model)``: ``embed(image) -> ImageEmbedding``,
  ``predict(embedding, prompt | prompts) -> MaskPrediction``.
- ``Prompt``, ``PointLabel``: points ``(row, col)``, box ``(row0, col0, row1, col1)``, masks.
- ``to_model_image``: microscopy data -> the model's (H, W, 3) 0-255 input.
- ``write_mask``: an ``ObjectMask`` into a label array (other objects kept).
- ``segment_everything(predictor, data)`` -> labels, in the model's best automatic mode (APG
  when it has an instance decoder, else SAM's grid); ``auto_config(predictor, "ais")``,
  ``DecoderModeConfig(...)``, ``AutoMaskConfig(...)`` or ``PRESETS["nuclei"]`` choose.
- ``propagate(embeddings, predictor, {slice: Prompt}, slices=, config=PropagationConfig())``:
  a generator of progress that returns the object through z or t.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "Session": "napari_sam.session",
    "LayerSegmentation": "napari_sam.session",
    "Predictor": "napari_sam.predictor",
    "ImageEmbedding": "napari_sam.predictor",
    "MaskPrediction": "napari_sam.predictor",
    "Prompt": "napari_sam.prompts",
    "PointLabel": "napari_sam.prompts",
    "ObjectMask": "napari_sam.transforms",
    "to_model_image": "napari_sam.image",
    "write_mask": "napari_sam.labels",
    "AutoMaskConfig": "napari_sam.automatic",
    "PRESETS": "napari_sam.automatic",
    "DecoderModeConfig": "napari_sam.automatic",
    "auto_config": "napari_sam.automatic",
    "segment_everything": "napari_sam.automatic",
    "PropagationConfig": "napari_sam.propagation",
    "propagate": "napari_sam.propagation",
}

__all__ = [
    "PRESETS",
    "AutoMaskConfig",
    "DecoderModeConfig",
    "ImageEmbedding",
    "LayerSegmentation",
    "MaskPrediction",
    "ObjectMask",
    "PointLabel",
    "Predictor",
    "Prompt",
    "PropagationConfig",
    "Session",
    "__version__",
    "auto_config",
    "propagate",
    "segment_everything",
    "to_model_image",
    "write_mask",
]

if TYPE_CHECKING:  # pragma: no cover
    from napari_sam.automatic import (
        PRESETS,
        AutoMaskConfig,
        DecoderModeConfig,
        auto_config,
        segment_everything,
    )
    from napari_sam.image import to_model_image
    from napari_sam.labels import write_mask
    from napari_sam.predictor import ImageEmbedding, MaskPrediction, Predictor
    from napari_sam.prompts import PointLabel, Prompt
    from napari_sam.propagation import PropagationConfig, propagate
    from napari_sam.session import LayerSegmentation, Session
    from napari_sam.transforms import ObjectMask


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_sam' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)

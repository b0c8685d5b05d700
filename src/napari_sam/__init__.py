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
- ``find_similar(predictor, image, committed)`` -> labels of new objects like the committed
  ones (docs/similar.md); ``refine_labels(embeddings, predictor, labels)`` refines another
  tool's labels (docs/refine.md).
- ``adapt(predictor, [CommittedPlane(image, committed)], AdaptSettings(budget_s=60))`` ->
  ``Adapted``: its ``predictor`` learned from the committed objects, ``save(path)`` writes
  weights that load like any other (docs/training.md).
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
    "find_similar": "napari_sam.automatic.similar",
    "refine_labels": "napari_sam.refinement",
    "AdaptSettings": "napari_sam.training.adapt",
    "CommittedPlane": "napari_sam.training.adapt",
    "adapt": "napari_sam.training.adapt",
}

__all__ = [
    "PRESETS",
    "AdaptSettings",
    "AutoMaskConfig",
    "CommittedPlane",
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
    "adapt",
    "auto_config",
    "find_similar",
    "propagate",
    "refine_labels",
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
    from napari_sam.automatic.similar import find_similar
    from napari_sam.image import to_model_image
    from napari_sam.labels import write_mask
    from napari_sam.predictor import ImageEmbedding, MaskPrediction, Predictor
    from napari_sam.prompts import PointLabel, Prompt
    from napari_sam.propagation import PropagationConfig, propagate
    from napari_sam.refinement import refine_labels
    from napari_sam.session import LayerSegmentation, Session
    from napari_sam.training.adapt import AdaptSettings, CommittedPlane, adapt
    from napari_sam.transforms import ObjectMask


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_sam' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)

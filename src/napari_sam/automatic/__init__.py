"""Segment everything: automatic instance segmentation into labels (no napari, no Qt).

::

    from napari_sam.automatic import PRESETS, segment_everything
    labels = segment_everything(predictor, image, PRESETS["nuclei"])   # (*leading, H, W)

Modules: :mod:`~.config` (the one :class:`AutoMaskConfig`), :mod:`~.plane` (one 2D image
from one embedding), :mod:`~.mask_ops` (grid, crops, boxes, NMS, clean-up),
:mod:`~.stitch` (tiles and slices), :mod:`~.run` (entry points).
"""

from napari_sam.automatic.config import PRESETS, AutoMaskConfig, config_for_model
from napari_sam.automatic.plane import (
    AutoMask,
    config_labels,
    generate_masks_steps,
    masks_to_labels,
    select_masks,
)
from napari_sam.automatic.run import (
    generate_masks,
    segment_everything,
    segment_everything_steps,
)
from napari_sam.automatic.stitch import link_slices, match_labels, merge_tiles

__all__ = [
    "PRESETS",
    "AutoMask",
    "AutoMaskConfig",
    "config_for_model",
    "config_labels",
    "generate_masks",
    "generate_masks_steps",
    "link_slices",
    "masks_to_labels",
    "match_labels",
    "merge_tiles",
    "segment_everything",
    "segment_everything_steps",
    "select_masks",
]

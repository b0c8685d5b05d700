"""Segment everything: automatic instance segmentation into labels (no napari, no Qt).

::

    from napari_sam.automatic import auto_config, segment_everything
    labels = segment_everything(predictor, image)   # (*leading, H, W), the model's best mode
    labels = segment_everything(predictor, image, auto_config(predictor, "ais"))

Three modes (:data:`MODES`): ``amg``, SAM's grid of points (settings :class:`AutoMaskConfig`);
``ais`` and ``apg``, from the model's instance decoder (:class:`DecoderModeConfig`).

Modules: :mod:`~.config` (the settings of every mode, the model's own), :mod:`~.plane` (AMG
on one 2D image from one embedding), :mod:`~.mask_ops` (grid, crops, boxes, NMS, clean-up),
:mod:`~.instances` (AIS: the watershed on the decoder's maps), :mod:`~.prompt_generation`
(APG: prompts from the maps, decoded, NMS), :mod:`~.decoder_plane` (AIS / APG on one plane
over its tiles), :mod:`~.stitch` (tiles and slices), :mod:`~.run` (entry points).
"""

from napari_sam.automatic.config import (
    MODES,
    PRESETS,
    AutoMaskConfig,
    DecoderModeConfig,
    auto_config,
    config_for_model,
    default_mode,
    mode_of,
)
from napari_sam.automatic.instances import InstanceSettings
from napari_sam.automatic.plane import (
    AutoMask,
    config_labels,
    generate_masks_steps,
    masks_to_labels,
    select_masks,
)
from napari_sam.automatic.prompt_generation import PromptSettings
from napari_sam.automatic.run import (
    generate_masks,
    segment_everything,
    segment_everything_steps,
)
from napari_sam.automatic.stitch import link_slices, match_labels, merge_tiles

__all__ = [
    "MODES",
    "PRESETS",
    "AutoMask",
    "AutoMaskConfig",
    "DecoderModeConfig",
    "InstanceSettings",
    "PromptSettings",
    "auto_config",
    "config_for_model",
    "config_labels",
    "default_mode",
    "generate_masks",
    "generate_masks_steps",
    "link_slices",
    "masks_to_labels",
    "match_labels",
    "merge_tiles",
    "mode_of",
    "segment_everything",
    "segment_everything_steps",
    "select_masks",
]

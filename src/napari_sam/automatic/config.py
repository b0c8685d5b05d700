"""The one configuration of "segment everything", shared by the Python API, CLI and widget.

Field names, defaults and meaning are those of the official ``SamAutomaticMaskGenerator``
(so ``SamAutomaticMaskGenerator(model, **config.official_kwargs())`` runs the reference on
the same settings). Each field carries its help text and range in ``metadata``: the CLI
builds its options and the widget its spin boxes from :func:`dataclasses.fields`, so no
parameter list is typed twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Literal

from napari_sam.automatic.instances import InstanceSettings
from napari_sam.automatic.prompt_generation import PromptSettings

#: the automatic modes: SAM's grid (amg), the instance decoder's maps and a watershed (ais),
#: prompts from those maps decoded by SAM (apg)
MODES = ("amg", "ais", "apg")
Mode = Literal["amg", "ais", "apg"]


def _param(default, help: str, low: float, high: float, step: float = 1, official: bool = True):
    return field(default=default, metadata={"help": help, "range": (low, high), "step": step,
                                            "official": official})  # fmt: skip


@dataclass(frozen=True)
class AutoMaskConfig:
    """Settings of automatic instance segmentation (see docs/automatic.md).

    Units: pixels of the image (areas in pixels); thresholds in [0, 1] except the stability
    offset (logit units). Three fields are ours: ``stability_rank_weight``, how much the
    stability score counts in ranking masks for NMS and painting (0 ranks by predicted IoU
    alone, as the official generator does); ``min_free_fraction``, below which share of
    its pixels left free by better masks a mask is not painted (it is a part or a duplicate
    of objects already there; 0 paints every leftover), and ``link_iou_thresh``, the IoU at
    which masks on adjacent slices, or seen by two overlapping tiles, are taken to be one
    object.
    """

    points_per_side: int = _param(32, "grid points along each side of the image", 1, 256)
    points_per_batch: int = _param(64, "grid points decoded together", 1, 4096)
    pred_iou_thresh: float = _param(0.88, "keep masks whose predicted IoU is above this",
                                    0.0, 1.0, 0.01)  # fmt: skip
    stability_score_thresh: float = _param(
        0.95, "keep masks whose stability score is at least this", 0.0, 1.0, 0.01
    )
    stability_score_offset: float = _param(
        1.0, "logit shift used by the stability score", 0.0, 10.0, 0.1
    )
    box_nms_thresh: float = _param(0.7, "box IoU above which a worse duplicate is dropped",
                                   0.0, 1.0, 0.01)  # fmt: skip
    crop_n_layers: int = _param(0, "extra crop layers (layer i: 4^i crops) for small objects",
                                0, 3)  # fmt: skip
    crop_nms_thresh: float = _param(0.7, "box IoU for duplicates between crops", 0.0, 1.0, 0.01)
    crop_overlap_ratio: float = _param(512 / 1500, "overlap of neighbouring crops (fraction "
                                       "of the short side)", 0.0, 0.9, 0.01)  # fmt: skip
    crop_n_points_downscale_factor: int = _param(
        1, "grid points per side divided by this per crop layer", 1, 8
    )
    min_mask_region_area: int = _param(
        0, "fill holes and drop islands smaller than this (pixels); 0: off", 0, 100000
    )
    stability_rank_weight: float = _param(
        0.0,
        "rank masks (NMS, painting) by predicted IoU x stability score ** this (0: predicted "
        "IoU alone)",
        0.0,
        4.0,
        0.1,
        official=False,
    )
    min_free_fraction: float = _param(
        0.5,
        "paint a mask only where at least this fraction of it is not taken by better masks",
        0.0,
        1.0,
        0.01,
        official=False,
    )
    link_iou_thresh: float = _param(
        0.5,
        "IoU linking masks across slices and tile borders into one object",
        0.0,
        1.0,
        0.01,
        official=False,
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if type(f.default) is int and not isinstance(value, int | bool):
                if float(value) != int(value):
                    raise ValueError(f"{f.name} must be an integer, got {value!r}")
                object.__setattr__(self, f.name, int(value))
                value = int(value)
            low, high = f.metadata["range"]
            if not low <= value <= high:
                raise ValueError(f"{f.name} must be in [{low}, {high}], got {value!r}")

    def official_kwargs(self) -> dict:
        """Keyword arguments of ``segment_anything.SamAutomaticMaskGenerator``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["official"]}

    def with_values(self, **changes) -> AutoMaskConfig:
        """A copy with ``changes`` (None values ignored, so parsed CLI options pass as is)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


# dense small objects (nuclei): a finer grid, looser quality filters, stricter duplicate
# removal (touching nuclei have overlapping boxes, so 0.5 would merge neighbours), and specks /
# holes cleaned
_NUCLEI = AutoMaskConfig(
    points_per_side=64,
    points_per_batch=128,
    pred_iou_thresh=0.80,
    stability_score_thresh=0.90,
    box_nms_thresh=0.6,
    min_mask_region_area=16,
)

PRESETS: dict[str, AutoMaskConfig] = {
    # the official generator's defaults
    "default": AutoMaskConfig(),
    "nuclei": _NUCLEI,
    # the nuclei preset for the bundled model (vit_nano), whose predicted IoUs and stability
    # scores run lower than the official models': looser filters, tighter NMS, one crop
    # layer (four crops magnified 1.5x) for small nuclei, masks ranked by predicted IoU x
    # stability, and parts of painted nuclei left out (benchmarks/sweep_auto.py)
    "nuclei-bundled": _NUCLEI.with_values(
        pred_iou_thresh=0.45, stability_score_thresh=0.8, box_nms_thresh=0.3, crop_n_layers=1,
        stability_rank_weight=1.0, min_free_fraction=0.6,
    ),
}
"""Named configurations; ``PRESETS["default"]`` equals ``AutoMaskConfig()``."""


@dataclass(frozen=True)
class DecoderModeConfig:
    """Settings of the two automatic modes that use an instance decoder: ``mode`` "ais"
    (``instances``: the watershed on the decoder's maps) or "apg" (the same seeds as prompts
    for SAM, ``prompts``; the AIS objects give their boxes when ``prompts.with_box``)."""

    mode: Literal["ais", "apg"] = "apg"
    instances: InstanceSettings = field(default_factory=InstanceSettings)
    prompts: PromptSettings = field(default_factory=PromptSettings)
    #: IoU linking objects on adjacent slices into one 3D object (as AutoMaskConfig's)
    link_iou_thresh: float = 0.5
    #: how much larger than one resize the model sees the image: planes are tiled so that
    #: each tile's window is about ``image_size / magnification`` (tile_grid.magnified_grid);
    #: 1: as the embeddings' own grid (micro-sam's)
    magnification: float = 1.0
    #: the halo of those tiles, plane pixels (None: ``image_size // 8``)
    magnified_halo: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("ais", "apg"):
            raise ValueError(f"a decoder mode is 'ais' or 'apg', got {self.mode!r}")
        if not 0 <= self.link_iou_thresh <= 1:
            raise ValueError(f"link_iou_thresh must be in [0, 1], got {self.link_iou_thresh}")
        if not 1 <= self.magnification <= 8:
            raise ValueError(f"magnification must be in [1, 8], got {self.magnification}")
        if self.magnified_halo is not None and self.magnified_halo < 0:
            raise ValueError(f"magnified_halo must be >= 0 pixels, got {self.magnified_halo}")


#: named decoder-mode settings (a model names its own: ``SamConfig.auto_decoder_preset``)
DECODER_PRESETS: dict[str, DecoderModeConfig] = {
    # micro-sam's defaults (InstanceSegmentationWithDecoder / AutomaticPromptGenerator)
    "default": DecoderModeConfig(),
    # the bundled model (32 x 32 embedding grid; nuclei a cell or two wide): the image seen
    # twice as large (tiles), less distance smoothing, specks dropped, masks mostly covered
    # by better ones not painted; chosen on foreign nuclei and ours together
    # (docs/automatic.md)
    "nuclei-bundled": DecoderModeConfig(
        instances=InstanceSettings(distance_smoothing=1.0, min_size=25),
        prompts=PromptSettings(min_free_fraction=0.5),
        magnification=2.0, magnified_halo=24,
    ),
}

AutoConfig = AutoMaskConfig | DecoderModeConfig
"""The settings of one automatic run; the mode is ``"amg"`` for an :class:`AutoMaskConfig`,
else the :class:`DecoderModeConfig`'s ``mode``."""


def mode_of(config: AutoConfig) -> Mode:
    """The automatic mode ``config`` runs."""
    return "amg" if isinstance(config, AutoMaskConfig) else config.mode


def default_mode(predictor) -> Mode:
    """The best mode a predictor has: APG when its model has an instance decoder, else AMG."""
    return "apg" if getattr(predictor, "instance_decoder", None) is not None else "amg"


def auto_config(predictor, mode: Mode | None = None) -> AutoConfig:
    """The model's own settings for ``mode`` (default :func:`default_mode`): what the CLI,
    the Python API and the widget start from. Raises ``ValueError`` for AIS / APG on a
    model without an instance decoder, naming what to do."""
    mode = default_mode(predictor) if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "amg":
        return config_for_model(predictor.config)
    if getattr(predictor, "instance_decoder", None) is None:
        raise ValueError(f"mode {mode!r} needs an instance decoder, and {predictor.config.name} "
                         "has none here: use --mode amg, or give a decoder file (--decoder; "
                         "micro-sam's *_lm / *_em checkpoints carry one)")  # fmt: skip
    preset = DECODER_PRESETS[predictor.config.auto_decoder_preset]
    return replace(preset, mode=mode)


def config_for_model(model) -> AutoMaskConfig:
    """The automatic settings a model carries: ``model`` is its ``SamConfig`` (e.g.
    ``predictor.config``) or a registered architecture name, whose ``auto_preset`` names a
    preset (:mod:`napari_sam.model.config`). What the CLI, the Python API and the widget use
    when the user chooses none."""
    from napari_sam.model.config import get_config

    config = get_config(model) if isinstance(model, str) else model
    return PRESETS[config.auto_preset]

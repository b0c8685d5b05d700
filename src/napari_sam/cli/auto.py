"""``napari-sam auto``: segment everything in an image into a label image, no viewer, no Qt.

``--mode``: ``apg`` (the default when the model has an instance decoder: prompts derived from
the decoder's maps, decoded by SAM), ``ais`` (the decoder's maps and a seeded watershed) or
``amg`` (SAM's grid of points, the default without a decoder), each with the model's own
settings. For amg, every :class:`~napari_sam.automatic.AutoMaskConfig` field is an option
(``--points-per-side`` ...), generated from the dataclass; ``--preset`` picks the starting
values (default: the model's own, :func:`~napari_sam.automatic.config_for_model`). 3D / nD data is segmented slice
by slice and linked into 3D objects; large planes are tiled. Finding nothing exits with
:data:`NOTHING_FOUND` and a hint. The image's axes are read as every command reads them
(:mod:`napari_sam.cli.inputs`): an 8-bit RGB picture is detected, a channel axis is chosen with
``--channel`` (and never linked as if it were z).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np

from napari_sam.cli.inputs import add_image_options, input_of
from napari_sam.cli.progress import progress_of

#: exit status when no object was found (the label image is still written)
NOTHING_FOUND = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    from napari_sam.automatic.config import MODES, PRESETS, AutoMaskConfig

    parser = subparsers.add_parser(
        "auto", help="segment every object of an image automatically into a label image"
    )
    parser.add_argument("image", type=Path, help="TIFF, PNG, zarr or npy image")
    parser.add_argument("-o", "--output", type=Path, required=True, help="LABELS.tif")
    parser.add_argument("--mode", default=None, choices=MODES,
                        help="apg: prompts from the model's instance decoder, decoded by SAM; "
                             "ais: the decoder's maps and a watershed; amg: SAM's grid of "
                             "points (default: apg when the model has an instance decoder, "
                             "else amg)")  # fmt: skip
    parser.add_argument("--decoder", type=Path, default=None,
                        help="instance decoder file (default: the one in or beside the weights)")
    parser.add_argument("--preset", default=None, choices=sorted(PRESETS),
                        help="amg: starting settings (options below override them; default: "
                             "the model's own)")  # fmt: skip
    group = parser.add_argument_group("amg settings (default: the preset's)")
    for f in fields(AutoMaskConfig):
        group.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None,
                           metavar=type(f.default).__name__.upper(),
                           help=f"{f.metadata['help']} (official default: {f.default:g})")  # fmt: skip
    parser.add_argument("--model", default=None, help="weights name or file (default: bundled)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    add_image_options(parser)
    parser.add_argument("--contrast", "--contrast-limits", dest="contrast", type=float, nargs=2,
                        metavar=("LOW", "HIGH"),
                        help="contrast limits (default: percentiles of a sample of the stack)")  # fmt: skip
    parser.add_argument("--tile", type=int, nargs=2, metavar=("ROWS", "COLS"),
                        help="tile size for large planes (default: from the model size)")  # fmt: skip
    parser.add_argument("--halo", type=int, nargs=2, metavar=("ROWS", "COLS"),
                        help="context around each tile (default: model size / 8)")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace, model):
    """The :class:`AutoMaskConfig` of the parsed options: the preset (default: the own of
    ``model``, a ``SamConfig`` or architecture name), then the options given."""
    from napari_sam.automatic.config import PRESETS, AutoMaskConfig, config_for_model

    changes = {f.name: getattr(args, f.name) for f in fields(AutoMaskConfig)}
    start = config_for_model(model) if args.preset is None else PRESETS[args.preset]
    return start.with_values(**changes)


def run(args: argparse.Namespace) -> int:
    import tifffile

    from napari_sam.automatic import segment_everything
    from napari_sam.automatic.config import AutoMaskConfig, auto_config, default_mode
    from napari_sam.predictor import Predictor

    progress = progress_of(args)
    contrast = tuple(args.contrast) if args.contrast else None
    source, limits = input_of(args).slice_source(contrast=contrast)
    predictor = Predictor.load(args.model, device=args.device, precision=args.precision,
                               decoder=args.decoder)  # fmt: skip
    mode = args.mode or default_mode(predictor)
    amg_options = [f"--{f.name.replace('_', '-')}" for f in fields(AutoMaskConfig)
                   if getattr(args, f.name) is not None] + (["--preset"] if args.preset else [])
    if mode != "amg" and amg_options:
        raise ValueError(f"{', '.join(amg_options)} set SAM's grid (amg), but the mode is "
                         f"{mode}: add --mode amg, or drop them")  # fmt: skip
    config = (config_from_args(args, predictor.config) if mode == "amg"
              else auto_config(predictor, mode))  # fmt: skip
    if not args.quiet:
        print(f"mode {mode} ({predictor.config.name})", file=sys.stderr)

    progress.start("segmenting", "steps", resume="nothing was written: run the same "
                   "command again to start over")  # fmt: skip
    labels = segment_everything(
        predictor, source.data, config, progress, rgb=source.rgb, contrast_limits=limits,
        tile=tuple(args.tile) if args.tile else None,
        halo=tuple(args.halo) if args.halo else None,
    )  # fmt: skip
    progress.close()
    n = int(np.count_nonzero(np.unique(labels)))
    out = labels.astype(np.uint16 if n < 2**16 else np.uint32)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(args.output, out, compression="zlib")
    print(f"wrote {n} objects to {args.output} ({out.shape}, {out.dtype})")
    if n == 0 and mode != "amg":
        print(f"no object found with mode {mode}. If the image holds objects: try --mode amg "
              "(SAM's grid), --mode ais, or set --contrast", file=sys.stderr)  # fmt: skip
        return NOTHING_FOUND
    if n == 0:
        print(f"no object found. If the image holds objects: lower --pred-iou-thresh (now "
              f"{config.pred_iou_thresh:g}) and --stability-score-thresh (now "
              f"{config.stability_score_thresh:g}), try --preset nuclei-bundled with the "
              "bundled model or --preset nuclei with a microscopy model (--model "
              "vit_b_lm.pt, micro-sam's file), or set --contrast", file=sys.stderr)  # fmt: skip
        return NOTHING_FOUND
    return 0

"""``napari-sam refine IMAGE --labels LABELS.tif -o OUT.tif``: every object of a label image
(2D or a stack, plane by plane) refined by the model, each as its own mask and box prompt
(:mod:`napari_sam.refinement`). Ids are kept; an object the model loses is kept as it was and
named on stderr; no object takes another's pixels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from napari_sam.cli.inputs import add_image_options, input_of
from napari_sam.cli.progress import progress_of


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "refine", help="refine every object of a label image (from another tool) with SAM",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("image", type=Path, help="TIFF, PNG, zarr or npy image")
    parser.add_argument("--labels", type=Path, required=True,
                        help="LABELS.tif: instance labels of the image (same plane shape)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="OUT.tif")
    parser.add_argument("--model", default=None, help="weights name or file (default: bundled)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    add_image_options(parser)
    parser.add_argument("--contrast", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="contrast limits (default: percentiles sampled over the stack)")
    parser.add_argument("--tile", nargs=2, type=int, metavar=("H", "W"),
                        help="tile size for large planes (default: from the model size)")
    parser.add_argument("--halo", nargs=2, type=int, metavar=("H", "W"),
                        help="context around each tile (default: model size / 8)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tifffile

    from napari_sam.cli.segment import in_process_embeddings
    from napari_sam.predictor import Predictor
    from napari_sam.refinement import refine_labels

    labels = np.asarray(tifffile.imread(args.labels))
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{args.labels} holds {labels.dtype} values, not integer labels")
    image = input_of(args)
    predictor = Predictor.load(args.model, device=args.device, precision=args.precision)
    embeddings, leading = in_process_embeddings(args, predictor, image)
    expected = (*leading, *embeddings.grid.shape)
    if labels.shape != expected:
        raise ValueError(f"the labels are {labels.shape}, the image's planes {expected}")
    progress = progress_of(args)
    progress.start("refining", "objects", resume="nothing was written: run the same command "
                   "again to start over")  # fmt: skip
    refined, plans = refine_labels(embeddings, predictor, labels, progress)
    progress.close()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(args.output, refined, compression="zlib", photometric="minisblack")
    lost = [(s, i) for s, plan in enumerate(plans) for i in plan.lost]
    changed = sum(len(plan.masks) for plan in plans)
    print(f"refined {changed} objects into {args.output} ({refined.shape}, {refined.dtype})")
    if lost:
        where = ", ".join(f"{i}" if not leading else f"{i} (plane {s})" for s, i in lost[:20])
        print(f"kept unchanged, the model lost them: {where}", file=sys.stderr)
    return 0

"""``napari-sam calibrate``: retrain a model's IoU head alone so that its predicted IoU
means what automatic mode's filters read it as (see :mod:`napari_sam.training.calibrate`).
The masks do not change; the best of the three masks of a click may.

Data: ``--images DIR --labels DIR``, ``--zarr PATH`` or ``--synthetic N`` (N fresh
synthetic nuclei images, seeded apart from training and evaluation).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CALIBRATION_SEED = 20_000  # training draws from seed 0 up, evaluation from 10_000


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("calibrate", help="calibrate a model's predicted IoU",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    data = p.add_argument_group("data (one source)")
    data.add_argument("--images", type=Path, help="folder of images (TIFF / PNG)")
    data.add_argument("--labels", type=Path, help="folder of instance label images, same names")
    data.add_argument("--zarr", type=Path, help="zarr group with 'images' and 'labels' arrays")
    data.add_argument("--synthetic", type=int, metavar="N", help="N synthetic images")
    data.add_argument("--max-images", type=int, default=16, help="at most this many images")
    p.add_argument("--model", required=True, help="weights name or file")
    p.add_argument("--out", type=Path, required=True, help="output weights file (.pt)")
    p.add_argument("--half", action="store_true", help="store --out in float16")
    p.add_argument("--points-per-side", type=int, default=16, help="grid of clicks per image")
    p.add_argument("--no-centres", action="store_true",
                   help="grid clicks only (by default also one click near each object's centre)")
    p.add_argument("--rank-weight", type=float, default=0.1,
                   help="weight of the loss on the order of each click's three predictions "
                        "(what picks a single click's mask); 0: MSE alone")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def _pairs(args: argparse.Namespace) -> list:
    import numpy as np

    from napari_sam.training import data
    from napari_sam.training.synthetic import synthetic_nuclei

    sources = [args.images is not None, args.zarr is not None, args.synthetic is not None]
    if sum(sources) != 1:
        raise ValueError("give exactly one data source: --images/--labels, --zarr or --synthetic")
    if args.synthetic is not None:
        rng = np.random.default_rng(CALIBRATION_SEED + args.seed)
        samples = [synthetic_nuclei((512, 512), seed=rng) for _ in range(args.synthetic)]
        return [data.ImagePair(s.image, s.labels) for s in samples]
    if args.zarr is not None:
        source = data.ZarrPairs(args.zarr)
    elif args.labels is None:
        raise ValueError("--images needs --labels")
    else:
        source = data.FolderPairs(args.images, args.labels)
    return [source[i] for i in range(min(len(source), args.max_images))]


def run(args: argparse.Namespace) -> int:
    import torch

    from napari_sam.model.checkpoints import load_model
    from napari_sam.training.calibrate import calibrate_iou_head
    from napari_sam.training.trainer import export_weights

    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = _pairs(args)
    model = load_model(args.model).model.float()
    report = calibrate_iou_head(model, pairs, points_per_side=args.points_per_side,
                                steps=args.steps, lr=args.lr, seed=args.seed,
                                centres=not args.no_centres,
                                rank_weight=args.rank_weight)  # fmt: skip
    export_weights(model, args.out, torch.float16 if args.half else torch.float32)
    print(f"IoU head calibrated on {report.points} clicks of {len(pairs)} images: mean "
          f"|predicted - true IoU| {report.error_before:.3f} -> {report.error_after:.3f}; "
          f"a centre click's picked mask, mean true IoU {report.pick_before:.3f} -> "
          f"{report.pick_after:.3f}; wrote {args.out}", file=sys.stderr)  # fmt: skip
    return 0

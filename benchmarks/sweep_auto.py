"""Which automatic-mode settings suit a model on dense synthetic nuclei: F1 at IoU 0.5 for a
grid of (predicted-IoU threshold, stability threshold, box NMS threshold, stability rank
weight, minimum free fraction), beside the nuclei presets, pooled over several images.

The grid's candidates are decoded once per image with loose filters (predicted IoU > 0.3,
stability >= 0.5, no NMS, no cleaning); every setting then goes
through what automatic mode does after decoding (``automatic.select_masks``: filters, NMS
within and between crops, cleaning) and paints (``automatic.config_labels``).

    .venv/bin/python benchmarks/sweep_auto.py [--weights FILE] [--seeds 1,2,3] [--size 512]
                                              [--crop-layers 1] [--foreign DIR]

With ``--foreign DIR`` (nuclei from another generator: ``nuclei2d_*.tif`` and their
``*_labels.tif``, e.g. ``../shared/foreign``) every setting is also scored there, and the
settings are ranked by the lower of the two F1s: a default is chosen on both, never on one.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from bench_auto import f1_from, match_counts, to_rgb

from napari_sam.automatic import PRESETS, config_labels, generate_masks, select_masks
from napari_sam.model.checkpoints import load_model
from napari_sam.predictor import Predictor
from napari_sam.training.synthetic import synthetic_nuclei

REPO = Path(__file__).resolve().parents[1]
PRED_IOU = (0.4, 0.45, 0.5, 0.6)
STABILITY = (0.75, 0.8, 0.85)
NMS = (0.3, 0.45)
RANK_WEIGHT = (0.0, 1.0)
MIN_FREE = (0.0, 0.6)
COLUMNS = ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh",
           "stability_rank_weight", "min_free_fraction")  # fmt: skip


def f1_with(images: list, config) -> tuple[float, int, int]:
    """Pooled F1 of ``config`` over ``images`` [(truth labels, loose candidates)];
    (F1, matches, predicted objects)."""
    counts = [match_counts(config_labels(select_masks(candidates, config), truth.shape, config),
                           truth) for truth, candidates in images]  # fmt: skip
    return f1_from(counts), sum(c[0] for c in counts), sum(c[1] for c in counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(REPO / "src/napari_sam/weights/vit_nano.pt"))
    parser.add_argument("--seeds", default="1,2,3", help="synthetic image seeds")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=10, help="best settings printed")
    parser.add_argument("--crop-layers", type=int, default=1,
                        help="crop layers of the decoded grid (small objects magnified)")
    parser.add_argument("--points-per-side", type=int, default=None,
                        help="grid density (default: the nuclei preset's)")
    parser.add_argument("--foreign", type=Path, default=None,
                        help="also score on these foreign nuclei (validation only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    base = PRESETS["nuclei"].with_values(crop_n_layers=args.crop_layers,
                                         points_per_side=args.points_per_side)
    loose = base.with_values(pred_iou_thresh=0.3, stability_score_thresh=0.5,
                             box_nms_thresh=1.0, crop_nms_thresh=1.0,
                             min_mask_region_area=0)  # fmt: skip
    predictor = Predictor(load_model(args.weights).model)
    images, nuclei = [], 0
    for seed in (int(s) for s in args.seeds.split(",")):
        start = time.perf_counter()
        synth = synthetic_nuclei((args.size, args.size), seed=seed)
        candidates = generate_masks(predictor, to_rgb(synth.image), loose, rgb=True)
        images.append((synth.labels, candidates))
        nuclei += int(synth.labels.max())
        print(f"seed {seed}: {synth.labels.max()} nuclei, {len(candidates)} candidates "
              f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
    foreign = []
    for path in sorted(args.foreign.glob("nuclei2d_?.tif")) if args.foreign else ():
        start = time.perf_counter()
        truth = tifffile.imread(path.with_name(path.stem + "_labels.tif"))
        candidates = generate_masks(predictor, to_rgb(tifffile.imread(path)), loose, rgb=True)
        foreign.append((truth, candidates))
        print(f"{path.name}: {len(np.unique(truth)) - 1} nuclei, {len(candidates)} candidates "
              f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
    rows = []
    for values in itertools.product(PRED_IOU, STABILITY, NMS, RANK_WEIGHT, MIN_FREE):
        config = base.with_values(**dict(zip(COLUMNS, values)))
        other = f1_with(foreign, config)[0] if foreign else float("nan")
        rows.append((*f1_with(images, config), *values, other))
    rows.sort(key=lambda r: -(min(r[0], r[-1]) if foreign else r[0]))
    print(f"\n{Path(args.weights).name}, {len(images)} images of {args.size} px, {nuclei} nuclei, "
          f"{args.crop_layers} crop layer(s)")  # fmt: skip
    print(f"{'pred IoU >':>10}{'stability >=':>14}{'NMS':>6}{'rank w':>8}{'min free':>10}"
          f"{'F1@0.5':>8}{'matched':>9}{'objects':>9}{'F1 foreign':>12}")  # fmt: skip

    def line(f1, tp, n, *values, note=""):
        p, s, nms, w, free, other = values
        print(f"{p:>10.2f}{s:>14.2f}{nms:>6.2f}{w:>8.1f}{free:>10.2f}{f1:>8.3f}{tp:>9}{n:>9}"
              f"{other:>12.3f}{note}")  # fmt: skip

    for row in rows[: args.top]:
        line(*row)
    for name in ("nuclei", "nuclei-bundled"):
        preset = PRESETS[name].with_values(crop_n_layers=args.crop_layers)
        other = f1_with(foreign, preset)[0] if foreign else float("nan")
        line(*f1_with(images, preset), *(getattr(preset, c) for c in COLUMNS), other,
             note=f"  <- {name} preset")


if __name__ == "__main__":
    main()

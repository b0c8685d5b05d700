"""Which automatic-mode filters suit a model on dense synthetic nuclei: F1 at IoU 0.5 for a
grid of (predicted-IoU threshold, stability threshold, box NMS threshold), beside the
nuclei preset's own values, pooled over several images.

The grid's candidates are decoded once per image with loose filters (predicted IoU > 0.3,
stability >= 0.5, NMS 0.95, no cleaning); every setting then filters, suppresses and paints
them as automatic mode does (minimum area 16).

    .venv/bin/python benchmarks/sweep_auto.py [--weights FILE] [--seeds 1,2,3] [--size 512]
                                              [--crop-layers 1]
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch
from bench_auto import f1_from, match_counts, to_rgb

from napari_sam.automatic import PRESETS, generate_masks, masks_to_labels
from napari_sam.automatic.mask_ops import box_nms
from napari_sam.model.checkpoints import load_model
from napari_sam.predictor import Predictor
from napari_sam.training.synthetic import synthetic_nuclei

REPO = Path(__file__).resolve().parents[1]
PRED_IOU = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
STABILITY = (0.5, 0.7, 0.8, 0.9)
NMS = (0.3, 0.45, 0.6)
MIN_AREA = 16


def f1_with(images: list, pred_iou: float, stability: float, nms: float) -> tuple[float, int, int]:
    """Pooled F1 of one setting over ``images`` [(truth labels, loose candidates)];
    (F1, matches, predicted objects)."""
    counts = []
    for truth, candidates in images:
        kept = [m for m in candidates if m.predicted_iou > pred_iou
                and m.stability_score >= stability]  # fmt: skip
        boxes = np.array([m.box for m in kept]).reshape(-1, 4)
        kept = [kept[i] for i in box_nms(boxes, np.array([m.predicted_iou for m in kept]), nms)]
        counts.append(match_counts(masks_to_labels(kept, truth.shape, MIN_AREA), truth))
    return f1_from(counts), sum(c[0] for c in counts), sum(c[1] for c in counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(REPO / "src/napari_sam/weights/vit_nano.pt"))
    parser.add_argument("--seeds", default="1,2,3", help="synthetic image seeds")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=10, help="best settings printed")
    parser.add_argument("--crop-layers", type=int, default=0,
                        help="crop layers of the decoded grid (small objects magnified)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    preset = PRESETS["nuclei"]
    loose = preset.with_values(pred_iou_thresh=0.3, stability_score_thresh=0.5,
                               box_nms_thresh=0.95, min_mask_region_area=0,
                               crop_n_layers=args.crop_layers)  # fmt: skip
    predictor = Predictor(load_model(args.weights).model)
    images, nuclei = [], 0
    for seed in (int(s) for s in args.seeds.split(",")):
        start = time.perf_counter()
        synth = synthetic_nuclei((args.size, args.size), seed=seed)
        candidates = generate_masks(predictor, to_rgb(synth.image), loose, rgb=True)
        images.append((synth.labels, candidates))
        nuclei += int(synth.labels.max())
        print(f"seed {seed}: {synth.labels.max()} nuclei, {len(candidates)} candidates "
              f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
    rows = [(*f1_with(images, p, s, n), p, s, n)
            for p, s, n in itertools.product(PRED_IOU, STABILITY, NMS)]  # fmt: skip
    rows.sort(key=lambda r: -r[0])
    print(f"\n{Path(args.weights).name}, {len(images)} images of {args.size} px, {nuclei} nuclei")
    print(f"{'pred IoU >':>10}{'stability >=':>14}{'NMS':>6}{'F1@0.5':>8}{'matched':>9}"
          f"{'objects':>9}")  # fmt: skip
    ref = f1_with(images, preset.pred_iou_thresh, preset.stability_score_thresh,
                  preset.box_nms_thresh)  # fmt: skip
    for f1, tp, n, p, s, nms in rows[: args.top]:
        print(f"{p:>10.2f}{s:>14.2f}{nms:>6.2f}{f1:>8.3f}{tp:>9}{n:>9}")
    print(f"{preset.pred_iou_thresh:>10.2f}{preset.stability_score_thresh:>14.2f}"
          f"{preset.box_nms_thresh:>6.2f}{ref[0]:>8.3f}{ref[1]:>9}{ref[2]:>9}  <- nuclei preset")


if __name__ == "__main__":
    main()

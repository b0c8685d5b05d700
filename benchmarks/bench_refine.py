"""Refining a whole label image (``napari_sam.refinement``): rough labels made here, refined
by the bundled model, against the truth; on ``../shared/foreign`` 2D beside our generator's
held-out images, in one run.

Rough labels: the truth eroded by 2 px, dilated by 2 px (first come where nuclei meet), and an
Otsu threshold split by a distance-transform watershed. Printed per kind: the mean IoU of each
true nucleus with its best-overlapping rough object before and after refining (the same ids),
objects lost (kept unchanged, flagged) and objects merged (one id over two nuclei' majority).

    .venv/bin/python benchmarks/bench_refine.py [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_foreign import DEFAULT_FOREIGN, cpu_line, foreign_2d, ours_2d, plane_embeddings
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

from napari_sam.predictor import Predictor
from napari_sam.refinement import refine_labels


def grown(truth: np.ndarray, erode: bool) -> np.ndarray:
    out = np.zeros_like(truth)
    op = ndimage.binary_erosion if erode else ndimage.binary_dilation
    for i in np.unique(truth[truth > 0]):
        out[op(truth == i, iterations=2) & (out == 0)] = i
    return out


def otsu_watershed(image: np.ndarray) -> np.ndarray:
    smooth = ndimage.gaussian_filter(image.astype(np.float32), 1.0)
    fg = smooth > threshold_otsu(smooth)
    depth = ndimage.distance_transform_edt(fg)
    peaks = (depth == ndimage.maximum_filter(depth, 7)) & (depth > 2)
    markers, _ = ndimage.label(peaks)
    return watershed(-depth, markers, mask=fg).astype(np.int32)


def best_iou(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    """Per true nucleus, the IoU with the predicted object that overlaps it most."""
    out = []
    for i in np.unique(truth[truth > 0]):
        nucleus = truth == i
        ids, counts = np.unique(pred[nucleus], return_counts=True)
        best = ids[counts.argmax()] if ids[counts.argmax()] else (ids[1] if len(ids) > 1 else 0)
        obj = pred == best if best else np.zeros_like(nucleus)
        out.append(float((nucleus & obj).sum() / (nucleus | obj).sum()))
    return out


def merged(pred: np.ndarray, truth: np.ndarray) -> int:
    """Predicted objects that are the majority of two or more true nuclei."""
    owners: dict[int, int] = {}
    for i in np.unique(truth[truth > 0]):
        ids, counts = np.unique(pred[truth == i], return_counts=True)
        top = ids[counts.argmax()]
        if top:
            owners[top] = owners.get(top, 0) + 1
    return sum(n > 1 for n in owners.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = Predictor.load("bundled", device="cpu")
    print(cpu_line())
    kinds = {"eroded 2 px": lambda im, t: grown(t, True), "dilated 2 px": lambda im, t: grown(t, False),
             "Otsu + watershed": lambda im, t: otsu_watershed(im)}  # fmt: skip
    print(f"{'rough labels':<18}{'data':<9}{'mIoU before':>12}{'after':>8}{'lost':>6}"
          f"{'merged before/after':>21}{'s/image':>9}")
    for kind, make in kinds.items():
        for name, images in (("foreign", foreign_2d(DEFAULT_FOREIGN)), ("ours", ours_2d())):
            before, after, lost, m0, m1, secs = [], [], 0, 0, 0, []
            for image, truth in images:
                rough = make(image, truth)
                t0 = time.perf_counter()
                refined, (plan,) = refine_labels(plane_embeddings(predictor, image), predictor,
                                                 rough)  # fmt: skip
                secs.append(time.perf_counter() - t0)
                before += best_iou(rough, truth)
                after += best_iou(refined, truth)
                lost += len(plan.lost)
                m0, m1 = m0 + merged(rough, truth), m1 + merged(refined, truth)
            print(f"{kind:<18}{name:<9}{np.mean(before):>12.3f}{np.mean(after):>8.3f}{lost:>6}"
                  f"{f'{m0}/{m1}':>21}{np.median(secs):>9.2f}", flush=True)


if __name__ == "__main__":
    main()

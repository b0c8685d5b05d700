"""Quality on nuclei we did not make, beside our own generator's, in one run.

    .venv/bin/python benchmarks/bench_foreign.py [--only prompts,negatives,propagate,drift,auto]
                                                 [--weights FILE] [--foreign DIR]

``--foreign`` (default ``../shared/foreign``) holds nuclei from another generator: 2D images
``nuclei2d_*.tif`` and coarse-z volumes ``nuclei3d_*.tif``, each with ``*_labels.tif``. They are
for validation only (never for training). Every row is printed for the foreign set and for
ours (our generator's held-out seeds), with the same prompts and the plugin's default path
(``segment_plane`` / ``propagate`` / ``segment_everything`` with the model's defaults).

- prompts: per nucleus a tight box and a click at its deepest pixel, under each mask
  choice (best of three, single-mask output, best of all four; "auto" is one of them per
  prompt family, as the model's configuration says).
- negatives: on nuclei that touch a neighbour, under "auto" and each choice, the click alone
  and with a negative click at the neighbour's deepest pixel (mean IoU, and on how many the
  negative helped / hurt), and beside it the model's own answer to click plus negative
  (``positives_first=False``: the click's own mask is not tried first).
- propagate: per nucleus of a volume, a box (and, second row, a click) on its middle slice,
  propagated both ways: mean 3D IoU, slices written past the nucleus's ends (per nucleus),
  and seconds per propagated slice; beside it, as references of the same run, the
  default without following the object's move (``NO_MAX_SHIFT``), without that and the
  end's own-peak cut (``NO_END_LEVEL``), without either cut too (``NO_CUTS``) and the box
  with the settings before the stop evidence (``PREVIOUS``);
  then the model's ceiling: a
  fresh tight box from the truth on every slice the nucleus spans (no propagation, so
  nothing is written past its ends), with the IoU per slice by its distance from the
  middle.
- drift: a time series made from a 2D image (each frame shifted and warped a little): a
  nucleus clicked on frame 0 and propagated through t, against a fresh click on every frame
  (and the same four references).
- auto: ``segment_everything`` with no options (the model's best mode, APG when it has an
  instance decoder, with its own settings): F1@0.5 and seconds per image.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from bench_auto import auto_counts, f1_from
from scipy import ndimage

from napari_sam.image import percentile_limits
from napari_sam.jobs import drain
from napari_sam.plane_segmentation import PlaneMask, WindowEmbeddings, segment_plane
from napari_sam.predictor import Predictor
from napari_sam.prompts import Prompt
from napari_sam.propagation import (
    PropagationConfig,
    carried_prompt,
    deepest_point,
    propagate,
)
from napari_sam.slice_source import SliceSource
from napari_sam.stack_embeddings import PredictorEmbedder, StackEmbeddings
from napari_sam.tile_grid import TileGrid
from napari_sam.training.synthetic import EASY_STYLE, NucleiStyle, synthetic_nuclei
from napari_sam.transforms import ObjectMask

DEFAULT_FOREIGN = Path(__file__).resolve().parents[2] / "shared" / "foreign"
# the mask choices measured ("auto" is one of them per prompt family: printed with the table)
CHOICES = ("best", "single", "any")
# propagation as it was before the stop evidence (a carried click alone, its best of three
# masks, stops on predicted IoU (under 0.5) and overlap only): the reference printed beside
# the default
PREVIOUS = PropagationConfig(min_score=0.5, dense="none", multimask="best", min_contrast=0.0,
                             max_rise=0.0, max_growth=0.0, min_stability=0.0,
                             edge_level=0.0, end_level=0.0, max_shift=0)  # fmt: skip
# the default without following the object's move (max_shift; the default before it),
# without that and the cut of an end slice to its own peak (end_level; before that), and
# without either cut too (the edge level; before that)
NO_MAX_SHIFT = PropagationConfig(max_shift=0)
NO_END_LEVEL = PropagationConfig(max_shift=0, end_level=0.0)
NO_CUTS = PropagationConfig(max_shift=0, edge_level=0.0, end_level=0.0)
# the references printed under propagation and drift: (what, settings, the 3D prompt kinds)
REFERENCES = (("without following the object's move", NO_MAX_SHIFT, ("box", "click")),
              ("without that and the end's own-peak cut", NO_END_LEVEL, ("box", "click")),
              ("without either cut too", NO_CUTS, ("box", "click")),
              ("before the stop evidence", PREVIOUS, ("box",)))  # fmt: skip


def cpu_line() -> str:
    """The CPU model and its matrix extensions (figures compare only within one run)."""
    model, flags = platform.processor() or "?", ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next(line.split(":", 1)[1].strip() for line in text.splitlines()
                     if line.startswith("model name"))  # fmt: skip
        present = set(next(line for line in text.splitlines() if line.startswith("flags")).split())
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
                         if f in present)  # fmt: skip
    except (OSError, StopIteration):
        pass
    return f"CPU: {model} [{flags}], {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


# --- data -----------------------------------------------------------------------------------


def foreign_2d(folder: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(tifffile.imread(p), tifffile.imread(p.with_name(p.stem + "_labels.tif")))
            for p in sorted(folder.glob("nuclei2d_?.tif"))]  # fmt: skip


def foreign_3d(folder: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(tifffile.imread(p), tifffile.imread(p.with_name(p.stem + "_labels.tif")))
            for p in sorted(folder.glob("nuclei3d_?.tif"))]  # fmt: skip


def ours_2d(count: int = 4, min_nuclei: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``count`` held-out 384 x 384 images of our broad style (seeds 20000 on,
    apart from training) with at least ``min_nuclei`` nuclei (the first four hold 4, 307,
    17 and 47)."""
    out = []
    for seed in range(20_000, 20_200):
        sample = synthetic_nuclei((384, 384), seed=seed, style=NucleiStyle())
        if len(np.unique(sample.labels)) - 1 >= min_nuclei:
            out.append((sample.image, sample.labels))
            if len(out) == count:
                return out
    raise ValueError(f"fewer than {count} of 200 held-out images hold {min_nuclei} nuclei")


def ours_3d() -> list[tuple[np.ndarray, np.ndarray]]:
    """bench_stack's volumes (seeds 2, 3) and two coarse-z dense ones (z voxels 4x xy)."""
    easy = [synthetic_nuclei((24, 192, 192), seed=s, style=EASY_STYLE, anisotropy=2.0)
            for s in (2, 3)]  # fmt: skip
    dense = NucleiStyle(radius=(8.0, 14.0), coverage=(0.3, 0.4), cluster_fraction=(0.5, 0.7),
                        blur=(1.0, 2.0))  # fmt: skip
    coarse = [synthetic_nuclei((24, 128, 128), seed=s, style=dense, anisotropy=4.0)
              for s in (30, 31)]  # fmt: skip
    return [(v.image, v.labels) for v in easy + coarse]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def centre(mask: np.ndarray) -> tuple[int, int]:
    """The deepest pixel (row, col) of a 2D bool mask."""
    return deepest_point(ObjectMask(mask, (0, 0), mask.shape))


def plane_embeddings(predictor: Predictor, image: np.ndarray) -> WindowEmbeddings:
    limits = percentile_limits(image)

    def embed(_slice: int, window):
        r0, c0, r1, c1 = window
        return predictor.embed(image[r0:r1, c0:c1], contrast_limits=limits)

    return WindowEmbeddings(TileGrid(image.shape), embed)


# --- prompts --------------------------------------------------------------------------------


def touching_neighbour(labels: np.ndarray, obj: int) -> int | None:
    """The neighbour sharing the longest border with ``obj`` (None when it touches none)."""
    mask = labels == obj
    ring = ndimage.binary_dilation(mask, iterations=2) & ~mask
    ids, counts = np.unique(labels[ring], return_counts=True)
    keep = (ids != 0) & (ids != obj)
    return int(ids[keep][np.argmax(counts[keep])]) if keep.any() else None


def prompts_rows(predictor: Predictor, images) -> dict[str, float | int]:
    ious: dict[str, list[float]] = {}
    for image, labels in images:
        embeddings = plane_embeddings(predictor, image)
        for obj in np.unique(labels[labels > 0]):
            truth = labels == obj
            if truth.sum() < 16:
                continue
            rows, cols = np.nonzero(truth)
            box = Prompt.from_box([rows.min(), cols.min(), rows.max(), cols.max()])
            click = Prompt.from_points([centre(truth)])
            for mode in CHOICES:
                for name, prompt in (("box", box), ("click", click)):
                    mask = segment_plane(embeddings, predictor, 0, prompt, multimask=mode).mask
                    ious.setdefault(f"{name} {mode}", []).append(iou(mask.to_array(), truth))
    out: dict[str, float | int] = {k: float(np.mean(v)) for k, v in ious.items()}
    out["nuclei"] = len(ious["box single"])
    return out


def negative_rows(predictor: Predictor, images) -> dict[str, float | str]:
    """On nuclei that touch a neighbour, per mask choice (the default "auto" first): the
    click alone, the click with a negative click at the neighbour's deepest pixel, and the
    model's own answer to that pair (``positives_first=False``); on how many the negative
    helped / hurt (IoU +- 0.02)."""
    ious: dict[str, list[float]] = {}
    modes = ("auto", *CHOICES)
    for image, labels in images:
        embeddings = plane_embeddings(predictor, image)
        for obj in np.unique(labels[labels > 0]):
            truth = labels == obj
            neighbour = touching_neighbour(labels, obj)
            if truth.sum() < 16 or neighbour is None:
                continue
            click = centre(truth)
            pair = Prompt.from_points([click, centre(labels == neighbour)], [1, 0])
            for mode in modes:
                for name, prompt, first in (("click", Prompt.from_points([click]), True),
                                            ("click+negative", pair, True),
                                            ("click+negative, model's own", pair, False)):  # fmt: skip
                    mask = segment_plane(embeddings, predictor, 0, prompt, multimask=mode,
                                         positives_first=first).mask  # fmt: skip
                    ious.setdefault(f"{name} {mode}", []).append(iou(mask.to_array(), truth))
    out: dict[str, float | str] = {k: float(np.mean(v)) for k, v in ious.items()}
    for mode in modes:
        a, b = np.array(ious[f"click {mode}"]), np.array(ious[f"click+negative {mode}"])
        out[f"negative helped / hurt {mode}"] = (
            f"{int((b > a + 0.02).sum())} / {int((b < a - 0.02).sum())} of {len(a)}")
    return out


# --- propagation ----------------------------------------------------------------------------


def nuclei_3d(labels: np.ndarray):
    """Per nucleus of a (Z, H, W) label volume whose middle slice (its largest) holds at least
    16 pixels: its (Z, H, W) bool mask, the slices it spans and that middle slice."""
    for obj in np.unique(labels[labels > 0]):
        truth = labels == obj
        zs = np.nonzero(truth.any((1, 2)))[0]
        mid = int(zs[np.argmax(truth[zs].sum((1, 2)))])
        if truth[mid].sum() >= 16:
            yield truth, zs, mid


def propagate_rows(predictor: Predictor, volumes, config: PropagationConfig,
                   kinds: tuple[str, ...] = ("box", "click")) -> dict[str, float]:  # fmt: skip
    out: dict[str, float] = {}
    for kind in kinds:
        ious, past, seconds, slices = [], [], 0.0, 0
        for image, labels in volumes:
            stack = volume_embeddings(predictor, image)
            for truth, _zs, mid in nuclei_3d(labels):
                rows, cols = np.nonzero(truth[mid])
                prompt = (Prompt.from_box([rows.min(), cols.min(), rows.max(), cols.max()])
                          if kind == "box" else Prompt.from_points([centre(truth[mid])]))
                t0 = time.perf_counter()
                result = drain(propagate(stack, predictor, {mid: prompt}, slices=range(len(image)),
                                       config=config))  # fmt: skip
                seconds += time.perf_counter() - t0
                found = result.to_array(len(image))
                slices += len(result.positions)
                ious.append(iou(found, truth))
                past.append(int(np.sum(found.any((1, 2)) & ~truth.any((1, 2)))))
        out[f"{kind}: mean 3D IoU"] = float(np.mean(ious))
        out[f"{kind}: slices past the ends per nucleus"] = float(np.mean(past))
        out[f"{kind}: ms per propagated slice"] = 1000 * seconds / max(slices, 1)
        out["nuclei"] = len(ious)
    return out


def volume_embeddings(predictor: Predictor, image: np.ndarray) -> StackEmbeddings:
    """Every slice of the (Z, H, W) ``image`` embedded under the whole volume's contrast
    limits, as the widget embeds a stack."""
    stack = StackEmbeddings.open(SliceSource(image), PredictorEmbedder(
        predictor, percentile_limits(image)), cache_size=len(image))  # fmt: skip
    for z in range(len(image)):
        stack.get(z)
    return stack


def ceiling_rows(predictor: Predictor, volumes) -> dict[str, float]:
    """The model's ceiling for propagation: per nucleus, a tight box from the truth on every
    slice it spans (the mask choice the model gives boxes), 3D IoU; and the mean per-slice IoU
    one and two slices from the middle. The slices are embedded as propagation's are."""
    ious: list[float] = []
    by_offset: dict[int, list[float]] = {1: [], 2: []}
    for image, labels in volumes:
        stack = volume_embeddings(predictor, image)
        for truth, zs, mid in nuclei_3d(labels):
            found = np.zeros_like(truth)
            for z in zs:
                rows, cols = np.nonzero(truth[z])
                if rows.min() < rows.max() and cols.min() < cols.max():  # a box, not a line
                    box = Prompt.from_box([rows.min(), cols.min(), rows.max(), cols.max()])
                    found[z] = segment_plane(stack, predictor, int(z), box).mask.to_array()
                if abs(z - mid) in by_offset:
                    by_offset[abs(z - mid)].append(iou(found[z], truth[z]))
            ious.append(iou(found, truth))
    out = {"box on every slice: mean 3D IoU": float(np.mean(ious))}
    for offset, values in by_offset.items():
        out[f"  per-slice IoU {offset} slice(s) from the middle"] = float(np.mean(values))
    return out


def carried_step_rows(predictor: Predictor, volumes) -> dict[str, float]:
    """One propagation step from the truth: per nucleus, each slice one and two slices from
    its middle prompted by :func:`~napari_sam.propagation.carried_prompt` from the true mask
    of the slice before it (by default that mask and a click at its centre); per-slice IoU."""
    by_offset: dict[int, list[float]] = {1: [], 2: []}
    config = PropagationConfig()
    for image, labels in volumes:
        stack = volume_embeddings(predictor, image)
        for truth, zs, mid in nuclei_3d(labels):
            for z in zs:
                if abs(z - mid) not in by_offset:
                    continue
                before = truth[z - np.sign(z - mid)]
                previous = PlaneMask(ObjectMask(before, (0, 0), before.shape), 1.0, 0,
                                     np.zeros((0, 0), np.float32))  # fmt: skip
                prompt = carried_prompt(previous, config)
                mask = segment_plane(stack, predictor, int(z), prompt, zoom=config.zoom,
                                     multimask=config.multimask).mask  # fmt: skip
                by_offset[abs(z - mid)].append(iou(mask.to_array(), truth[z]))
    return {f"  per-slice IoU {offset} slice(s) from the middle": float(np.mean(values))
            for offset, values in by_offset.items()}  # fmt: skip


# --- drift ----------------------------------------------------------------------------------


def drifting_series(image: np.ndarray, labels: np.ndarray, frames: int = 8, seed: int = 0):
    """(T, H, W) image and labels: each frame the previous shifted by about 1.5 px and warped
    by a smooth displacement of about 1 px (the labels moved the same way)."""
    rng = np.random.default_rng(seed)
    h, w = image.shape
    rr, cc = np.mgrid[0:h, 0:w].astype(np.float32)
    ims, lbs = [image], [labels]
    dr = dc = 0.0
    for _ in range(frames - 1):
        dr, dc = dr + rng.normal(1.0, 0.5), dc + rng.normal(1.0, 0.5)
        warp = [ndimage.gaussian_filter(rng.standard_normal((h, w)), 24) * 40 for _ in range(2)]
        coords = [rr - dr + warp[0], cc - dc + warp[1]]
        ims.append(ndimage.map_coordinates(image, coords, order=1, mode="reflect"))
        lbs.append(ndimage.map_coordinates(labels, coords, order=0, mode="constant"))
    return np.stack(ims).astype(image.dtype), np.stack(lbs)


def drift_rows(predictor: Predictor, images, config: PropagationConfig,
               per_image: int = 12) -> dict[str, float]:  # fmt: skip
    followed, fresh = [], []
    for k, (image, labels) in enumerate(images):
        series, truth_t = drifting_series(image, labels, seed=k)
        stack = volume_embeddings(predictor, series)
        ids, areas = np.unique(labels[labels > 0], return_counts=True)
        whole = [i for i in ids[areas >= 64] if all((t == i).any() for t in truth_t)]
        rng = np.random.default_rng(k)
        for obj in rng.choice(whole, min(per_image, len(whole)), replace=False):
            truth = truth_t == obj
            prompt = Prompt.from_points([centre(truth[0])])
            result = drain(propagate(stack, predictor, {0: prompt}, slices=range(len(series)),
                                   config=config))  # fmt: skip
            found = result.to_array(len(series))
            for t in range(1, len(series)):
                followed.append(iou(found[t], truth[t]))
                mask = segment_plane(stack, predictor, t,
                                     Prompt.from_points([centre(truth[t])])).mask  # fmt: skip
                fresh.append(iou(mask.to_array(), truth[t]))
    return {"propagated through t: per-frame IoU": float(np.mean(followed)),
            "fresh click on each frame: per-frame IoU": float(np.mean(fresh)),
            "frames": len(followed)}  # fmt: skip


# --- automatic ------------------------------------------------------------------------------


def auto_rows(predictor: Predictor, images) -> dict[str, float]:
    from napari_sam.automatic import auto_config, mode_of

    config = auto_config(predictor)  # the model's best mode, its own settings
    counts, seconds = auto_counts(predictor, images, config)
    n_pred, n_true = (sum(c[i] for c in counts) for i in (1, 2))
    return {"mode": mode_of(config),
            "F1@0.5 (no options)": f1_from(counts),
            "objects found / true": f"{n_pred} / {n_true}",
            "seconds per image": float(np.median(seconds))}  # fmt: skip


# --- table ----------------------------------------------------------------------------------


def table(title: str, foreign: dict, ours: dict) -> None:
    print(f"\n{title}")
    print(f"  {'measure':<44} {'foreign':>16} {'ours':>16}")
    for key in foreign:
        a, b = foreign[key], ours.get(key, "-")
        fa = f"{a:.3f}" if isinstance(a, float) else str(a)
        fb = f"{b:.3f}" if isinstance(b, float) else str(b)
        print(f"  {key:<44} {fa:>16} {fb:>16}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="prompts,negatives,propagate,drift,auto")
    parser.add_argument("--weights", default="bundled", help="weights name or file")
    parser.add_argument("--foreign", type=Path, default=DEFAULT_FOREIGN)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(cpu_line())
    predictor = Predictor.load(args.weights, device="cpu", precision="fp32")
    print(f"model: {args.weights} ({predictor.config.name}); foreign data: {args.foreign}")
    only = set(args.only.split(","))
    f2, f3 = foreign_2d(args.foreign), foreign_3d(args.foreign)
    config = PropagationConfig()
    if "prompts" in only:
        print(f"multimask auto for {predictor.config.name}: "
              f"{dict(predictor.config.auto_multimask)}, other families single")
        table("2D prompts (mIoU; plugin path, zoom auto)", prompts_rows(predictor, f2),
              prompts_rows(predictor, ours_2d()))  # fmt: skip
    if "negatives" in only:
        table("touching nuclei: a negative click on the neighbour (mIoU)",
              negative_rows(predictor, f2), negative_rows(predictor, ours_2d()))  # fmt: skip
    if "propagate" in only:
        table(f"3D propagation from the middle slice ({config})",
              propagate_rows(predictor, f3, config), propagate_rows(predictor, ours_3d(), config))
        for what, reference, kinds in REFERENCES:
            table(f"  the same {what} (reference)",
                  propagate_rows(predictor, f3, reference, kinds),
                  propagate_rows(predictor, ours_3d(), reference, kinds))  # fmt: skip
        table("  the model's ceiling: a true box on every slice, no propagation",
              ceiling_rows(predictor, f3), ceiling_rows(predictor, ours_3d()))  # fmt: skip
        table("  one carried step from the true mask of the slice before",
              carried_step_rows(predictor, f3), carried_step_rows(predictor, ours_3d()))
    if "drift" in only:
        table("a nucleus drifting through t (8 frames)", drift_rows(predictor, f2, config),
              drift_rows(predictor, ours_2d(), config))  # fmt: skip
        for what, reference, _kinds in REFERENCES:
            table(f"  the same {what} (reference)", drift_rows(predictor, f2, reference),
                  drift_rows(predictor, ours_2d(), reference))  # fmt: skip
    if "auto" in only:
        table("automatic mode, the model's own settings", auto_rows(predictor, f2),
              auto_rows(predictor, ours_2d()))  # fmt: skip


if __name__ == "__main__":
    main()

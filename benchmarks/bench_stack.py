"""Microscopy-scale numbers: store size, memory while browsing, first prompt, huge 2D image,
propagation quality.

    .venv/bin/python benchmarks/bench_stack.py [--slices 200] [--side 1024] [--big 10000]
                                               [--only propagate] [--seeds 2,3]
                                               [--weights FILE]

Each scenario runs in its own process so its peak resident set (ru_maxrss) is its own.
Honesty notes, printed with the table: the browsing scenario uses the block-mean stand-in
embedder with SAM's feature shape (256 x 64 x 64), so it measures the store and the cache,
not a model; the first-prompt and 10k scenarios use the real vit_t (MobileSAM) architecture
with randomly initialised weights (no download here): same compute and memory as trained ones.
The propagation scenario uses the bundled model's weights file as it is now (it is trained
separately, so its figure changes with it): a synthetic 3D nuclei volume with true labels, the
largest nuclei each prompted with one point on its middle slice and propagated carrying a
click at the previous mask's core with each dense prompt (the previous mask: the default;
none, also without zoom; logits), the default without following the object's move, without
that and the end's own-peak cut, and without either cut too, the settings before the stop
evidence, and, as the reference, the previous
mask's box with its logits (no zoom); IoU with the truth on every slice the nucleus occupies
(a missed slice is 0), and the slices past its ends that got a mask anyway. Then the
nucleus the demo clicks in the widget's 3D sample (denser, textured nuclei; one touches
it), with the default settings and without each of those three.
``--seeds`` picks the volumes; ``--weights FILE`` also runs other weights (a training run's)
with the default settings, beside the shipped ones ("candidate" rows).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _lazy_stack(n: int, side: int):
    """(n, side, side) uint16 dask array, each slice generated on demand (never held whole)."""
    import dask.array as da

    def block(block_info=None):
        s = block_info[None]["chunk-location"][0]
        return np.random.default_rng(s).integers(0, 4000, (1, side, side), dtype=np.uint16)

    return da.map_blocks(block, chunks=((1,) * n, (side,), (side,)), dtype=np.uint16)


def _vit_t_embedder():
    import torch

    from napari_sam.model.sam import build_sam
    from napari_sam.predictor import Predictor
    from napari_sam.stack_embeddings import PredictorEmbedder

    torch.manual_seed(0)
    model = build_sam("vit_t").eval()
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    return PredictorEmbedder(Predictor(model, weights_id="random-vit_t"), (0.0, 4000.0)), weights_mb


def browse(slices: int, side: int, workdir: Path) -> dict:
    from napari_sam.scaleout import embed_all
    from napari_sam.slice_source import SliceSource
    from napari_sam.stack_embeddings import StackEmbeddings
    from napari_sam.testing import BlockMeanEmbedder

    source = SliceSource(_lazy_stack(slices, side))
    fake = BlockMeanEmbedder(channels=256, grid=64, image_size=1024)
    path = workdir / "browse.zarr"
    t0 = time.perf_counter()
    list(embed_all(StackEmbeddings.open(source, fake, path), num_workers=2))
    fill_s = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    stack = StackEmbeddings.open(source, BlockMeanEmbedder(channels=256, grid=64,
                                                           image_size=1024), path)  # fmt: skip
    base, peak, t0 = _rss_mb(), 0.0, time.perf_counter()
    for s in range(slices):
        stack.get(s)
        stack.prefetch(s, radius=1)
        peak = max(peak, _rss_mb())
    per_slice_ms = (time.perf_counter() - t0) / slices * 1e3
    return {"store_mb_per_slice": size / slices / 2**20, "fill_s": fill_s,
            "browse_ms_per_slice": per_slice_ms, "rss_before_mb": base,
            "rss_browse_peak_mb": peak, "recomputed": stack.computed}  # fmt: skip


def first_prompt(slices: int, side: int, workdir: Path) -> dict:
    from napari_sam.slice_source import SliceSource
    from napari_sam.stack_embeddings import StackEmbeddings

    embedder, weights_mb = _vit_t_embedder()
    source = SliceSource(_lazy_stack(slices, side))
    stack = StackEmbeddings.open(source, embedder, workdir / "first.zarr")
    t0 = time.perf_counter()
    stack.get(slices // 2)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    stack.get(slices // 2)
    again = time.perf_counter() - t0
    return {"model_mb": weights_mb, "first_prompt_s": first, "embeddings_computed":
            stack.computed, "same_slice_again_ms": again * 1e3, "peak_mb": _peak_mb()}  # fmt: skip


def big_2d(side: int, workdir: Path) -> dict:
    import zarr

    from napari_sam.slice_source import SliceSource
    from napari_sam.stack_embeddings import StackEmbeddings

    embedder, weights_mb = _vit_t_embedder()
    arr = zarr.create_array(str(workdir / "big.zarr"), shape=(side, side), chunks=(1024, 1024),
                            dtype="uint16")  # fmt: skip
    rng = np.random.default_rng(0)
    for r in range(0, side, 1024):  # written in strips: the whole image is never in memory
        arr[r : r + 1024] = rng.integers(0, 4000, (min(1024, side - r), side), dtype=np.uint16)
    before = _peak_mb()
    source = SliceSource(zarr.open_array(str(workdir / "big.zarr"), mode="r"))
    stack = StackEmbeddings.open(source, embedder, workdir / "big-emb.zarr")
    t0 = time.perf_counter()
    prompts = [np.array([[side * 0.5, side * 0.5]]), np.array([[side * 0.25, side * 0.8]])]
    for pts in prompts:
        tile, embedding = stack.get_at(0, pts)
        embedder.predictor.predict(embedding, _point_prompt(stack.grid[tile].to_local(pts)))
    return {"tiles": stack.grid.n_tiles, "tile": stack.grid.tile, "halo": stack.grid.halo,
            "embeddings_computed": stack.computed, "two_prompts_s": time.perf_counter() - t0,
            "peak_mb_before": before, "peak_mb": _peak_mb(), "model_mb": weights_mb}  # fmt: skip


def propagation(seeds: str = "2", objects: int = 3, weights: str | None = None) -> dict:
    from napari_sam.predictor import Predictor
    from napari_sam.propagation import deepest_point
    from napari_sam.sample_data import synthetic_3d
    from napari_sam.slice_source import SliceSource, sample_limits
    from napari_sam.stack_embeddings import PredictorEmbedder, StackEmbeddings
    from napari_sam.training.synthetic import EASY_STYLE, synthetic_nuclei
    from napari_sam.transforms import ObjectMask

    predictor = Predictor.load("bundled", device="cpu", precision="fp32")
    # the default (the click with the previous mask as dense prompt, moved with the object,
    # and the stop evidence and both cuts), the same without following the object's move,
    # without that and the end's own-peak cut, and without either cut too, the click with
    # each other dense prompt, the box + logits carry, and the defaults before the stop
    # evidence (a click alone, stops on predicted IoU and overlap)
    before = {"min_score": 0.5, "min_contrast": 0.0, "max_rise": 0.0, "max_growth": 0.0,
              "min_stability": 0.0, "edge_level": 0.0, "end_level": 0.0, "max_shift": 0}
    variants = {"default": ("mask", "point", "auto", {}),
                "no_max_shift": ("mask", "point", "auto", {"max_shift": 0}),
                "no_end_level": ("mask", "point", "auto", {"max_shift": 0, "end_level": 0.0}),
                "no_cuts": ("mask", "point", "auto", {"max_shift": 0, "edge_level": 0.0,
                                                      "end_level": 0.0}),
                "click_only": ("none", "point", "auto", {}),
                "click_only_nozoom": ("none", "point", "off", {}),
                "logits": ("logits", "point", "auto", {}),
                "box+logits": ("logits", "box", "off", {}),
                "previous_default": ("none", "point", "auto", before)}  # fmt: skip
    models = {name: predictor for name in variants}
    if weights:  # other weights with the default settings, beside the shipped ones
        variants["candidate"] = variants["default"]
        models["candidate"] = Predictor.load(weights, device="cpu", precision="fp32")
    ious: dict[str, list[float]] = {name: [] for name in variants}
    seconds = dict.fromkeys(variants, 0.0)
    extra = dict.fromkeys(variants, 0)
    embed_s, n_slices, n_objects = 0.0, 0, 0
    for seed in (int(s) for s in seeds.split(",")):
        volume = synthetic_nuclei((24, 192, 192), seed=seed, style=EASY_STYLE, anisotropy=2.0)
        source = SliceSource(volume.image)
        stacks = {}
        for model in set(models.values()):
            stacks[model] = StackEmbeddings.open(
                source, PredictorEmbedder(model, sample_limits(source)), cache_size=source.n_slices)
            t0 = time.perf_counter()
            for s in range(source.n_slices):
                stacks[model].get(s)
            if model is predictor:
                embed_s += time.perf_counter() - t0
        n_slices += source.n_slices
        ids, sizes = np.unique(volume.labels[volume.labels > 0], return_counts=True)
        chosen = ids[np.argsort(sizes)[::-1][:objects]]
        n_objects += len(chosen)
        for name, (dense, carry, zoom, options) in variants.items():
            t0 = time.perf_counter()
            for obj in chosen:
                truth = volume.labels == obj
                zs = np.nonzero(truth.any((1, 2)))[0]
                mid = int(zs[len(zs) // 2])
                point = deepest_point(ObjectMask(truth[mid], (0, 0), truth[mid].shape))
                found = _propagated(stacks[models[name]], models[name], mid, point,
                                    dense=dense, carry=carry, zoom=zoom, **options)  # fmt: skip
                ious[name] += [(found[z] & truth[z]).sum() / (found[z] | truth[z]).sum()
                               for z in zs]  # fmt: skip
                # slices past the nucleus's ends that got a mask (not in the IoU figures)
                extra[name] += int(np.sum(found.any((1, 2)) & ~truth.any((1, 2))))
            seconds[name] += time.perf_counter() - t0
    row: dict = {"objects": n_objects, "embed_s_per_slice": embed_s / n_slices}
    for name, values in ious.items():
        row[f"{name}_iou_mean"] = float(np.mean(values))
        row[f"{name}_iou_min"] = float(np.min(values))
        row[f"{name}_slices>=0.85"] = f"{int(np.sum(np.array(values) >= 0.85))}/{len(values)}"
        row[f"{name}_slices_past_the_ends"] = extra[name]
        row[f"{name}_decode_s"] = seconds[name]
    # the widget's 3D sample (denser, textured): the nucleus the demo clicks (the brightest
    # pixel of slice 16), embedded with the data's range as napari's contrast
    sample = synthetic_3d()
    image, labels = sample.image, sample.labels
    r, c = np.unravel_index(np.argmax(image[16]), image.shape[1:])
    nucleus = labels == labels[16, r, c]
    limits = (float(image.min()), float(image.max()))
    for name in [name for name in ("default", "no_max_shift", "no_end_level", "no_cuts",
                                   "candidate")
                 if name in models]:  # fmt: skip
        model = models[name]
        stack = StackEmbeddings.open(SliceSource(image), PredictorEmbedder(model, limits))
        found = _propagated(stack, model, 16, (r, c), **variants[name][3])
        values = [(found[z] & nucleus[z]).sum() / (found[z] | nucleus[z]).sum()
                  for z in np.nonzero(nucleus.any((1, 2)))[0]]  # fmt: skip
        key = {"default": "sample"}.get(name, f"{name}_sample")
        row[f"{key}_iou_mean"] = float(np.mean(values))
        row[f"{key}_iou_min"] = float(np.min(values))
        row[f"{key}_slices>=0.85"] = f"{int(np.sum(np.array(values) >= 0.85))}/{len(values)}"
        row[f"{key}_slices_past_the_ends"] = int(np.sum(found.any((1, 2)) & ~nucleus.any((1, 2))))
    return row


def _propagated(stack, predictor, position: int, point, **config) -> np.ndarray:
    """(Z, H, W) bool: the object clicked at ``point`` on slice ``position``, propagated."""
    from napari_sam.jobs import drain
    from napari_sam.prompts import Prompt
    from napari_sam.propagation import PropagationConfig, propagate

    n = stack.source.n_slices
    result = drain(propagate(stack, predictor, {position: Prompt.from_points([point])},
                           slices=range(n), config=PropagationConfig(**config)))  # fmt: skip
    return result.to_array(n)


def _point_prompt(points_rc):
    from napari_sam import prompts

    return prompts.Prompt.from_points(points_rc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--big", type=int, default=10_000)
    parser.add_argument("--only", nargs="*", help="scenarios to run (default: all)")
    parser.add_argument("--seeds", default="2", help="propagation: volume seeds, e.g. 3,4,5")
    parser.add_argument("--objects", type=int, default=3, help="propagation: nuclei per volume")
    parser.add_argument("--weights", help="propagation: also other weights (default settings)")
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        workdir = Path(args.workdir)
        runs = {"browse": lambda: browse(args.slices, args.side, workdir),
                "first": lambda: first_prompt(args.slices, args.side, workdir),
                "big": lambda: big_2d(args.big, workdir),
                "propagate": lambda: propagation(args.seeds, args.objects, args.weights)}  # fmt: skip
        print(json.dumps(runs[args.scenario](), default=str))
        return
    workdir = Path(tempfile.mkdtemp(prefix="napari-sam-bench-"))
    results = {}
    try:
        for scenario in args.only or ("browse", "first", "big", "propagate"):
            cmd = [sys.executable, __file__, "--scenario", scenario, "--workdir", str(workdir),
                   "--slices", str(args.slices), "--side", str(args.side), "--big", str(args.big),
                   "--seeds", args.seeds, "--objects", str(args.objects)]  # fmt: skip
            cmd += ["--weights", args.weights] if args.weights else []
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                results[scenario] = {"error": out.stderr.strip().splitlines()[-1]}
            else:
                results[scenario] = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(__doc__.split("\n\n")[-1].strip(), "\n")
    print(f"{'scenario':<8} {'measure':<38} {'value':>8}   target")
    targets = {"store_mb_per_slice": "~2 MiB", "rss_browse_peak_mb": "< model + 1024",
               "embeddings_computed": "1 (not the stack)", "peak_mb": "< 4096 (big)",
               "default_iou_mean": ">= 0.85", "default_slices>=0.85": "all",
               "default_slices_past_the_ends": "0"}  # fmt: skip
    for scenario, row in results.items():
        for key, value in row.items():
            text = f"{value:.2f}" if isinstance(value, float) else str(value)
            print(f"{scenario:<8} {key:<38} {text:>8}   {targets.get(key, '')}")


if __name__ == "__main__":
    main()

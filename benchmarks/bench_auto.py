"""Segment everything: the three modes side by side, and ours against the references.

``--table modes`` (the default): AMG, AIS and APG with the bundled model and its decoder, each
with the model's own settings, on ``../shared/foreign`` 2D beside our generator's held-out
images and the package's 2D sample: F1@0.5 and seconds per image, embedding included. Then,
with the same random vit_b weights (SAM and a micro-sam-sized decoder), AIS by us and by
micro-sam (segment_anything's predictor, micro-sam's DecoderAdapter and its post-processing;
bioimage_cpp's primitives are scipy / skimage stand-ins, tests/microsam_oracle.py) on one
512 x 512 image: the speed ratio.

``--table parity``: ours against the official ``SamAutomaticMaskGenerator.generate``.

Same weights (the bundled model, or ``--weights FILE``; the official Sam is built from the
same config and loaded with the same state dict), same image (synthetic nuclei, uint8 RGB),
same settings, one run each, in this process. Prints a table: wall time, masks, parity
(fraction of each side's masks matched by the other at IoU >= 0.9), and F1 at IoU 0.5 of our
painted labels against the synthetic truth (with the settings run and with the nuclei preset).

    .venv/bin/python benchmarks/bench_auto.py [--table modes] [--skip-amg] [--threads 2]
    .venv/bin/python benchmarks/bench_auto.py --table parity [--size 1024]
        [--points-per-side 32] [--f1-images 10]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _reference import make_reference_importable

REPO = Path(__file__).resolve().parents[1]
make_reference_importable()

from napari_sam.automatic import PRESETS, config_labels, generate_masks  # noqa: E402
from napari_sam.model.checkpoints import load_model  # noqa: E402
from napari_sam.predictor import Predictor  # noqa: E402
from napari_sam.training.augment import normalise  # noqa: E402
from napari_sam.training.synthetic import synthetic_nuclei  # noqa: E402
from test_automatic_parity import matched_fraction, official_sam  # noqa: E402


def match_counts(pred: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> tuple[int, int, int]:
    """(matches at IoU > iou, objects in ``pred``, objects in ``truth``); same shapes."""
    n_pred, n_truth = len(np.unique(pred[pred > 0])), len(np.unique(truth[truth > 0]))
    both = (pred > 0) & (truth > 0)
    if not both.any():
        return 0, n_pred, n_truth
    pairs, inter = np.unique(np.stack([pred[both], truth[both]]), axis=1, return_counts=True)
    ious = inter / (np.bincount(pred.ravel())[pairs[0]] + np.bincount(truth.ravel())[pairs[1]]
                    - inter)  # fmt: skip
    return int((ious > iou).sum()), n_pred, n_truth  # IoU > 0.5 matches are one to one


def f1_from(counts: list[tuple[int, int, int]]) -> float:
    """F1 pooled over images: 2 * matches / (predicted + true objects)."""
    tp, n_pred, n_truth = (sum(c[i] for c in counts) for i in range(3))
    return 1.0 if n_pred + n_truth == 0 else 2 * tp / (n_pred + n_truth)


def f1_at(pred: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> float:
    """F1 of instance labels ``pred`` against ``truth`` (same shape), matches at IoU > iou."""
    return f1_from([match_counts(pred, truth, iou)])


def run_nuclei(
    predictor: Predictor, rgb: np.ndarray, name: str = "nuclei"
) -> tuple[list, np.ndarray]:
    """Preset ``name`` on ``rgb`` (H, W, 3) uint8: its masks and their labels (H, W)."""
    preset = PRESETS[name]
    masks = generate_masks(predictor, rgb, preset, rgb=True)
    return masks, config_labels(masks, rgb.shape[:2], preset)


def nuclei_f1(
    predictor: Predictor, size: int, seeds: range, name: str = "nuclei"
) -> tuple[float, int]:
    """Pooled F1@0.5 of preset ``name`` on synthetic images of these seeds; (F1, nuclei)."""
    counts = []
    for seed in seeds:
        synth = synthetic_nuclei((size, size), seed=seed)
        labels = run_nuclei(predictor, to_rgb(synth.image), name)[1]
        counts.append(match_counts(labels, synth.labels))
        print(f"  seed {seed}: {counts[-1][2]} nuclei, {counts[-1][1]} objects, "
              f"{counts[-1][0]} matched, F1@0.5 {f1_from(counts[-1:]):.3f}", flush=True)
    return f1_from(counts), sum(c[2] for c in counts)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) any dtype -> (H, W, 3) uint8, percentiles 1-99.8 to 0-255."""
    return np.repeat(normalise(image).astype(np.uint8)[..., None], 3, axis=2)


def auto_counts(predictor, images, config) -> tuple[list[tuple[int, int, int]], list[float]]:
    """``segment_everything`` on each (image, true labels): the match counts
    (:func:`match_counts`) and seconds of each image."""
    from napari_sam.automatic import segment_everything

    counts, seconds = [], []
    for image, labels in images:
        t0 = time.perf_counter()
        found = segment_everything(predictor, image, config)
        seconds.append(time.perf_counter() - t0)
        counts.append(match_counts(found, labels))
    return counts, seconds


def modes_table(skip_amg: bool, decoders: list[str | None], precision: str = "auto") -> None:
    """AMG / AIS / APG on foreign, ours and the sample (the bundled model and its decoder;
    each of ``decoders`` in turn where given, None for the shipped one), the encoder and the
    instance decoder in ``precision``."""
    from bench_foreign import DEFAULT_FOREIGN, cpu_line, foreign_2d, ours_2d

    from napari_sam.automatic import auto_config
    from napari_sam.sample_data import synthetic_2d

    sample = synthetic_2d()
    sets = {"foreign": foreign_2d(DEFAULT_FOREIGN), "ours": ours_2d(),
            "sample": [(sample.image, sample.labels)]}  # fmt: skip
    print(cpu_line())
    print("bundled model; F1@0.5 (found / true), median seconds per image, embedding included")
    for decoder in decoders:
        predictor = Predictor.load("bundled", device="cpu", decoder=decoder, precision=precision)
        print(f"{predictor.config.name}, decoder: {decoder or 'shipped'}, precision {precision} "
              f"({predictor.model.compute_dtype})")  # fmt: skip
        print(f"{'mode':<6}" + "".join(f"{name:>30}" for name in sets))
        for mode in ("ais", "apg") if skip_amg else ("amg", "ais", "apg"):
            config = auto_config(predictor, mode)
            cells = []
            for images in sets.values():
                counts, seconds = auto_counts(predictor, images, config)
                n_found, n_true = sum(c[1] for c in counts), sum(c[2] for c in counts)
                cells.append(f"{f1_from(counts):.3f} ({n_found}/{n_true}) "
                             f"{np.median(seconds):.2f}s")  # fmt: skip
            print(f"{mode:<6}" + "".join(f"{c:>30}" for c in cells), flush=True)


def micro_sam_ais_speed(repeats: int = 3) -> None:
    """AIS with the same random vit_b weights, ours against micro-sam's, on one 512 x 512
    image (best of ``repeats``)."""
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from segment_anything import SamPredictor

    from microsam_oracle import micro_sam_ais_generate, micro_sam_decoder_api
    from napari_sam.automatic import DecoderModeConfig, segment_everything
    from napari_sam.model.instance_decoder import InstanceDecoder, InstanceDecoderConfig
    from napari_sam.model.sam import build_sam

    torch.manual_seed(0)
    model = build_sam("vit_b").eval()
    decoder = InstanceDecoder(InstanceDecoderConfig.for_sam(model.config))
    ours = Predictor(model, instance_decoder=decoder)
    official = official_sam(model)
    unetr = micro_sam_decoder_api().get_unetr(official.image_encoder)
    adapter = micro_sam_decoder_api().get_decoder(
        official.image_encoder, decoder.state_dict()).eval()  # fmt: skip
    del unetr
    generate = micro_sam_ais_generate()
    rgb = to_rgb(synthetic_nuclei((512, 512), seed=7).image)
    reference = SamPredictor(official)

    def theirs() -> np.ndarray:
        with torch.inference_mode():
            reference.set_image(rgb)
            maps = adapter(reference.features, tuple(reference.input_size),
                           tuple(reference.original_size))[0].numpy()  # fmt: skip
        return generate(*maps)

    def mine() -> np.ndarray:
        return segment_everything(ours, rgb, DecoderModeConfig(mode="ais"), rgb=True)

    times = {}
    for name, run in (("micro-sam AIS", theirs), ("napari-sam AIS", mine)):
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            labels = run()
            best = min(best, time.perf_counter() - t0)
        times[name] = best
        print(f"  {name:<16} {best:7.2f} s  ({len(np.unique(labels)) - 1} objects)", flush=True)
    ratio = times["micro-sam AIS"] / times["napari-sam AIS"]
    print(f"vit_b random weights, 512 x 512: micro-sam / napari-sam time {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="modes", choices=("modes", "parity"))
    parser.add_argument("--skip-amg", action="store_true", help="modes: AIS and APG only")
    parser.add_argument("--decoder", action="append", metavar="FILE",
                        help="modes: a decoder file to compare with the shipped one (repeatable)")
    parser.add_argument("--precision", default="auto", help="modes: auto, fp32, bf16")
    parser.add_argument("--skip-micro-sam", action="store_true",
                        help="modes: no vit_b speed comparison")
    parser.add_argument("--weights", default=str(REPO / "src/napari_sam/weights/vit_nano.pt"))
    parser.add_argument("--size", type=int, default=1024, help="image side (pixels)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--points-per-side", type=int, default=None)
    parser.add_argument("--pred-iou-thresh", type=float, default=None)
    parser.add_argument("--stability-score-thresh", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-nuclei", action="store_true", help="skip the nuclei-preset F1 run")
    parser.add_argument("--nuclei-preset", default="nuclei", choices=sorted(PRESETS),
                        help="the preset of the F1 runs (nuclei-bundled: tuned for vit_nano)")
    parser.add_argument("--f1-images", type=int, default=0, metavar="K",
                        help="then the nuclei preset's F1 pooled over K more images (seeds after"
                        " --seed)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.table == "modes":
        modes_table(args.skip_amg, [None, *(args.decoder or [])], args.precision)
        if not args.skip_micro_sam:
            micro_sam_ais_speed()
        return

    loaded = load_model(args.weights)
    model = loaded.model
    official = official_sam(model)
    config = PRESETS[args.preset].with_values(
        points_per_side=args.points_per_side, pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
    )
    synth = synthetic_nuclei((args.size, args.size), seed=args.seed)
    rgb = to_rgb(synth.image)
    gray = rgb[..., 0]
    predictor = Predictor(model)

    from segment_anything import SamAutomaticMaskGenerator

    with torch.inference_mode():
        t0 = time.perf_counter()
        ours = generate_masks(predictor, rgb, config, rgb=True)
        t1 = time.perf_counter()
        reference = SamAutomaticMaskGenerator(official, **config.official_kwargs()).generate(rgb)
        t2 = time.perf_counter()
    a = np.stack([m.mask.to_array() for m in ours]) if ours else np.zeros((0, *gray.shape))
    b = (np.stack([r["segmentation"] for r in reference]) if reference
         else np.zeros((0, *gray.shape)))  # fmt: skip
    ours_matched, ref_matched = matched_fraction(a, b) if len(a) and len(b) else (
        float(len(a) == len(b)), float(len(a) == len(b)))  # fmt: skip
    f1 = f1_at(config_labels(ours, gray.shape, config), synth.labels)
    nuclei_masks, f1_nuclei, t3 = [], float("nan"), 0.0
    t4 = t3
    if not args.no_nuclei:
        t3 = time.perf_counter()
        nuclei_masks, labels = run_nuclei(predictor, rgb, args.nuclei_preset)
        t4 = time.perf_counter()
        f1_nuclei = f1_at(labels, synth.labels)

    print(f"weights {loaded.name} ({loaded.architecture}), image {args.size}x{args.size} "
          f"synthetic nuclei seed {args.seed} ({synth.labels.max()} nuclei), "
          f"preset {args.preset}, points/side {config.points_per_side}, predicted IoU > "
          f"{config.pred_iou_thresh:g}, stability >= {config.stability_score_thresh:g}, "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"{'run':<34}{'seconds':>9}{'masks':>7}{'matched':>9}{'F1@0.5':>8}")
    print(f"{'official SamAutomaticMaskGenerator':<34}{t2 - t1:>9.2f}{len(reference):>7}"
          f"{ref_matched:>9.3f}{'':>8}")  # fmt: skip
    print(f"{'napari-sam generate_masks':<34}{t1 - t0:>9.2f}{len(ours):>7}"
          f"{ours_matched:>9.3f}{f1:>8.3f}")  # fmt: skip
    print(f"{'napari-sam, ' + args.nuclei_preset + ' preset':<34}{t4 - t3:>9.2f}"
          f"{len(nuclei_masks):>7}"
          f"{'':>9}{f1_nuclei:>8.3f}")  # fmt: skip
    print(f"speed-up (official / ours, same settings): {(t2 - t1) / (t1 - t0):.2f}x")
    if args.f1_images:
        seeds = range(args.seed + 1, args.seed + 1 + args.f1_images)
        with torch.inference_mode():
            f1_pooled, n = nuclei_f1(predictor, args.size, seeds, args.nuclei_preset)
        print(f"{args.nuclei_preset} preset on {len(seeds)} more images (seeds "
              f"{seeds.start}-{seeds.stop - 1}, {n} nuclei): F1@0.5 {f1_pooled:.3f}")


if __name__ == "__main__":
    main()

"""Adapting the model to the user's objects (``napari_sam.training.adapt``): 10 committed
nuclei per image, a time budget, then click and box mIoU on the image's other nuclei,
adapted beside the base model in the same run; on ``../shared/foreign`` 2D and on our
generator's held-out images that hold at least 40 nuclei. Means are printed per image and
pooled over the nuclei.

The committed nuclei are drawn at random (``--seed``); the prompts are the plugin's default
path (``segment_plane``: zoom and mask choice as the model says), a tight box and a click
at each nucleus's deepest pixel.

    .venv/bin/python benchmarks/bench_adapt.py [--threads 2] [--budget 60]
        [--target decoder|decoder+encoder] [--part all|heads] [--images 4] [--sets foreign,ours]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import get_args

import numpy as np
import torch
from bench_foreign import DEFAULT_FOREIGN, cpu_line, foreign_2d, ours_2d

from napari_sam.image import percentile_limits
from napari_sam.predictor import Predictor
from napari_sam.training.adapt import (
    AdaptSettings,
    AdaptTarget,
    CommittedPlane,
    DecoderPart,
    adapt,
)
from napari_sam.training.data import ImagePair
from napari_sam.training.evaluate import EvalObject, evaluate_prompting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--budget", type=float, default=AdaptSettings.budget_s)
    parser.add_argument("--target", default=AdaptSettings.target,
                        choices=get_args(AdaptTarget))  # fmt: skip
    parser.add_argument("--part", default=AdaptSettings.decoder_part, choices=get_args(DecoderPart),
                        help="which part of the mask decoder learns")  # fmt: skip
    parser.add_argument("--lr", type=float, default=AdaptSettings.lr)
    parser.add_argument("--per-step", type=int, default=AdaptSettings.objects_per_step)
    parser.add_argument("--corrective", type=int, default=AdaptSettings().rounds.corrective)
    parser.add_argument("--box-prob", type=float, default=AdaptSettings().rounds.box_prob,
                        help="share of trained objects prompted with a box (the rest clicks)")
    parser.add_argument("--centre-prob", type=float, default=AdaptSettings().rounds.centre_prob,
                        help="share of first clicks at the object's deepest pixel (the rest "
                             "anywhere inside)")  # fmt: skip
    parser.add_argument("--zoom-share", type=float, default=AdaptSettings.zoom_share)
    parser.add_argument("--pick-weight", type=float, default=AdaptSettings.pick_weight,
                        help="weight of the ranking loss on a click's four masks")
    parser.add_argument("--no-choice", action="store_true",
                        help="do not fit the mask choice to the committed objects")
    parser.add_argument("--committed", type=int, default=10)
    parser.add_argument("--images", type=int, default=4, help="images per set")
    parser.add_argument("--sets", default="foreign,ours")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = replace(AdaptSettings().rounds, corrective=args.corrective, box_prob=args.box_prob,
                     centre_prob=args.centre_prob)  # fmt: skip
    settings = AdaptSettings(budget_s=args.budget, target=args.target, lr=args.lr,
                             decoder_part=args.part,
                             objects_per_step=args.per_step, zoom_share=args.zoom_share,
                             rounds=rounds, fit_choice=not args.no_choice,
                             pick_weight=args.pick_weight)  # fmt: skip
    predictor = Predictor.load("bundled", device="cpu")
    print(cpu_line())
    print(f"adapt: {args.committed} committed nuclei per image, budget {args.budget:g} s, "
          f"target {args.target} ({args.part}), lr {args.lr:g}, {args.per_step} objects per step, "
          f"{args.corrective} corrective rounds, box share {args.box_prob:g}, "
          f"centre clicks {args.centre_prob:g}, "
          f"zoom share {args.zoom_share:g}, pick weight {args.pick_weight:g}")  # fmt: skip
    print(f"{'data':<9}{'image':>6}{'nuclei':>7}{'click base':>11}{'adapted':>8}"
          f"{'box base':>9}{'adapted':>8}{'steps':>6}{'s':>6}  mask choice fitted")  # fmt: skip
    sets = {"foreign": lambda: foreign_2d(DEFAULT_FOREIGN),
            "ours": lambda: ours_2d(args.images, min_nuclei=40)}  # fmt: skip
    for name in args.sets.split(","):
        rows, counts = [], []
        for index, (image, truth) in enumerate(sets[name]()[: args.images]):
            truth = truth.astype(np.int64)
            ids = np.unique(truth[truth > 0])
            rng = np.random.default_rng([args.seed, index])
            chosen = rng.choice(ids, min(args.committed, len(ids) - 1), replace=False)
            committed = np.where(np.isin(truth, chosen), truth, 0)
            pair = ImagePair(image, truth)
            rest = [EvalObject(pair, int(i)) for i in ids if i not in chosen]
            base = evaluate_prompting(predictor, rest)
            start = time.perf_counter()
            plane = CommittedPlane(image, committed, percentile_limits(image))
            adapted = adapt(predictor, [plane], settings)
            seconds = time.perf_counter() - start
            after = evaluate_prompting(adapted.predictor, rest)
            rows.append((base.point_miou, after.point_miou, base.box_miou, after.box_miou))
            counts.append(len(rest))
            print(f"{name:<9}{index:>6}{len(rest):>7}{base.point_miou:>11.3f}"
                  f"{after.point_miou:>8.3f}{base.box_miou:>9.3f}{after.box_miou:>8.3f}"
                  f"{adapted.report.steps:>6}{seconds:>6.0f}  {_choice(adapted.report.choice)}",
                  flush=True)  # fmt: skip
        for label, weights in (("mean", None), ("pooled", counts)):  # per image, per nucleus
            m = np.average(rows, axis=0, weights=weights)
            print(f"{name:<9}{label:>6}{sum(counts) if weights else '':>7}{m[0]:>11.3f}"
                  f"{m[1]:>8.3f}{m[2]:>9.3f}{m[3]:>8.3f}   click {m[1] - m[0]:+.3f}, "
                  f"box {m[3] - m[2]:+.3f}", flush=True)  # fmt: skip


def _choice(choice) -> str:
    """The fitted modes, with the committed objects' mIoU before and after."""
    if choice is None:
        return "-"
    before, after = dict(choice.before), dict(choice.after)
    return ", ".join(f"{f} {m} ({before[f]:.2f}->{after[f]:.2f})" for f, m in choice.modes
                     if f in before)  # fmt: skip


if __name__ == "__main__":
    main()

"""Quality of the bundled model on unseen synthetic nuclei, beside its untrained self and the
classical baseline (Otsu threshold inside the box). Also times a 512 x 512 embedding.

    .venv/bin/python benchmarks/bench_quality.py [--weights FILE] [--count 200]

Rows: the model alone (SAM's decoder on the whole-image embedding: the single-mask output for
a box, the best of three for a click), the same through the plugin's own prompting path
(``segment_plane``: what the widget, CLI and scripts run) without zoom, and with zoom as the
plugin does by default for this model (a small object decoded again on a magnified window).
Targets (issue 9): box mIoU >= 0.85 and centre-point mIoU >= 0.75 on 200 objects.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from napari_sam.model.checkpoints import load_model
from napari_sam.model.sam import build_sam
from napari_sam.predictor import Predictor
from napari_sam.training.evaluate import (
    evaluate,
    evaluate_otsu,
    evaluate_prompting,
    synthetic_eval_set,
)

DEFAULT_WEIGHTS = Path(__file__).parents[1] / "src" / "napari_sam" / "weights" / "vit_nano.pt"
TARGETS = {"box": 0.85, "point": 0.75}


def embed_seconds(model: torch.nn.Module, repeats: int = 5) -> float:
    """Median seconds to embed one (padded) 512 x 512 image."""
    size = model.config.image_size
    x = torch.randn(1, 3, size, size)
    times = []
    with torch.no_grad():
        model.image_encoder(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model.image_encoder(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--count", type=int, default=200, help="objects")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    objects = synthetic_eval_set(args.count)
    loaded = load_model(args.weights)
    torch.manual_seed(0)
    untrained = build_sam(loaded.architecture)
    predictor = Predictor(loaded.model, weights_id=loaded.weights_hash)
    arch = loaded.architecture
    rows = [
        (f"{arch} trained ({args.weights.name}), model alone", evaluate(loaded.model, objects)),
        ("  plugin prompting path, zoom off", evaluate_prompting(predictor, objects, "off")),
        ("  plugin prompting path, zoom auto (default)",
         evaluate_prompting(predictor, objects, "auto")),
        (f"{arch} before training (random init)", evaluate(untrained, objects)),
    ]
    otsu = evaluate_otsu(objects)
    print(f"{len(objects)} unseen synthetic objects (512 x 512 images, broad style, seed 10000)")
    print(f"{'model':<48} {'box mIoU':>9} {'point mIoU':>11}")
    for name, result in rows:
        print(f"{name:<48} {result.box_miou:>9.3f} {result.point_miou:>11.3f}")
    print(f"{'Otsu threshold inside the box':<48} {otsu:>9.3f} {'-':>11}")
    print(f"{'target (issue 9)':<48} {TARGETS['box']:>9.2f} {TARGETS['point']:>11.2f}")
    seconds = embed_seconds(loaded.model)
    size = loaded.config.image_size
    print(f"embedding a {size} x {size} input: {seconds:.3f} s ({args.threads} thread(s))")


if __name__ == "__main__":
    main()

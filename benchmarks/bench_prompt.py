"""One click -> best mask written into a 1024 x 1024 label array: ours vs official SAM.

Same vit_b random weights in both; the image embedding is computed once (by our encoder)
and given to both, outside the timing. Prints medians and the speed-up, then 50 boxes
decoded as one batch vs one by one.

    .venv/bin/python benchmarks/bench_prompt.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _oracles_on_path() -> None:
    try:
        if importlib.util.find_spec("torchvision") is not None:
            import torchvision.ops  # noqa: F401

            return
    except Exception:
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]
    sys.path.insert(0, str(REPO / "tests" / "oracles"))


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    _oracles_on_path()
    from segment_anything import SamPredictor, sam_model_registry

    from napari_sam.labels import write_mask
    from napari_sam.model.sam import build_sam
    from napari_sam.predictor import Predictor
    from napari_sam.prompts import Prompt

    torch.manual_seed(0)
    ours_model = build_sam("vit_b")
    official_model = sam_model_registry["vit_b"]().eval()
    official_model.load_state_dict(ours_model.state_dict())

    rr, cc = np.mgrid[:1024, :1024]
    image = (80 + 120 * np.exp(-((rr - 500) ** 2 + (cc - 520) ** 2) / 2e4)).astype(np.uint8)
    predictor = Predictor(ours_model)
    start = time.perf_counter()
    embedding = predictor.embed(image)
    embed_s = time.perf_counter() - start

    official = SamPredictor(official_model)
    official.features = embedding.features[None].clone()
    official.original_size = official.input_size = (1024, 1024)
    official.is_image_set = True

    click = Prompt.from_points([[512, 512]])
    labels_ours = np.zeros((1024, 1024), np.uint16)
    labels_ref = np.zeros((1024, 1024), np.uint16)

    def ours_click() -> None:
        result = predictor.predict(embedding, click)
        write_mask(labels_ours, result.masks[0], 1)

    def official_click() -> None:
        masks, scores, _ = official.predict(np.array([[512, 512]]), np.array([1]))
        labels_ref[masks[int(np.argmax(scores))]] = 1

    ours_ms, official_ms = [], []
    for _ in range(3):  # interleave so both see the same machine load
        ours_ms.append(_median_ms(ours_click, args.repeats // 3 + 1))
        official_ms.append(_median_ms(official_click, args.repeats // 3 + 1))
    ours_t, official_t = statistics.median(ours_ms), statistics.median(official_ms)
    agree = np.count_nonzero(labels_ours != labels_ref)

    rng = np.random.default_rng(0)
    corners = rng.integers(0, 900, (50, 2))
    boxes = [Prompt.from_box([r, c, r + 40 + (r % 80), c + 40 + (c % 90)]) for r, c in corners]
    batch_ms = _median_ms(lambda: predictor.predict(embedding, boxes), 3)
    single_ms = _median_ms(lambda: [predictor.predict(embedding, b) for b in boxes], 3)

    print(f"embedding (once, untimed below): {embed_s:.1f} s; torch threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    print()
    print("| one click -> best mask written, 1024 x 1024, vit_b | median ms |")
    print("|---|---|")
    print(f"| official SamPredictor.predict + write | {official_t:.1f} |")
    print(f"| napari-sam Predictor.predict + write_mask | {ours_t:.1f} |")
    print(f"| speed-up | {official_t / ours_t:.2f}x |")
    print(f"| labels differing from official | {agree} px |")
    print()
    print("| 50 boxes | ms |")
    print("|---|---|")
    print(f"| one batch | {batch_ms:.0f} |")
    print(f"| one by one | {single_ms:.0f} |")
    print(f"| batch speed-up | {single_ms / batch_ms:.2f}x |")


if __name__ == "__main__":
    main()

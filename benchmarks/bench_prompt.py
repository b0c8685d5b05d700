"""One click -> best mask written into a 1024 x 1024 label array: ours vs official SAM.

Same vit_b random weights in both; the image embedding is computed once (by our encoder)
and given to both, outside the timing. Ours and the official run interleaved (round-robin,
one call each per round) so both see the same machine load. Reported: wall-clock medians
with the default torch threads, CPU time (user + system, ``resource.getrusage``) medians
with one torch thread (steadier on a shared machine), the decode alone, and 50 boxes
decoded as one batch vs one by one.

    .venv/bin/python benchmarks/bench_prompt.py [--repeats 21] [--fast]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _reference import make_reference_importable

REPO = Path(__file__).resolve().parents[1]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _interleaved(fns: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall ms, CPU ms) per function, calls interleaved round-robin."""
    for fn in fns.values():
        fn()  # warm-up
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, t0 = _cpu_s(), time.perf_counter()
            fn()
            wall[name].append((time.perf_counter() - t0) * 1e3)
            cpu[name].append((_cpu_s() - c0) * 1e3)
    return {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in fns}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--fast", action="store_true", help="fewer repeats, no 1-thread pass")
    args = parser.parse_args()
    make_reference_importable()
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

    coords = torch.tensor([[[512.0, 512.0]]])
    point_labels = torch.ones((1, 1), dtype=torch.int32)

    def official_decode() -> None:  # the official predict_torch without postprocessing
        with torch.inference_mode():
            sparse, dense = official_model.prompt_encoder((coords, point_labels), None, None)
            official_model.mask_decoder(
                official.features, official_model.prompt_encoder.get_dense_pe(), sparse,
                dense, multimask_output=True,
            )  # fmt: skip

    def ours_decode() -> None:
        with torch.inference_mode():
            predictor._decode(embedding, [click])

    clicks = {"official": official_click, "ours": ours_click}
    decodes = {"official": official_decode, "ours": ours_decode}
    repeats = max(3, args.repeats // 3) if args.fast else args.repeats
    threads = torch.get_num_threads()
    click_t = _interleaved(clicks, repeats)
    decode_t = _interleaved(decodes, repeats)
    one_thread = {}
    if not args.fast:
        torch.set_num_threads(1)
        one_thread = {"click": _interleaved(clicks, repeats), "decode": _interleaved(decodes, repeats)}
        torch.set_num_threads(threads)
    differ = np.count_nonzero(labels_ours != labels_ref)

    rng = np.random.default_rng(0)
    corners = rng.integers(0, 900, (50, 2))
    boxes = [Prompt.from_box([r, c, r + 40 + (r % 80), c + 40 + (c % 90)]) for r, c in corners]
    batch = _interleaved(
        {
            "batch": lambda: predictor.predict(embedding, boxes),
            "single": lambda: [predictor.predict(embedding, b) for b in boxes],
        },
        3,
    )

    print(f"embedding (once, untimed below): {embed_s:.1f} s; torch threads {threads}")
    print()
    print("| 1024 x 1024, vit_b, one click | official | napari-sam | speed-up |")
    print("|---|---|---|---|")

    def row(label: str, t: dict, k: int) -> None:
        a, b = t["official"][k], t["ours"][k]
        print(f"| {label} | {a:.1f} ms | {b:.1f} ms | {a / b:.2f}x |")

    row(f"click -> best mask written, wall median ({threads} threads)", click_t, 0)
    row(f"decode only, wall median ({threads} threads)", decode_t, 0)
    if one_thread:
        row("click -> best mask written, CPU time median (1 thread)", one_thread["click"], 1)
        row("decode only, CPU time median (1 thread)", one_thread["decode"], 1)
    print(f"| labels differing from official | | {differ} px | |")
    print()
    print(f"| 50 boxes ({threads} threads) | wall ms | CPU ms |")
    print("|---|---|---|")
    for name, label in (("batch", "one batch"), ("single", "one by one")):
        print(f"| {label} | {batch[name][0]:.0f} | {batch[name][1]:.0f} |")
    ratio = batch["single"][0] / batch["batch"][0]
    print(f"| batch speed-up | {ratio:.2f}x | {batch['single'][1] / batch['batch'][1]:.2f}x |")


if __name__ == "__main__":
    main()

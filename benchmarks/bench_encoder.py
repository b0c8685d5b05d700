"""Image-encoder speed and memory: official ``SamPredictor.set_image`` against ours.

Embeds the same 1024x1024 RGB image with vit_b (random weights, identical in every variant):

- ``official fp32``: segment_anything's ``SamPredictor.set_image``
- ``ours fp32``: ``Sam.encode`` in float32
- ``ours fast``: ``Sam.encode`` in the precision ``resolve_precision("auto")`` picks here
  (bf16 on CPUs with AMX / AVX512-BF16 and on CUDA, else float32)
- ``ours bf16``: forced bf16 (slow on CPUs without native bf16: shown for information)

Each variant runs in its own subprocess so that its peak resident memory (ru_maxrss) is its
own. CPU seconds (process time, all threads) are shown beside wall time: on a shared,
loaded machine they are the steadier measure. Prints the median time, the ratio to the official fp32 run, peak RSS and the max abs
difference of the embedding from the official one.

    python benchmarks/bench_encoder.py [--repeats 3] [--model vit_b] [--variants ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _reference import make_reference_importable

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("official fp32", "ours fp32", "ours fast", "ours bf16")


def _image(size: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)


def run_variant(variant: str, model: str, weights: Path, repeats: int, out: Path) -> None:
    """Child process: time ``repeats`` embeddings, save the last one, print a JSON line."""
    from napari_sam.device import resolve_precision
    from napari_sam.model import build_sam

    image = _image(1024)
    times: list[float] = []
    cpu_times: list[float] = []
    dtype = "float32"
    if variant == "official fp32":
        make_reference_importable()
        from segment_anything import SamPredictor, sam_model_registry

        ref = sam_model_registry[model]()
        ref.load_state_dict(torch.load(weights, weights_only=True))
        predictor = SamPredictor(ref.eval())
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            predictor.set_image(image)
            cpu_times.append(time.process_time() - c0)
            times.append(time.perf_counter() - t0)
        emb = predictor.get_image_embedding()
    else:
        sam = build_sam(model)
        sam.load_state_dict(torch.load(weights, weights_only=True))
        if variant == "ours fast":
            sam.set_compute_dtype(resolve_precision("auto", torch.device("cpu")))
        elif variant == "ours bf16":
            sam.set_compute_dtype(torch.bfloat16)
        dtype = str(sam.compute_dtype).removeprefix("torch.")
        with torch.inference_mode():
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                x = torch.from_numpy(image).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
                emb = sam.encode(sam.normalize(x))  # 1024x1024 already: no resize / pad
                cpu_times.append(time.process_time() - c0)
                times.append(time.perf_counter() - t0)
    torch.save(emb.float().clone(), out)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"times": times, "cpu": cpu_times, "peak_mb": peak_mb, "dtype": dtype}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "WEIGHTS", "OUT"))
    args = parser.parse_args()
    if args.child:
        variant, weights, out = args.child
        run_variant(variant, args.model, Path(weights), args.repeats, Path(out))
        return

    from napari_sam.device import cpu_has_fast_bf16
    from napari_sam.model import build_sam

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.pt"
        torch.manual_seed(0)
        sam = build_sam(args.model)
        with torch.no_grad():  # non-zero relative position tables, like trained weights
            for name, p in sam.named_parameters():
                if "rel_pos" in name:
                    p.normal_(0.0, 0.1)
        torch.save(sam.state_dict(), weights)
        del sam
        results: dict[str, dict] = {}
        for variant in args.variants:
            out = Path(tmp) / f"{variant.replace(' ', '_')}.pt"
            cmd = [sys.executable, __file__, "--model", args.model, "--repeats"]
            cmd += [str(args.repeats), "--child", variant, str(weights), str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                print(f"{variant}: failed\n{proc.stderr[-2000:]}")
                continue
            results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[variant]["embedding"] = torch.load(out, weights_only=True)

    base = results.get("official fp32")
    print(
        f"\n{args.model}, 1024x1024, {torch.get_num_threads()} threads, torch {torch.__version__},"
        f" native bf16: {cpu_has_fast_bf16()}, repeats {args.repeats} (first run included)"
    )
    header = f"{'variant':<15} {'dtype':<9} {'median s':>9} {'min s':>7} {'speedup':>8}"
    header += f" {'CPU s':>7} {'CPU speedup':>11}"
    header += f" {'peak RSS MB':>12} {'max|diff|':>10}"
    print(header)
    for variant, r in results.items():
        med, best = statistics.median(r["times"]), min(r["times"])
        speed = statistics.median(base["times"]) / med if base else float("nan")
        cpu = statistics.median(r["cpu"])
        cpu_speed = statistics.median(base["cpu"]) / cpu if base else float("nan")
        diff = (r["embedding"] - base["embedding"]).abs().max().item() if base else float("nan")
        print(
            f"{variant:<15} {r['dtype']:<9} {med:>9.2f} {best:>7.2f} {speed:>7.2f}x"
            f" {cpu:>7.1f} {cpu_speed:>10.2f}x"
            f" {r['peak_mb']:>12.0f} {diff:>10.2e}"
        )


if __name__ == "__main__":
    main()

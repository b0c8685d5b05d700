#!/bin/sh
# Trains (or, run again, resumes) the control for the candidates v3 and v5: the shipped v1
# weights with the image encoder frozen, finetuned on v1's own synthetic style with nothing
# new (v3's run without its negative clicks). Whatever the 2D figures lose here comes from
# the warm restart and its calibration, not from what a candidate adds (it was the
# calibration: docs/training.md).
# Checkpoints and the loss log go to runs/control/ (git-ignored).
# Usage: sh benchmarks/train_bundled_control.sh   (from the repository root; CPU, one thread)
set -e
mkdir -p runs/control
[ -f runs/control/start_v1.pt ] || cp src/napari_sam/weights/vit_nano.pt runs/control/start_v1.pt
exec .venv/bin/napari-sam train --synthetic 48 --curriculum-steps 200 \
  --model runs/control/start_v1.pt --freeze image_encoder \
  --out runs/control/vit_nano.pt --half --run-dir runs/control \
  --steps 800 --lr 1e-4 --warmup 50 --objects 10 --random-depth 0.75 \
  --checkpoint-every 25 --threads 1 --seed 11

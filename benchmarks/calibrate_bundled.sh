#!/bin/sh
# Calibrates the IoU head of the published bundled weights in place (the masks do not
# change; see docs/training.md). Run after stopping benchmarks/train_bundled.sh: the next
# publish of the training run overwrites the calibrated head.
# Usage: sh benchmarks/calibrate_bundled.sh   (from the repository root; ~5 min on one CPU thread)
set -e
exec .venv/bin/napari-sam calibrate --model src/napari_sam/weights/vit_nano.pt \
  --out src/napari_sam/weights/vit_nano.pt --half --synthetic 24 --points-per-side 8 \
  --steps 400 --rank-weight 0.3 --threads 1 --seed 0

#!/bin/sh
# Trains (or, run again, resumes) the bundled model vit_nano exactly as shipped; see
# docs/training.md. Checkpoints and the loss log go to runs/bundled/ (git-ignored); the
# weights are published to src/napari_sam/weights/vit_nano.pt at every checkpoint.
# Usage: sh benchmarks/train_bundled.sh   (from the repository root; CPU, one thread)
# History: steps 0-1900 ran with --curriculum-steps 5000; the run was resumed at step ~1900
# with 5000 (a slower ramp from easy to broad images: at 1500 the model was still weak on
# typical nuclei when the data reached the broad style).
set -e
exec .venv/bin/napari-sam train --synthetic 48 --curriculum-steps 5000 --model vit_nano --from-scratch \
  --out src/napari_sam/weights/vit_nano.pt --half --run-dir runs/bundled \
  --steps 20000 --lr 8e-4 --warmup 150 --objects 10 --random-depth 0.75 \
  --checkpoint-every 25 --threads 1 --seed 0

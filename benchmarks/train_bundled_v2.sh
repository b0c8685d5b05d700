#!/bin/sh
# Trains (or, run again, resumes) the bundled model v2 candidate: a warm restart from the
# shipped v1 weights on the widened synthetic style ("wide": lobed, pressed together, dim
# beside bright, haze, nucleoli, nuclei down to 5 px, coarse-z stack slices); see
# docs/training.md. runs/v2/start_shipped.pt is a copy of src/napari_sam/weights/vit_nano.pt
# as v1 shipped it. Checkpoints and the loss log go to runs/v2/ (git-ignored).
# Usage: sh benchmarks/train_bundled_v2.sh   (from the repository root; CPU, one thread)
# V2_STEPS=N sets the run's length (default 1600, its first stage; the 2026-12-07 stage resumed
# the step-1600 checkpoint with V2_STEPS=4200).
set -e
exec .venv/bin/napari-sam train --synthetic 48 --curriculum-steps 200 --style wide \
  --volume-share 0.1 --anisotropy 1.5 5 --model runs/v2/start_shipped.pt \
  --out runs/v2/vit_nano.pt --half --run-dir runs/v2 \
  --steps ${V2_STEPS:-1600} --lr 3e-4 --warmup 100 --objects 10 --random-depth 0.75 \
  --checkpoint-every 25 --threads 1 --seed 7

#!/bin/sh
# Trains (or, run again, resumes) the bundled model v4 candidate: the v2 step-4200 weights
# (checkpoints/bundled-v2/vit_nano.pt: wide style and coarse-z slices) trained on, with half
# of the new pool images drawn from v1's broad style again (--broad-share 0.5), so that what
# v1 learned on our generator comes back while the wide style and the ends of nuclei stay;
# a fifth of the refreshes are coarse-z stack slices. See docs/training.md.
# runs/v4/start_v2.pt is a copy of checkpoints/bundled-v2/vit_nano.pt. Checkpoints and the
# loss log go to runs/v4/ (git-ignored).
# Usage: sh benchmarks/train_bundled_v4.sh   (from the repository root; CPU, one thread)
# V4_STEPS=N sets the run's length (default 2400).
set -e
mkdir -p runs/v4
[ -f runs/v4/start_v2.pt ] || cp checkpoints/bundled-v2/vit_nano.pt runs/v4/start_v2.pt
exec .venv/bin/napari-sam train --synthetic 48 --curriculum-steps 200 --style wide \
  --broad-share 0.5 --volume-share 0.2 --anisotropy 1.5 5 --model runs/v4/start_v2.pt \
  --out runs/v4/vit_nano.pt --half --run-dir runs/v4 \
  --steps ${V4_STEPS:-2400} --lr 2e-4 --warmup 50 --objects 10 --random-depth 0.75 \
  --checkpoint-every 25 --threads ${V4_THREADS:-1} --seed 13

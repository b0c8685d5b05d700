#!/bin/sh
# Trains (or, run again, resumes) the bundled model v3 candidate: the shipped v1 weights with
# the image encoder frozen, finetuned on v1's synthetic style with negative clicks on touching
# neighbours (half of the clicked objects that touch one get a positive click inside and a
# negative click on the neighbour); see docs/training.md. runs/v3/start_shipped.pt is a copy
# of src/napari_sam/weights/vit_nano.pt as v1 shipped it. Checkpoints and the loss log go to
# runs/v3/ (git-ignored).
# Usage: sh benchmarks/train_bundled_v3.sh   (from the repository root; CPU, one thread)
set -e
exec .venv/bin/napari-sam train --synthetic 48 --curriculum-steps 200 \
  --model runs/v3/start_shipped.pt --freeze image_encoder --neighbour-negatives 0.5 \
  --out runs/v3/vit_nano.pt --half --run-dir runs/v3 \
  --steps 800 --lr 1e-4 --warmup 50 --objects 10 --random-depth 0.75 \
  --checkpoint-every 25 --threads 1 --seed 11

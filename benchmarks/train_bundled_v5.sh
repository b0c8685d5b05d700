#!/bin/sh
# Trains (or, run again, resumes) the bundled model v5 candidate: v1's weights (the shipped
# src/napari_sam/weights/vit_nano.pt, copied to runs/v5/start_v1.pt) with the image encoder
# frozen, so every embedding stays v1's; the prompt encoder and mask decoder train on v1's
# broad style, half of the new pool images slices of coarse-z stacks blurred 1-4x more along
# z than across (--axial-blur, as microscopes blur), and 80 % of the objects on those slices
# that are at least as large on a slice next to theirs prompted as a propagation step away
# from their middle prompts them (--carried: that slice's mask as the dense prompt and a
# click at its centre): the ends of nuclei in z. See docs/training.md.
# Checkpoints and the loss log go to runs/v5/ (git-ignored).
# Usage: sh benchmarks/train_bundled_v5.sh   (from the repository root; CPU, one thread)
# V5_STEPS=N sets the run's length (default 1600).
set -e
mkdir -p runs/v5
[ -f runs/v5/start_v1.pt ] || cp src/napari_sam/weights/vit_nano.pt runs/v5/start_v1.pt
exec .venv/bin/napari-sam train --synthetic 48 --refresh-every 4 --curriculum-steps 200 \
  --style broad --volume-share 0.5 --anisotropy 1.5 5 --axial-blur 1 4 --carried 0.8 \
  --model runs/v5/start_v1.pt --freeze image_encoder \
  --out runs/v5/vit_nano.pt --half --run-dir runs/v5 \
  --steps ${V5_STEPS:-1600} --lr 1e-4 --warmup 50 --objects 10 --random-depth 0.75 \
  --checkpoint-every 25 --threads ${V5_THREADS:-1} --seed 21

#!/bin/sh
# Stage 2 of the bundled decoder: continues from the shipped decoder (stage 1,
# benchmarks/train_bundled_decoder.sh) with fresh synthetic images (another seed) and a lower
# peak learning rate. Same data style as stage 1: our generator only, never ../shared/foreign.
# Checkpoints and the loss log go to runs/decoder2/ (git-ignored); run again to resume.
# Usage: sh benchmarks/train_bundled_decoder_stage2.sh   (from the repository root; CPU, one thread)
set -e
exec .venv/bin/napari-sam train --decoder --model bundled \
  --init-decoder src/napari_sam/weights/vit_nano_decoder.pt \
  --synthetic 48 --style wide --volume-share 0.25 --refresh-every 6 --curriculum-steps 1 \
  --out runs/decoder2/vit_nano_decoder.pt --half --run-dir runs/decoder2 \
  --steps "${STEPS:-2000}" --batch 4 --crop 16 --lr 4e-4 --warmup 20 \
  --checkpoint-every 50 --threads 1 --seed 11

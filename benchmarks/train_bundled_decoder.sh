#!/bin/sh
# Trains (or, run again, resumes) the bundled model's instance decoder: micro-sam's UNETR
# decoder with 16 channels at its finest level and an image skip (its finest features read the
# image at full resolution), on the frozen image encoder of the shipped
# vit_nano weights, on our synthetic nuclei only (the wide style: lobed, pressed together,
# dim beside bright, haze; a quarter of the new pool images are slices of coarse-z stacks);
# see docs/automatic.md. Checkpoints and the loss log go to runs/decoder/ (git-ignored); the
# fp16 decoder weights to runs/decoder/vit_nano_decoder.pt at every checkpoint.
# Usage: sh benchmarks/train_bundled_decoder.sh   (from the repository root; CPU, one thread)
set -e
exec .venv/bin/napari-sam train --decoder --model bundled --decoder-features 16 --image-skip \
  --synthetic 48 --style wide --volume-share 0.25 --refresh-every 6 --curriculum-steps 300 \
  --out runs/decoder/vit_nano_decoder.pt --half --run-dir runs/decoder \
  --steps 1200 --batch 4 --crop 16 --lr 1e-3 --warmup 50 \
  --checkpoint-every 50 --threads 1 --seed 5

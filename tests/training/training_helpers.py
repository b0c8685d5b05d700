"""Shared pieces of the training tests: a tiny SAM configuration that trains in seconds,
an easy synthetic style and a sampler that always gives the same pair."""

from __future__ import annotations

import numpy as np

from napari_sam.model.config import SamConfig, ViTEncoderConfig
from napari_sam.training.data import ImagePair
from napari_sam.training.synthetic import NucleiStyle

# 128 input, 8 x 8 grid, 32 x 32 low-res masks; the standard 256-wide decoder.
TINY = SamConfig(
    "tiny_test",
    ViTEncoderConfig(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=4),
    image_size=128,
)

EASY = NucleiStyle(
    radius=(10.0, 14.0), coverage=(0.2, 0.25), cluster_fraction=(0.0, 0.0), blur=(0.5, 0.5),
    photons=(2000.0, 2000.0), read_noise=(0.0, 0.0), gamma=(1.0, 1.0),
    illumination=(0.0, 0.0), texture=(0.0, 0.0), brightness=(0.8, 1.0),
)



class FixedSampler:
    """Always the same pair."""

    def __init__(self, pair: ImagePair) -> None:
        self.pair = pair

    def __call__(self, rng: np.random.Generator, step: int) -> ImagePair:
        return self.pair

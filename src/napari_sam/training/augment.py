"""Augmentations that suit microscopy, on a 2D pair: flips, 90-degree rotations, random crops
(which, with the resize to the model's input, are the scale jitter), contrast-limit, gamma
and noise jitter. The result is the image on the 0-255 scale SAM models expect.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_sam.image import apply_contrast, percentile_limits
from napari_sam.training.data import ImagePair


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random augmentations; ``AugmentConfig.none()`` switches all off."""

    flips: bool = True
    rot90: bool = True
    crop_fraction: tuple[float, float] = (0.6, 1.0)  # crop side / image side (scale jitter)
    crop_prob: float = 0.3
    low_percentile: tuple[float, float] = (0.0, 3.0)  # contrast limits, as percentiles
    high_percentile: tuple[float, float] = (99.0, 100.0)
    gamma: tuple[float, float] = (0.7, 1.4)
    noise_sigma: tuple[float, float] = (0.0, 6.0)  # additive Gaussian noise, 0-255 scale
    invert_prob: float = 0.0  # bright-field-like images, off for fluorescence

    @staticmethod
    def none() -> AugmentConfig:
        """No augmentation: fixed contrast limits at the 1st / 99.8th percentile."""
        return AugmentConfig(
            flips=False, rot90=False, crop_prob=0.0, low_percentile=(1.0, 1.0),
            high_percentile=(99.8, 99.8), gamma=(1.0, 1.0), noise_sigma=(0.0, 0.0),
        )


def normalise(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """(H, W) float32 image on the 0-255 scale: the ``low`` / ``high`` percentiles of
    ``image`` (any dtype) become the contrast limits 0 and 255, clipped outside. The very
    rules of inference (:func:`~napari_sam.image.percentile_limits`,
    :func:`~napari_sam.image.apply_contrast`): NaN and inf ignored by the percentiles, NaN
    0, a flat image as a flat image is shown to the model."""
    return apply_contrast(image, percentile_limits(image, (low, high)))


def augment(pair: ImagePair, rng: np.random.Generator, config: AugmentConfig) -> ImagePair:
    """A randomly transformed copy of the 2D ``pair``: image (H', W') float32 on 0-255,
    labels (and previous labels, if any) (H', W') of the same dtype, geometry transformed
    identically."""
    if pair.image.ndim != 2:
        raise ValueError(f"augment works on 2D pairs, got {pair.image.shape}")
    image, labels, previous = pair.image, pair.labels, pair.previous
    geometry = [labels] if previous is None else [labels, previous]
    if config.crop_prob > 0 and rng.random() < config.crop_prob:
        frac = rng.uniform(*config.crop_fraction)
        h, w = (max(16, int(s * frac)) for s in image.shape)
        y0 = int(rng.integers(image.shape[0] - h + 1))
        x0 = int(rng.integers(image.shape[1] - w + 1))
        if labels[y0 : y0 + h, x0 : x0 + w].any():
            image = image[y0 : y0 + h, x0 : x0 + w]
            geometry = [g[y0 : y0 + h, x0 : x0 + w] for g in geometry]
    if config.flips:
        if rng.random() < 0.5:
            image, geometry = image[::-1], [g[::-1] for g in geometry]
        if rng.random() < 0.5:
            image, geometry = image[:, ::-1], [g[:, ::-1] for g in geometry]
    if config.rot90:
        k = int(rng.integers(4))
        image, geometry = np.rot90(image, k), [np.rot90(g, k) for g in geometry]
    out = normalise(
        image, rng.uniform(*config.low_percentile), rng.uniform(*config.high_percentile)
    )
    gamma = rng.uniform(*config.gamma)
    if gamma != 1.0:
        out = 255.0 * (out / 255.0) ** gamma
    sigma = rng.uniform(*config.noise_sigma)
    if sigma > 0:
        out = np.clip(out + rng.normal(0, sigma, out.shape).astype(np.float32), 0, 255)
    if config.invert_prob > 0 and rng.random() < config.invert_prob:
        out = 255.0 - out
    labels, *rest = (np.ascontiguousarray(g) for g in geometry)
    return ImagePair(np.ascontiguousarray(out, dtype=np.float32), labels, *rest)

"""Cheap, deterministic stand-ins for tests and benchmarks. Not a model.

:class:`BlockMeanEmbedder` satisfies :class:`napari_sam.stack_embeddings.Embedder`: its "features" are
block means of the image, so they depend on every pixel, cost microseconds, and equal inputs
give equal outputs in any process. It counts its calls.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import torch

from napari_sam.stack_embeddings import EmbedderIdentity


@dataclass(frozen=True)
class FakeEmbedding:
    """``features`` (C, h, w) float32 tensor; sizes (rows, cols)."""

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


@dataclass(eq=False)
class BlockMeanEmbedder:
    """Features (C, g, g) float32: channel c is the g x g block mean of the image (resized
    by nearest neighbour so its long side is ``image_size``) times ``c + 1``, scaled to ~1.

    ``calls`` counts :meth:`embed` calls (per process); ``fail_after`` raises after that many
    calls (to simulate an interruption); ``weights`` goes into the identity.
    """

    channels: int = 8
    grid: int = 16
    image_size: int = 256
    weights: str = "blockmean-v1"
    fail_after: int | None = None
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    @property
    def identity(self) -> EmbedderIdentity:
        return EmbedderIdentity("blockmean", self.weights, f"nearest-{self.image_size}",
                                (self.channels, self.grid, self.grid), self.image_size)  # fmt: skip

    def embed(self, image: np.ndarray) -> FakeEmbedding:
        with self._lock:
            n, self.calls = self.calls, self.calls + 1
        if self.fail_after is not None and n >= self.fail_after:
            raise RuntimeError(f"simulated failure after {self.fail_after} embeddings")
        image = np.asarray(image, dtype=np.float32)
        if image.ndim == 3:
            image = image.mean(axis=-1)
        rows, cols = image.shape
        scale = self.image_size / max(rows, cols)
        h, w = int(rows * scale + 0.5), int(cols * scale + 0.5)
        ri = np.minimum((np.arange(h) / scale).astype(int), rows - 1)
        ci = np.minimum((np.arange(w) / scale).astype(int), cols - 1)
        padded = np.zeros((self.image_size, self.image_size), np.float32)
        padded[:h, :w] = image[np.ix_(ri, ci)]
        b = self.image_size // self.grid
        blocks = padded.reshape(self.grid, b, self.grid, b).mean(axis=(1, 3))
        blocks /= max(float(np.abs(blocks).max()), 1.0)
        feats = blocks[None] * np.arange(1, self.channels + 1, dtype=np.float32)[:, None, None]
        return FakeEmbedding(torch.from_numpy(feats.copy()), (rows, cols), (h, w))

    def pack(self, embedding: FakeEmbedding):
        return embedding.features.numpy(), embedding.original_size, embedding.input_size

    def restore(self, features, original_size, input_size) -> FakeEmbedding:
        return FakeEmbedding(features, tuple(original_size), tuple(input_size))


@dataclass(frozen=True, eq=False)
class TwoKinds:
    """An image of two kinds of round nuclei: ``image`` (H, W) float32, ``labels`` (H, W)
    int32 instance labels, and ``kinds``: label id -> 0 (large and dim) or 1 (small and
    bright)."""

    image: np.ndarray
    labels: np.ndarray
    kinds: dict[int, int]


def two_kinds(shape: tuple[int, int] = (384, 384), seed: int = 0, n_large: int = 14,
              n_small: int = 30) -> TwoKinds:  # fmt: skip
    """Large dim nuclei (radius 13-16 px, brightness 0.35-0.45) and small bright ones (radius
    4.5-6 px, brightness 0.9-1.0) placed apart at random, blurred, with Poisson-like noise:
    the image "find similar" must tell apart by its examples."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    signal = np.zeros(shape, np.float32)
    kinds: dict[int, int] = {}
    wanted = [(0, (13.0, 16.0), (0.35, 0.45))] * n_large + [(1, (4.5, 6.0), (0.9, 1.0))] * n_small
    for kind, (r_lo, r_hi), (b_lo, b_hi) in wanted:
        radius = rng.uniform(r_lo, r_hi)
        for _ in range(200):
            centre = rng.uniform(radius + 2, np.array(shape) - radius - 2)
            disc = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2
            if not ndimage.binary_dilation(disc, iterations=3)[labels > 0].any():
                break
        else:
            continue
        obj = len(kinds) + 1
        labels[disc], kinds[obj] = obj, kind
        signal[disc] = rng.uniform(b_lo, b_hi)
    image = ndimage.gaussian_filter(signal, 1.0) + 0.05
    image = rng.poisson(image * 400).astype(np.float32) / 400
    return TwoKinds(image.astype(np.float32), labels, kinds)

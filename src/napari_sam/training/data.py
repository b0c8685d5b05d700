"""Training data: pairs of an image and its instance labels, from folders, zarr, napari layers
or the synthetic generator, and the sampler that draws one 2D pair per training step.

Every source is a sequence of :class:`ImagePair`; 3D pairs are cut into their 2D z-slices by
:class:`SliceSampler`. No napari import here: layers are read through their ``.data``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from napari_sam.training.synthetic import STYLES, curriculum_style, synthetic_nuclei

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


@dataclass(frozen=True)
class ImagePair:
    """An image and its instance labels.

    ``image``: (H, W) or (Z, H, W), any numeric dtype, one channel; ``labels``: same shape,
    integer, 0 = background, one id per object; ``previous``: for a 2D slice of a stack, the
    labels (H, W) of the slice next to it (same ids), or None: what a propagation step
    carries from one slice to the next (the carried rounds of
    :mod:`napari_sam.training.rounds`).
    """

    image: np.ndarray
    labels: np.ndarray
    previous: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.image.shape != self.labels.shape:
            raise ValueError(
                f"image {self.image.shape} and labels {self.labels.shape} differ in shape"
            )
        if self.previous is not None and (self.image.ndim != 2
                                          or self.previous.shape != self.labels.shape):
            raise ValueError(f"previous labels {self.previous.shape} belong to a 2D pair of "
                             f"the same shape, got image {self.image.shape}")  # fmt: skip
        if self.image.ndim not in (2, 3):
            raise ValueError(f"expected a 2D or 3D single-channel image, got {self.image.shape}")


class PairSampler(Protocol):
    """Draws the 2D training pair of one step (``step`` drives curricula)."""

    def __call__(self, rng: np.random.Generator, step: int) -> ImagePair: ...


def _read(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return np.asarray(tifffile.imread(path))
    from PIL import Image

    return np.asarray(Image.open(path))


def _single_channel(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``image`` as one channel: an (H, W, 3/4) RGB(A) image beside 2D labels is averaged."""
    if image.ndim == labels.ndim + 1 and image.shape[-1] in (3, 4):
        return image[..., :3].astype(np.float32).mean(-1)
    return image


class FolderPairs(Sequence[ImagePair]):
    """Pairs from two folders of TIFF / PNG files matched by file stem (``a.tif`` in
    ``images`` with ``a.tif`` or ``a.png`` in ``labels``). Files are read on access."""

    def __init__(self, images: str | Path, labels: str | Path) -> None:
        images, labels = Path(images), Path(labels)
        for folder in (images, labels):
            if not folder.is_dir():
                raise FileNotFoundError(f"no such folder: {folder}")
        label_files = {p.stem: p for p in labels.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        self.files = [
            (p, label_files[p.stem])
            for p in sorted(images.iterdir())
            if p.suffix.lower() in IMAGE_SUFFIXES and p.stem in label_files
        ]
        if not self.files:
            raise ValueError(f"no image in {images} has a label file of the same name in {labels}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> ImagePair:  # type: ignore[override]
        image_path, label_path = self.files[index]
        labels = _read(label_path)
        return ImagePair(_single_channel(_read(image_path), labels), labels)


class ZarrPairs(Sequence[ImagePair]):
    """Pairs from a zarr group holding two arrays of equal shape, ``(N, H, W)`` or
    ``(N, Z, H, W)`` (one pair per leading index) or a single ``(H, W)`` / ``(Z, H, W)``."""

    def __init__(
        self, path: str | Path, image_key: str = "images", labels_key: str = "labels"
    ) -> None:
        import zarr

        group = zarr.open_group(str(path), mode="r")
        self.images, self.labels = group[image_key], group[labels_key]
        if self.images.shape != self.labels.shape:
            raise ValueError(f"{image_key} {self.images.shape} != {labels_key} {self.labels.shape}")
        self.stacked = self.images.ndim == 4 or (self.images.ndim == 3 and self.images.shape[0] > 1)

    def __len__(self) -> int:
        return self.images.shape[0] if self.stacked else 1

    def __getitem__(self, index: int) -> ImagePair:  # type: ignore[override]
        if not self.stacked:
            return ImagePair(np.asarray(self.images[...]), np.asarray(self.labels[...]))
        return ImagePair(np.asarray(self.images[index]), np.asarray(self.labels[index]))


class LayerPairs(Sequence[ImagePair]):
    """One pair from a napari Image layer and a Labels layer (read through ``.data``; any
    object with a ``.data`` array will do, so napari is never imported here)."""

    def __init__(self, image_layer: Any, labels_layer: Any) -> None:
        self.pair = ImagePair(np.asarray(image_layer.data), np.asarray(labels_layer.data))

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> ImagePair:  # type: ignore[override]
        if index not in (0, -1):
            raise IndexError(index)
        return self.pair


class SliceSampler:
    """Draws a random pair from ``source`` and, for 3D pairs, a random z-slice with objects."""

    def __init__(self, source: Sequence[ImagePair]) -> None:
        if len(source) == 0:
            raise ValueError("the training source holds no image")
        self.source = source

    def __call__(self, rng: np.random.Generator, step: int) -> ImagePair:
        for _ in range(100):
            pair = self.source[int(rng.integers(len(self.source)))]
            if pair.image.ndim == 2:
                if pair.labels.any():
                    return pair
                continue
            with_objects = np.flatnonzero(pair.labels.reshape(pair.labels.shape[0], -1).any(1))
            if len(with_objects):
                return stack_slice(pair.image, pair.labels, int(rng.choice(with_objects)))
        raise ValueError("100 draws from the training source found no labelled object")


def stack_slice(image: np.ndarray, labels: np.ndarray, z: int) -> ImagePair:
    """Slice ``z`` of a stack (image and labels (Z, H, W)), with the labels of a slice next
    to it as its ``previous``: the one below on odd ``z``, above on even ones (objects lie
    anywhere in z, so both ways of travel come up; no random number is drawn, so a run's
    stream of images is the same with or without the carried rounds)."""
    order = (z - 1, z + 1) if z % 2 else (z + 1, z - 1)
    nearby = [n for n in order if 0 <= n < len(labels)]
    return ImagePair(image[z], labels[z], labels[nearby[0]] if nearby else None)


@dataclass(frozen=True)
class SyntheticConfig:
    """The synthetic training stream: a pool of generated images, refreshed as it is used.

    ``sizes``: (min, max) image side in pixels; ``curriculum_steps``: steps over which the
    style goes from easy (large, bright, isolated) to the broad default; ``volume_share``:
    the share of refreshes that generate a 3D stack (``volume_depth`` slices, anisotropy in
    ``anisotropy``) and put ``slices_per_volume`` of its slices in the pool. Slices of a
    stack show what single images do not: nuclei cut near their poles, small and dim under
    the out-of-focus light of the slices next to them, labelled by their true cross-section.
    ``axial_blur``: the range each stack's blur along z is drawn from, relative to its blur
    across (:func:`~napari_sam.training.synthetic.synthetic_nuclei`; a range of one value,
    such as the default (1, 1), draws no random number).
    ``style``: the full-difficulty end of the curriculum, a name in
    :data:`~napari_sam.training.synthetic.STYLES` ("broad", or "wide" for the widened one);
    ``broad_share``: the share of refreshes drawn from the broad style instead, so that a run
    on the wide style keeps seeing what the broad one taught (0 draws no random number for it).
    """

    pool_size: int = 48
    refresh_every: int = 2  # steps between two new images in the pool
    sizes: tuple[int, int] = (192, 640)
    curriculum_steps: int = 3000
    seed: int = 0
    volume_share: float = 0.0
    volume_depth: tuple[int, int] = (8, 16)
    anisotropy: tuple[float, float] = (1.5, 3.0)
    axial_blur: tuple[float, float] = (1.0, 1.0)
    slices_per_volume: int = 4
    style: str = "broad"
    broad_share: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.volume_share <= 1.0:
            raise ValueError(f"volume_share must be in [0, 1], got {self.volume_share}")
        if not 0.0 <= self.broad_share <= 1.0:
            raise ValueError(f"broad_share must be in [0, 1], got {self.broad_share}")
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {sorted(STYLES)}, got {self.style!r}")
        if not 0 < self.anisotropy[0] <= self.anisotropy[1]:
            raise ValueError(f"anisotropy must be 0 < low <= high, got {self.anisotropy}")
        if not 0 < self.axial_blur[0] <= self.axial_blur[1]:
            raise ValueError(f"axial_blur must be 0 < low <= high, got {self.axial_blur}")


class SyntheticSampler:
    """An endless, curriculum-driven stream of synthetic nuclei images (2D).

    Generation (about 0.4 s for 512 x 512) is slower than a small model's step, so images
    come from a pool that gets one fresh image every ``refresh_every`` steps.
    """

    def __init__(self, config: SyntheticConfig = SyntheticConfig(), start_step: int = 0) -> None:
        self.config = config
        self.rng = np.random.default_rng([config.seed, start_step])
        self.pool: list[ImagePair] = []
        while len(self.pool) < config.pool_size:
            self.pool += self._generate(start_step)
        del self.pool[config.pool_size :]

    def _generate(self, step: int) -> list[ImagePair]:
        """New images for the pool: one 2D image, or slices of one 3D stack."""
        cfg = self.config
        difficulty = step / cfg.curriculum_steps if cfg.curriculum_steps > 0 else 1.0
        # Mix in some harder images early and easier ones late, so nothing is forgotten.
        difficulty = float(np.clip(difficulty + self.rng.normal(0, 0.15), 0, 1))
        side = int(self.rng.integers(cfg.sizes[0], cfg.sizes[1] + 1))
        aspect = self.rng.uniform(0.7, 1.0)
        shape = (side, max(64, int(side * aspect)))
        if self.rng.random() < 0.5:
            shape = shape[::-1]
        name = cfg.style
        if cfg.broad_share > 0 and self.rng.random() < cfg.broad_share:
            name = "broad"
        style = curriculum_style(difficulty, hard=STYLES[name])
        if cfg.volume_share == 0 or self.rng.random() >= cfg.volume_share:
            sample = synthetic_nuclei(shape, seed=self.rng, style=style)
            return [ImagePair(sample.image, sample.labels)]
        depth = int(self.rng.integers(cfg.volume_depth[0], cfg.volume_depth[1] + 1))
        anisotropy = float(self.rng.uniform(*cfg.anisotropy))
        low, high = cfg.axial_blur
        axial = low if low == high else float(self.rng.uniform(low, high))
        stack = synthetic_nuclei((depth, *shape), seed=self.rng, style=style,
                                 anisotropy=anisotropy, axial_blur=axial)  # fmt: skip
        picks = self.rng.choice(depth, min(cfg.slices_per_volume, depth), replace=False)
        return [stack_slice(stack.image, stack.labels, int(z)) for z in sorted(picks)]

    def __call__(self, rng: np.random.Generator, step: int) -> ImagePair:
        if step % self.config.refresh_every == 0:
            for pair in self._generate(step):
                self.pool[int(rng.integers(len(self.pool)))] = pair
        for _ in range(100):
            pair = self.pool[int(rng.integers(len(self.pool)))]
            if pair.labels.any():
                return pair
        raise ValueError("the synthetic pool holds no labelled object")


def sample_objects(
    labels: np.ndarray, count: int, rng: np.random.Generator, min_area: int = 9
) -> np.ndarray:
    """(count,) int ids of objects in ``labels`` (H, W) with at least ``min_area`` pixels,
    drawn without replacement while there are enough, then with replacement; empty when the
    image has no such object."""
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    ids = ids[areas >= min_area]
    if len(ids) == 0:
        return ids.astype(np.int64)
    if len(ids) >= count:
        return rng.choice(ids, count, replace=False).astype(np.int64)
    extra = rng.choice(ids, count - len(ids), replace=True)
    return np.concatenate([rng.permutation(ids), extra]).astype(np.int64)

"""Examples of the objects wanted, as features of the image embedding ("find similar").

The examples are objects the user committed (their masks); rejected objects are negative
examples. Each example's feature is the image encoder's output averaged over its pixels
(sampled bilinearly on the embedding's grid), and each one stays its own prototype, so
examples that differ (large and small, dim and bright) each find their own kind.

A region of an image is like the examples when its feature is nearer (cosine similarity)
to a positive prototype than to every negative one; the image's own background, the
cells least like the examples (:attr:`SimilarSettings.background_quantile`), is always
one negative. :func:`likeness` scores a feature, :func:`score_map` a whole window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from napari_sam.transforms import ObjectMask

#: pixels of a mask sampled to pool its feature (evenly, in raster order)
POOL_SAMPLES = 512


@dataclass(frozen=True)
class SimilarSettings:
    """Settings of "find similar" (sizes in pixels of the image).

    Attributes:
        min_distance: prompts at least this far apart, as a fraction of the smallest
            example's radius (sqrt(area / pi)).
        size_tolerance: an object's area must lie within [smallest example / this, largest
            example * this].
        background_quantile: the share of the image least like the examples that forms the
            background's prototype (a negative example).
        likeness_weight: how much likeness to the examples counts beside SAM's predicted IoU
            when one of SAM's masks is chosen per prompt and in ranking the objects (0: the
            likeness only filters; ``benchmarks/sweep_similar.py`` chose 0 and the
            min_distance on the foreign nuclei and ours together, docs/similar.md).
        nms_threshold: mask IoU above which the worse of two objects is dropped.
        min_free_fraction: an object is kept only where this fraction of it is free (not
            committed, not taken by a better object).
        min_contrast: an object must stand out from its surroundings (a ring around it) by
            at least this fraction of the weakest example's contrast, with the examples'
            sign (bright on dark or dark on bright), and by more than half the ring's
            standard deviation.
        decoder_seeds: also prompt at the instance decoder's seeds, where the model has one.
        batch_size: prompts decoded together.
        magnification: how much larger than one resize the model sees the image (tiles of
            their own, as the automatic modes); None: the model's own (its APG settings).
    """

    min_distance: float = 0.9
    size_tolerance: float = 3.0
    background_quantile: float = 0.2
    likeness_weight: float = 0.0
    nms_threshold: float = 0.5
    min_free_fraction: float = 0.5
    min_contrast: float = 0.25
    decoder_seeds: bool = True
    batch_size: int = 32
    magnification: float | None = None

    def __post_init__(self) -> None:
        if self.min_distance <= 0 or self.size_tolerance < 1 or self.batch_size < 1:
            raise ValueError("min_distance must be > 0, size_tolerance >= 1, batch_size >= 1")
        for name in ("background_quantile", "nms_threshold", "min_free_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.magnification is not None and self.magnification < 1:
            raise ValueError("magnification must be >= 1")


@dataclass(frozen=True, eq=False)
class Exemplars:
    """Prototypes of the objects wanted and of those rejected.

    positives: (K, C) float32, unit length, one per example; areas: (K,) their areas in
    pixels; contrasts: (K,) their mean intensity above their surroundings in the model image
    (0-255; :func:`~napari_sam.evidence.object_contrast`); negatives: (J, C) float32 unit (J may be 0) of rejected objects; signature:
    the embeddings' model signature (prototypes are only comparable within one model).
    """

    positives: torch.Tensor
    areas: np.ndarray
    contrasts: np.ndarray
    negatives: torch.Tensor
    signature: str

    def __post_init__(self) -> None:
        if len(self.positives) == 0:
            raise ValueError("find similar needs at least one example object")

    @property
    def radius(self) -> float:
        """The smallest example's radius in pixels (sqrt(area / pi))."""
        return float(np.sqrt(self.areas.min() / np.pi))

    def area_range(self, tolerance: float) -> tuple[float, float]:
        return float(self.areas.min() / tolerance), float(self.areas.max() * tolerance)

    def stands_out(self, difference: float, spread: float, fraction: float) -> bool:
        """Whether an object whose :func:`~napari_sam.evidence.object_contrast` is
        ``(difference, spread)`` stands out as the examples do (see
        :attr:`SimilarSettings.min_contrast`)."""
        sign = 1.0 if np.median(self.contrasts) >= 0 else -1.0
        weakest = float(np.min(np.abs(self.contrasts)))
        return sign * difference >= max(fraction * weakest, 0.5 * spread, 1e-6)


def feature_grid(embedding) -> tuple[torch.Tensor, tuple[float, float]]:
    """An embedding's (C, g, g) float32 features and the factors that take a pixel ``(row,
    col)`` of its image to the grid's normalised [-1, 1] coordinates (before the offset)."""
    geometry = embedding.geometry
    (rows, cols), (h, w) = geometry.original_size, geometry.input_size
    size = geometry.image_size
    return embedding.features.float(), (h / rows / size, w / cols / size)


def _sample(features: torch.Tensor, factors, rc: np.ndarray) -> torch.Tensor:
    """(N, C) features bilinearly sampled at ``rc`` (N, 2) pixel centres of the image."""
    rc = torch.as_tensor(np.asarray(rc, np.float32))
    y = (rc[:, 0] + 0.5) * factors[0] * 2 - 1
    x = (rc[:, 1] + 0.5) * factors[1] * 2 - 1
    grid = torch.stack((x, y), dim=-1)[None, None]
    return F.grid_sample(features[None], grid, align_corners=False, padding_mode="border")[0, :, 0].T


def pooled_feature(embedding, mask: ObjectMask, origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """(C,) unit feature of ``mask`` (in plane coordinates; the embedding's window starts at
    ``origin`` of the plane): the mean of features sampled at up to :data:`POOL_SAMPLES`
    of its pixels."""
    rows, cols = np.nonzero(mask.crop)
    if rows.size == 0:
        raise ValueError("an empty mask has no feature")
    pick = np.linspace(0, rows.size - 1, min(rows.size, POOL_SAMPLES)).astype(np.int64)
    rc = np.stack((rows[pick] + mask.offset[0] - origin[0],
                   cols[pick] + mask.offset[1] - origin[1]), axis=1)  # fmt: skip
    features, factors = feature_grid(embedding)
    return F.normalize(_sample(features, factors, rc).mean(0), dim=0)


def likeness(features: torch.Tensor, exemplars: Exemplars, background: torch.Tensor) -> torch.Tensor:
    """(...,) how much more like the examples than like the rejected objects and the
    background ``features`` (..., C) (unit) are: the best cosine similarity to a positive
    prototype minus the best to a negative one (> 0: like the examples)."""
    negatives = torch.cat([exemplars.negatives, background[None]])
    return (features @ exemplars.positives.T).amax(-1) - (features @ negatives.T).amax(-1)


def background_prototype(embeddings: list, exemplars: Exemplars, quantile: float) -> torch.Tensor:
    """(C,) unit feature of the cells of ``embeddings`` (the windows of one plane) least like
    the examples: those whose similarity to the nearest positive prototype is at most the
    ``quantile`` of all the plane's cells."""
    cells, best = [], []
    for embedding in embeddings:
        features = _valid_cells(embedding)  # (N, C)
        cells.append(features)
        best.append((F.normalize(features, dim=1) @ exemplars.positives.T).amax(-1))
    every = torch.cat(best)
    threshold = torch.quantile(every, quantile) if every.numel() else 0
    total = sum((f[b <= threshold].sum(0) for f, b in zip(cells, best, strict=True)),
                torch.zeros(exemplars.positives.shape[1]))  # fmt: skip
    return F.normalize(total, dim=0)


def _valid_cells(embedding) -> torch.Tensor:
    """(N, C) the embedding's grid cells that lie on the image (not on the padding)."""
    features = embedding.features.float()
    geometry = embedding.geometry
    cell = geometry.image_size / features.shape[-1]
    h, w = (int(np.ceil(n / cell)) for n in geometry.input_size)
    return features[:, :h, :w].reshape(features.shape[0], -1).T


def score_map(embedding, exemplars: Exemplars, background: torch.Tensor) -> np.ndarray:
    """(rows, cols) float32 :func:`likeness` over the embedded window: computed on the
    embedding's grid and sampled bilinearly at every pixel."""
    features, factors = feature_grid(embedding)
    unit = F.normalize(features, dim=0)
    cells = likeness(unit.permute(1, 2, 0), exemplars, background)[None]  # (1, g, g)
    rows, cols = embedding.geometry.original_size
    y = (torch.arange(rows, dtype=torch.float32) + 0.5) * factors[0] * 2 - 1
    x = (torch.arange(cols, dtype=torch.float32) + 0.5) * factors[1] * 2 - 1
    grid = torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1)[None]  # (1, rows, cols, 2)
    out = F.grid_sample(cells[None], grid, align_corners=False, padding_mode="border")
    return out[0, 0].numpy()


def window_contrast(model_image: np.ndarray, mask: ObjectMask,
                    origin: tuple[int, int] = (0, 0)) -> tuple[float, float]:  # fmt: skip
    """:func:`~napari_sam.evidence.object_contrast` of ``mask`` (plane coordinates) on a
    window's model image (h, w, 3) that starts at ``origin`` of the plane (the part of the
    mask off the window is left out)."""
    from napari_sam.evidence import object_contrast

    h, w = model_image.shape[:2]
    full = np.zeros((h, w), bool)
    r0, c0 = mask.offset[0] - origin[0], mask.offset[1] - origin[1]
    a0, b0 = max(r0, 0), max(c0, 0)
    a1, b1 = min(r0 + mask.crop.shape[0], h), min(c0 + mask.crop.shape[1], w)
    if a0 >= a1 or b0 >= b1:
        return 0.0, 0.0
    full[a0:a1, b0:b1] = mask.crop[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0]
    local = ObjectMask(full[a0:a1, b0:b1], (a0, b0), (h, w))
    return object_contrast(lambda box: model_image[box[0] : box[2], box[1] : box[3]], local)

"""The one geometric transform between an image and SAM's input, and its inverse.

Forward (image -> model): resize the longest side to ``image_size`` (bilinear, antialiased),
normalise with the config's pixel statistics, zero-pad bottom / right to a square
(MODELS.md). Prompts follow the same scaling. Inverse (model -> image): low-res mask logits
are upsampled as SAM's ``postprocess_masks`` does (to the padded input size, crop, to the
original size), but only for the mask asked for and only inside the region it can occupy.

Coordinates: napari and numpy speak ``(row, col)``; SAM speaks ``(x, y)``.
:func:`points_to_model` is the only place where one becomes the other.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from napari_sam.model.config import SamConfig

_EPS = 1e-3  # probability clip when turning a binary mask into logits (|logit| ~ 6.9)
_BAND_PIXELS = 1 << 16  # output pixels per band in upsample_mask (256 KB of float32)


@dataclass(frozen=True)
class Geometry:
    """Sizes tying an image to the model input, all ``(rows, cols)``.

    ``original_size``: the image; ``input_size``: the image after resizing its longest side
    to ``image_size`` (before padding); ``image_size``: side of the square model input;
    ``low_res_size``: side of the decoder's mask logits (``image_size // 4`` for SAM).
    """

    original_size: tuple[int, int]
    input_size: tuple[int, int]
    image_size: int
    low_res_size: int

    @classmethod
    def for_image(cls, rows: int, cols: int, config: SamConfig) -> Geometry:
        """The geometry of a ``rows x cols`` image under ``config`` (SAM's rounding)."""
        if rows < 1 or cols < 1:
            raise ValueError(f"an image needs at least one pixel, got {rows} x {cols}")
        scale = config.image_size / max(rows, cols)
        # at least one row / column: a 1 x 5000 image is not resized to nothing
        input_size = (max(1, int(rows * scale + 0.5)), max(1, int(cols * scale + 0.5)))
        return cls((rows, cols), input_size, config.image_size, config.low_res_mask_size)


@dataclass(frozen=True)
class ObjectMask:
    """One object's binary mask at the image's full resolution, kept as its bounding crop.

    ``crop``: (h, w) bool; ``offset``: (row, col) of ``crop[0, 0]`` in the image;
    ``shape``: the image's (rows, cols). An empty mask has a (0, 0) crop.
    """

    crop: np.ndarray
    offset: tuple[int, int]
    shape: tuple[int, int]

    @property
    def area(self) -> int:
        """Number of pixels in the mask."""
        return int(np.count_nonzero(self.crop))

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """``(row0, col0, row1, col1)`` of the crop, end exclusive."""
        r, c = self.offset
        return (r, c, r + self.crop.shape[0], c + self.crop.shape[1])

    def holds(self, points_rc: np.ndarray) -> np.ndarray:
        """(N,) bool: whether the mask covers the pixel nearest each ``(row, col)`` of
        ``points_rc`` (N, 2)."""
        rc = np.rint(np.asarray(points_rc, np.float64).reshape(-1, 2)).astype(np.int64)
        rc -= np.asarray(self.offset, np.int64)
        h, w = self.crop.shape
        inside = (rc[:, 0] >= 0) & (rc[:, 0] < h) & (rc[:, 1] >= 0) & (rc[:, 1] < w)
        out = np.zeros(len(rc), bool)
        out[inside] = self.crop[rc[inside, 0], rc[inside, 1]]
        return out

    def to_array(self) -> np.ndarray:
        """The full (rows, cols) bool mask."""
        full = np.zeros(self.shape, dtype=bool)
        r0, c0, r1, c1 = self.bbox
        full[r0:r1, c0:c1] = self.crop
        return full


# ---------------------------------------------------------------------------- forward


def preprocess(image: np.ndarray, config: SamConfig) -> tuple[torch.Tensor, Geometry]:
    """An (H, W, 3) image on the 0-255 scale as the model's input.

    ``image`` is uint8 (resized in uint8, as the reference does with PIL) or float32 (resized
    in float). Returns a (1, 3, S, S) float32 tensor, normalised and zero-padded bottom /
    right, with S = ``config.image_size``, and the :class:`Geometry` of the image.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"preprocess expects an (H, W, 3) image, got shape {image.shape}")
    geometry = Geometry.for_image(image.shape[0], image.shape[1], config)
    tensor = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)[None]
    if tensor.dtype != torch.uint8:
        tensor = tensor.to(torch.float32)
    if geometry.input_size != geometry.original_size:
        tensor = F.interpolate(
            tensor.contiguous(),
            geometry.input_size,
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
    mean = torch.tensor(config.pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(config.pixel_std, dtype=torch.float32).view(1, 3, 1, 1)
    tensor = (tensor.to(torch.float32) - mean) / std
    h, w = geometry.input_size
    size = geometry.image_size
    return F.pad(tensor, (0, size - w, 0, size - h)), geometry


def points_to_model(points_rc: np.ndarray, geometry: Geometry) -> torch.Tensor:
    """Image ``(row, col)`` pixel coordinates, shape (..., 2), as SAM ``(x, y)`` coordinates
    in model-input pixels, float32 tensor of shape (..., 2). The one row/col -> x/y swap."""
    rc = torch.as_tensor(np.asarray(points_rc, dtype=np.float64))
    (rows, cols), (h, w) = geometry.original_size, geometry.input_size
    x = rc[..., 1] * (w / cols)
    y = rc[..., 0] * (h / rows)
    return torch.stack((x, y), dim=-1).to(torch.float32)


def boxes_to_model(boxes_rc: np.ndarray, geometry: Geometry) -> torch.Tensor:
    """Boxes ``(row0, col0, row1, col1)`` in image pixels, shape (B, 4), as SAM xyxy boxes in
    model-input pixels, float32 tensor (B, 4)."""
    corners = np.asarray(boxes_rc, dtype=np.float64).reshape(-1, 2, 2)
    return points_to_model(corners, geometry).reshape(-1, 4)


def mask_to_logits(mask: np.ndarray, geometry: Geometry) -> torch.Tensor:
    """A full-resolution (H, W) bool mask as a dense prompt: (1, L, L) float32 logits with
    L = ``geometry.low_res_size``, resized and padded like the image (about +-6.9 inside /
    outside, fractional on the border)."""
    if mask.shape != geometry.original_size:
        raise ValueError(
            f"a mask prompt must have the image's shape {geometry.original_size}, got {mask.shape}"
        )
    scale = geometry.low_res_size / geometry.image_size
    h, w = (max(1, int(s * scale + 0.5)) for s in geometry.input_size)
    t = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    t = F.interpolate(t, (h, w), mode="bilinear", align_corners=False, antialias=True)
    t = F.pad(t, (0, geometry.low_res_size - w, 0, geometry.low_res_size - h))
    return fraction_logits(t)[0]


def fraction_logits(fraction: torch.Tensor) -> torch.Tensor:
    """Mask values in [0, 1] (any shape; a resized binary mask, or area fractions) as the
    dense prompt's logits, clipped to about +-6.9 (the clip and logit of
    :func:`mask_to_logits`)."""
    return torch.logit(fraction.clamp(_EPS, 1 - _EPS))


# ---------------------------------------------------------------------------- inverse


def _bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's bilinear (align_corners=False) resampling ``n_in -> n_out`` as 2 taps per
    output: indices (n_out, 2) int64 and weights (n_out, 2) float64."""
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    return np.stack((i0, i1), 1), np.stack((1 - lam, lam), 1)


@functools.lru_cache(maxsize=64)
def _upsample_taps(low_res: int, image_size: int, n_input: int, n_out: int):
    """SAM's two resamplings along one axis (``low_res -> image_size``, crop to ``n_input``,
    ``-> n_out``) composed: up to 4 taps per output pixel (tap columns whose weight is zero
    everywhere, as when the second resampling is the identity, are dropped). Returns
    indices (n_out, k) int64 into the low-res axis and float32 weights (n_out, k), as torch
    tensors, plus a numpy copy of the indices for the cheap "can this pixel be inside?"
    test."""
    idx1, w1 = _bilinear_taps(low_res, image_size)
    idx2, w2 = _bilinear_taps(n_input, n_out)
    idx = np.concatenate((idx1[idx2[:, 0]], idx1[idx2[:, 1]]), 1)
    wts = np.concatenate((w1[idx2[:, 0]] * w2[:, :1], w1[idx2[:, 1]] * w2[:, 1:]), 1)
    idx[wts == 0] = idx[:, :1].repeat(4, 1)[wts == 0]  # zero taps never widen the window
    used = (wts != 0).any(0)
    idx, wts = np.ascontiguousarray(idx[:, used]), np.ascontiguousarray(wts[:, used])
    return torch.from_numpy(idx), torch.from_numpy(wts.astype(np.float32)), idx


def _window(hit: np.ndarray, idx: np.ndarray) -> tuple[int, int]:
    """First and one-past-last output index whose taps touch a True in ``hit``."""
    touched = np.flatnonzero(hit[idx].any(1))
    if touched.size == 0:
        return 0, 0
    return int(touched[0]), int(touched[-1]) + 1


def upsample_mask(logits: torch.Tensor, geometry: Geometry, threshold: float) -> ObjectMask:
    """Low-res logits (L, L) of one mask -> the binary mask at the image's resolution.

    Equal to thresholding SAM's ``postprocess_masks`` (bilinear to the padded input, crop,
    bilinear to the original size) at ``threshold``, up to float rounding. Bilinear weights
    are non-negative, so an output pixel can only exceed ``threshold`` if one of its low-res
    taps does: pixels outside the window of such taps are skipped without computing them.
    """
    logits = logits.detach().to("cpu", torch.float32)
    L, S = geometry.low_res_size, geometry.image_size
    (rows, cols), (h, w) = geometry.original_size, geometry.input_size
    ry, wy, ry_np = _upsample_taps(L, S, h, rows)
    rx, wx, rx_np = _upsample_taps(L, S, w, cols)
    above = (logits > threshold).numpy()
    r0, r1 = _window(above.any(1), ry_np)
    c0, c1 = _window(above.any(0), rx_np)
    if r0 == r1 or c0 == c1:
        return ObjectMask(np.zeros((0, 0), dtype=bool), (0, 0), (rows, cols))
    # Columns first: (L', c1 - c0); then rows, a band at a time: the (band, c1 - c0)
    # temporaries stay small (fresh multi-MB buffers cost more in page faults than the
    # arithmetic).
    lo, hi = int(ry[r0:r1].min()), int(ry[r0:r1].max()) + 1
    src = logits[lo:hi]
    tx, ux = rx[c0:c1], wx[c0:c1]
    cols_done = src.index_select(1, tx[:, 0]).mul_(ux[:, 0])
    for k in range(1, tx.shape[1]):
        cols_done.addcmul_(src.index_select(1, tx[:, k]), ux[:, k])
    ty, uy = ry[r0:r1] - lo, wy[r0:r1, :, None]
    crop = torch.empty((r1 - r0, c1 - c0), dtype=torch.bool)
    band = max(1, _BAND_PIXELS // (c1 - c0))
    for a in range(0, r1 - r0, band):
        b = min(a + band, r1 - r0)
        acc = cols_done.index_select(0, ty[a:b, 0]).mul_(uy[a:b, 0])
        for k in range(1, ty.shape[1]):
            acc.addcmul_(cols_done.index_select(0, ty[a:b, k]), uy[a:b, k])
        torch.gt(acc, threshold, out=crop[a:b])
    return ObjectMask(crop.numpy(), (r0, c0), (rows, cols))


def upsample_logits(logits: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Low-res logits (..., L, L) -> float32 logits (..., rows, cols) at the image's
    resolution, exactly as SAM's ``postprocess_masks``. Costly: prefer :func:`upsample_mask`."""
    lead = logits.shape[:-2]
    x = logits.detach().to("cpu", torch.float32).reshape(-1, 1, *logits.shape[-2:])
    size = geometry.image_size
    x = F.interpolate(x, (size, size), mode="bilinear", align_corners=False)
    h, w = geometry.input_size
    x = F.interpolate(x[..., :h, :w], geometry.original_size, mode="bilinear", align_corners=False)
    return x.reshape(*lead, *geometry.original_size)

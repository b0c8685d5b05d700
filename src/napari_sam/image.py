"""Microscopy images as SAM sees them: three channels on the 0-255 scale.

Any of uint8, uint16, int32, float32/64 (NaN-safe); 2D grayscale, RGB / RGBA, or a
multichannel stack with a chosen channel (or channels) or a composite. Contrast: the limits
given (a napari layer's, so the model sees what the user sees), else percentiles. uint8 data
with no limits, or limits (0, 255), reach the model unchanged, as SAM was trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

DEFAULT_PERCENTILES = (1.0, 99.8)
_MAX_SAMPLES = 1 << 20  # percentiles are estimated on at most ~1M pixels

Channel = int | Sequence[int] | Literal["composite"] | None


def percentile_limits(
    data: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES
) -> tuple[float, float]:
    """Contrast limits ``(low, high)`` of ``data`` (any shape) at ``percentiles``, ignoring
    NaN and inf; ``(0, 1)`` when nothing is finite."""
    flat = np.asarray(data).reshape(-1)
    if flat.size > _MAX_SAMPLES:
        flat = flat[:: flat.size // _MAX_SAMPLES + 1]
    if flat.dtype.kind == "f":
        flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return (0.0, 1.0)
    low, high = np.percentile(flat, percentiles)
    return (float(low), float(high))


def apply_contrast(data: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    """``data`` (any shape) mapped linearly from ``limits`` to 0-255, clipped, float32.
    NaN becomes 0; equal limits give 0 below and 255 at or above them."""
    low, high = float(limits[0]), float(limits[1])
    # values beyond float32 or infinite limits overflow to inf / NaN: clipped and zeroed below
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(data, dtype=np.float32) - np.float32(low)
        if high > low:
            out *= np.float32(255.0 / (high - low))
            np.clip(out, 0.0, 255.0, out=out)
        else:
            out = np.where(out >= 0, np.float32(255.0), np.float32(0.0))
    return np.nan_to_num(out, nan=0.0, copy=False)


def _normalise(data: np.ndarray, limits: tuple[float, float] | None) -> np.ndarray:
    """One plane or RGB stack -> uint8 (unchanged uint8) or float32 on 0-255."""
    if data.dtype == np.uint8 and (limits is None or tuple(map(float, limits)) == (0.0, 255.0)):
        return data
    return apply_contrast(data, _limits_or_percentiles(data, limits))


def to_model_image(
    data: np.ndarray,
    *,
    rgb: bool | None = None,
    channel_axis: int = 0,
    channel: Channel = None,
    contrast_limits: tuple[float, float] | Sequence[tuple[float, float]] | None = None,
) -> np.ndarray:
    """One 2D image (or multichannel 2D image) as the model's (H, W, 3) input, 0-255.

    data: (H, W) grayscale; (H, W, 3 | 4) RGB / RGBA when ``rgb`` (guessed from the last
    axis when None, as napari does); else (C, H, W) with channels on ``channel_axis``.
    channel: for multichannel data, an index (shown as gray), 1-3 indices (mapped to R, G,
    B), or ``"composite"`` (the maximum of the normalised channels, as gray). Required when
    C is not 1 or 3. contrast_limits: ``(low, high)``, or one pair per channel for
    multichannel data; None: percentiles (uint8 is left unchanged).

    Returns uint8 (H, W, 3) when the data reach the model unchanged, else float32 (H, W, 3)
    on 0-255 with NaN mapped to 0.
    """
    data = np.asarray(data)
    if data.dtype.kind not in "uifb":
        raise ValueError(f"cannot segment an image of dtype {data.dtype}")
    if rgb is None:
        rgb = data.ndim == 3 and data.shape[-1] in (3, 4)
    if rgb:
        if data.ndim != 3 or data.shape[-1] not in (3, 4):
            raise ValueError(f"an RGB(A) image must be (H, W, 3 | 4), got shape {data.shape}")
        return np.ascontiguousarray(_normalise(data[..., :3], _pair(contrast_limits)))
    if data.ndim == 2:
        plane = _normalise(data, _pair(contrast_limits))
        return np.repeat(plane[..., None], 3, axis=2)
    if data.ndim != 3:
        raise ValueError(
            f"expected a 2D image (H, W), (H, W, 3 | 4) or (C, H, W), got shape {data.shape}; "
            "pick the displayed slice of nD data first"
        )
    return _multichannel(np.moveaxis(data, channel_axis, 0), channel, contrast_limits)


def _pair(limits) -> tuple[float, float] | None:
    if limits is None:
        return None
    arr = np.asarray(limits, dtype=np.float64)
    if arr.shape != (2,):
        raise ValueError(f"contrast limits must be (low, high), got {limits!r}")
    return (float(arr[0]), float(arr[1]))


def _multichannel(stack: np.ndarray, channel: Channel, contrast_limits) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) following ``channel`` (see :func:`to_model_image`)."""
    n = stack.shape[0]
    per_channel = _per_channel_limits(contrast_limits, n)
    if channel is None:
        if n == 1:
            channel = 0
        elif n == 3:
            channel = (0, 1, 2)
        else:
            raise ValueError(
                f"the image has {n} channels: choose a channel (an index, up to 3 indices "
                "for R, G, B) or 'composite'"
            )
    if isinstance(channel, str):
        if channel != "composite":
            raise ValueError(f"channel must be an index, indices or 'composite', not {channel!r}")
        return np.repeat(composite(stack, per_channel)[..., None], 3, axis=2)
    indices = (channel,) if isinstance(channel, int | np.integer) else tuple(channel)
    if not 1 <= len(indices) <= 3:
        raise ValueError(f"choose 1 to 3 channels, got {len(indices)}")
    for i in indices:
        if not -n <= int(i) < n:
            raise ValueError(f"channel {i} does not exist: the image has {n} channels")
    planes = [_normalise(stack[int(i)], per_channel[int(i)]) for i in indices]
    if len(indices) == 1:
        return np.repeat(planes[0][..., None], 3, axis=2)
    if any(p.dtype != np.uint8 for p in planes):
        planes = [p.astype(np.float32) for p in planes]
    while len(planes) < 3:
        planes.append(np.zeros_like(planes[0]))
    return np.stack(planes, axis=2)


def composite(
    stack: np.ndarray, limits: Sequence[tuple[float, float] | None] | None = None
) -> np.ndarray:
    """The composite of channels ``stack`` (C, ...): each channel mapped to 0-255 from its
    own ``limits`` (one pair or None per channel; None: the full range of uint8, else its
    percentiles), then the maximum over channels. float32 (...), NaN as 0."""
    limits = [None] * len(stack) if limits is None else limits
    return np.max([apply_contrast(stack[i], _limits_or_percentiles(stack[i], limits[i]))
                   for i in range(len(stack))], axis=0)  # fmt: skip


def _limits_or_percentiles(plane: np.ndarray, limits) -> tuple[float, float]:
    """The given limits, else the full range of uint8 and bool, else the percentiles."""
    if limits is not None:
        return limits
    if plane.dtype == np.uint8:
        return (0.0, 255.0)
    if plane.dtype == np.bool_:
        return (0.0, 1.0)
    return percentile_limits(plane)


def _per_channel_limits(limits, n: int) -> list[tuple[float, float] | None]:
    if limits is None:
        return [None] * n
    arr = np.asarray(limits, dtype=np.float64)
    if arr.shape == (2,):
        return [(float(arr[0]), float(arr[1]))] * n
    if arr.shape != (n, 2):
        raise ValueError(f"give one (low, high) pair, or one per channel ({n}), got {limits!r}")
    return [(float(a), float(b)) for a, b in arr]

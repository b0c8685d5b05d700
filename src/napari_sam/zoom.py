"""Zoom in on small objects: decode once more on a magnified window around the object.

SAM's masks come from a low-res grid (a quarter of the model input per side) and its image
features are coarser still: a nucleus 15 pixels across in a 512-pixel plane covers about four
mask cells, and its outline is guessed between them. After the first decode,
:func:`zoom_window` picks a square window of the plane around the object, ``context`` times its
size; that window is embedded on its own (the model's resize magnifies it to the full input)
and the prompt decoded there again. It costs one image embedding per prompt, so it is on by
default only for models whose encoder is fast on a CPU (:data:`FAST_MODELS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from napari_sam.lru import LRU
from napari_sam.tile_grid import Box

# Encoders cheap enough to run once per prompt (vit_nano: ~0.05 s per 512 x 512 on a CPU).
FAST_MODELS = frozenset({"vit_nano"})


@dataclass(frozen=True)
class ZoomConfig:
    """``context``: window side / the object's longest side; ``min_side``: the smallest window
    (plane pixels); ``min_gain``: zoom only when the window is magnified at least this much
    more than the tile it was first decoded in."""

    context: float = 4.0
    min_side: int = 96
    min_gain: float = 1.5


def zoom_window(
    bbox: Box, plane: tuple[int, int], tile_window: Box, config: ZoomConfig
) -> Box | None:
    """The square window (clamped into ``plane`` (H, W)) to decode an object of bounding box
    ``bbox`` again in, or None when it would not magnify the object ``min_gain`` times more
    than ``tile_window`` (the window of its first decode) did."""
    r0, c0, r1, c1 = bbox
    if r1 <= r0 or c1 <= c0:
        return None
    side = max(config.context * max(r1 - r0, c1 - c0), config.min_side)
    side = int(min(side, *plane))
    tile_side = max(tile_window[2] - tile_window[0], tile_window[3] - tile_window[1])
    if tile_side < config.min_gain * side:
        return None
    row = int(min(max((r0 + r1 - side) // 2, 0), plane[0] - side))
    col = int(min(max((c0 + c1 - side) // 2, 0), plane[1] - side))
    return (row, col, row + side, col + side)


def resolve_zoom(zoom: ZoomConfig | str | None, model_name: str) -> ZoomConfig | None:
    """``zoom`` as a config: ``"auto"`` is the default :class:`ZoomConfig` for
    :data:`FAST_MODELS` and None (no zoom) for the rest; ``"on"`` / ``"off"`` force it."""
    if zoom is None or isinstance(zoom, ZoomConfig):
        return zoom
    if zoom == "auto":
        return ZoomConfig() if model_name in FAST_MODELS else None
    if zoom in ("on", "off"):
        return ZoomConfig() if zoom == "on" else None
    raise ValueError(f"zoom must be 'auto', 'on', 'off' or a ZoomConfig, got {zoom!r}")


def window_cache(size: int = 4) -> LRU[tuple[int, Box], Any]:
    """The last ``size`` zoom-window embeddings, keyed by (slice, window): a prompt edited
    again (another point on the same object) reuses its window's embedding."""
    return LRU(size)

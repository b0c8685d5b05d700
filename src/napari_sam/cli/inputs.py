"""How every command reads its image: the file opened lazily, its axes resolved by one rule.

Formats: TIFF (pyramids as levels), zarr and OME-Zarr, npy (memory mapped), each read a plane
or a window at a time (:class:`~napari_sam.scaleout.FileArray`, which a dask worker reopens
by path), and PNG / JPEG (2D, read whole).

The rule, the same for ``segment``, ``embed`` and ``auto`` (:func:`resolve_layout`):

- ``--rgb``: the last axis (3 or 4 entries) is colour, red, green, blue (alpha dropped).
- ``--channel N`` or ``--channel composite``: the image has a channel axis, its last when
  that has 3 or 4 entries (``(..., H, W, C)``), else its first (``(C, ..., H, W)``). ``N``
  picks one channel, shown to the model as grey; ``composite`` the brightest of the
  channels, each on its own contrast. The other leading axes number the slices.
- Neither: a last axis of 3 or 4 entries is RGB(A) when the image is 8-bit (PNG, JPEG, an RGB
  TIFF); any other dtype (uint16, float: fluorescence) is refused with the choices named,
  since three channels of a microscope are not colour. Otherwise every axis before the last
  two numbers slices (z, t, ...).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

ChannelChoice = int | Literal["composite"]

_PICTURES = (".png", ".jpg", ".jpeg")


def channel_choice(text: str) -> ChannelChoice:
    """``--channel``'s value: a channel index (0, 1, ...) or ``composite``."""
    if text == "composite":
        return text
    try:
        index = int(text)
    except ValueError:
        index = -1
    if index < 0:
        raise argparse.ArgumentTypeError(
            f"a channel index (0, 1, ...) or 'composite', not {text!r}"
        )
    return index


def add_image_options(parser: argparse.ArgumentParser) -> None:
    """The options that say how an image's axes are read (the module's rule)."""
    parser.add_argument("--rgb", action="store_true",
                        help="the last axis (3 or 4) is colour (detected for 8-bit images)")  # fmt: skip
    parser.add_argument("--channel", type=channel_choice, default=None, metavar="N|composite",
                        help="a multichannel image, (C, ..., H, W) or (..., H, W, 3|4): "
                             "segment channel N, or the composite of all channels")  # fmt: skip


@dataclass(frozen=True)
class Layout:
    """How an image's axes are read: ``rgb`` (the last axis is colour), or ``channel`` (an
    index or ``"composite"``) on ``channel_axis`` (0 or -1); neither: grey planes."""

    rgb: bool = False
    channel: ChannelChoice | None = None
    channel_axis: int = 0

    def spatial(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(*leading, H, W)`` of an image of ``shape``."""
        shape = tuple(int(n) for n in shape)
        if self.rgb or (self.channel is not None and self.channel_axis == -1):
            return shape[:-1]
        return shape[1:] if self.channel is not None else shape

    @property
    def embed_options(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`~napari_sam.predictor.Predictor.embed` for a part
        :meth:`InputImage.read` returns."""
        if self.channel is None:
            return {"rgb": self.rgb}
        return {"rgb": False, "channel": self.channel, "channel_axis": self.channel_axis}


def resolve_layout(
    shape: tuple[int, ...], dtype: Any, *, rgb: bool = False,
    channel: ChannelChoice | None = None, name: str = "the image",
) -> Layout:  # fmt: skip
    """The :class:`Layout` of an image of ``shape`` and ``dtype`` under the module's rule;
    ValueError naming the options when the choice is the user's to make."""
    shape = tuple(int(n) for n in shape)
    colour_last = len(shape) >= 3 and shape[-1] in (3, 4)
    if rgb and channel is not None:
        raise ValueError("give --rgb or --channel, not both")
    if rgb:
        if not colour_last:
            raise ValueError(f"--rgb needs a last axis of 3 or 4 (colour); {name} is {shape}")
        return Layout(rgb=True)
    if channel is not None:
        if len(shape) < 3:
            raise ValueError(f"--channel needs a channel axis; {name} is 2D {shape}")
        axis = -1 if colour_last else 0
        n = shape[axis]
        if channel != "composite" and not 0 <= channel < n:
            where = "last" if axis == -1 else "first"
            raise ValueError(f"--channel {channel}: {name} {shape} has {n} channels on its "
                             f"{where} axis, 0 to {n - 1}")  # fmt: skip
        return Layout(channel=channel, channel_axis=axis)
    if colour_last:
        if np.dtype(dtype) == np.uint8:
            return Layout(rgb=True)
        raise ValueError(
            f"{name} {shape} has {shape[-1]} channels on its last axis and is "
            f"{np.dtype(dtype)}, not 8-bit colour: say how to read them: --rgb (as red, green, "
            f"blue), --channel N (one channel, 0 to {shape[-1] - 1}) or --channel composite "
            "(the brightest of the channels)"
        )
    return Layout()


@dataclass(frozen=True, eq=False)
class InputImage:
    """An image file opened lazily: ``levels`` (full resolution first; one for a plain
    image) read under ``layout``."""

    path: Path
    levels: tuple[Any, ...]
    layout: Layout

    @property
    def data(self) -> Any:
        """Full resolution, as stored: ``(*leading, H, W)`` plus the channel / colour axis."""
        return self.levels[0]

    @property
    def leading_shape(self) -> tuple[int, ...]:
        return self.layout.spatial(self.data.shape)[:-2]

    @property
    def plane_shape(self) -> tuple[int, int]:
        rows, cols = self.layout.spatial(self.data.shape)[-2:]
        return (rows, cols)

    def read(self, index: tuple[int, ...], window: tuple[int, int, int, int]) -> np.ndarray:
        """The ``window`` (row0, col0, row1, col1) of slice ``index`` (leading indices) at
        full resolution, as :meth:`~napari_sam.predictor.Predictor.embed` takes it with
        ``layout.embed_options``: ``(h, w)``, ``(h, w, C)`` or ``(C, h, w)``. Only that
        window is read from the file."""
        r0, c0, r1, c1 = window
        key = (*index, slice(r0, r1), slice(c0, c1))
        if self.layout.channel is not None and self.layout.channel_axis == 0:
            key = (slice(None), *key)
        return np.asarray(self.data[key])

    def slice_source(self, level: int = 0, contrast: tuple[float, float] | None = None):
        """``(source, limits)``: a :class:`~napari_sam.slice_source.SliceSource` of the planes the
        model sees at ``level`` (grey or RGB; a picked channel; the composite, already on
        0-255, each channel on ``contrast`` or its percentiles sampled over the stack), and
        the contrast limits to embed them with (``contrast``; ``(0, 255)`` for the
        composite; None: the caller's default)."""
        from napari_sam.slice_source import SliceSource, sample_limits

        layout = self.layout
        if layout.channel is None:
            planes, limits = list(self.levels), contrast
        elif layout.channel != "composite":
            planes = [ChannelPlanes(a, layout.channel, layout.channel_axis) for a in self.levels]
            limits = contrast
        else:
            level_data = self.levels[level] if 0 <= level < len(self.levels) else self.data
            per_channel = [contrast] * level_data.shape[layout.channel_axis]
            if contrast is None and np.dtype(level_data.dtype) != np.uint8:  # uint8: 0-255
                per_channel = [sample_limits(SliceSource(ChannelPlanes(level_data, i,
                               layout.channel_axis))) for i in range(len(per_channel))]  # fmt: skip
            planes = [CompositePlanes(a, per_channel, layout.channel_axis) for a in self.levels]
            limits = (0.0, 255.0)
        multiscale = len(planes) > 1
        source = SliceSource.from_layer_data(planes if multiscale else planes[0],
                                             multiscale=multiscale, rgb=layout.rgb,
                                             level=level)  # fmt: skip
        return source, limits


def open_input(
    path: str | Path, *, rgb: bool = False, channel: ChannelChoice | None = None
) -> InputImage:
    """Open the image at ``path`` lazily and resolve its layout (:func:`resolve_layout`)."""
    from napari_sam.scaleout import FileArray

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no image at {path}")
    suffix = path.suffix.lower()
    if suffix not in (*_PICTURES, ".tif", ".tiff", ".zarr", ".npy") and not path.is_dir():
        raise ValueError(f"cannot read {path.name}: use TIFF, zarr, npy, PNG or JPEG")
    if suffix in _PICTURES:
        from PIL import Image

        with Image.open(path) as picture:
            levels: tuple[Any, ...] = (np.asarray(picture),)
    else:
        levels = tuple(FileArray.levels(path))
    layout = resolve_layout(levels[0].shape, levels[0].dtype, rgb=rgb, channel=channel,
                            name=path.name)  # fmt: skip
    return InputImage(path, levels, layout)


def input_of(args: argparse.Namespace) -> InputImage:
    """:func:`open_input` of ``args.image`` with the command's ``--rgb`` / ``--channel``."""
    return open_input(args.image, rgb=bool(getattr(args, "rgb", False)),
                      channel=getattr(args, "channel", None))  # fmt: skip


class ChannelPlanes:
    """Channel ``index`` of a multichannel array (channels on ``axis``, 0 or -1), read
    lazily as ``(*leading, H, W)``: indexing reads that channel's part only."""

    def __init__(self, data: Any, index: int, axis: int) -> None:
        self.data, self.index, self.axis = data, int(index), axis
        shape = tuple(data.shape)
        self.shape = shape[1:] if axis == 0 else shape[:-1]
        self.dtype = np.dtype(data.dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = _full_key(key, len(self.shape))
        return np.asarray(self.data[(self.index, *key) if self.axis == 0 else (*key, self.index)])


class CompositePlanes:
    """The composite of a multichannel array (channels on ``axis``): each channel mapped to
    0-255 from its ``limits`` (one pair per channel; None: uint8 as it is), the brightest
    taken (:func:`napari_sam.image.composite`); read lazily as float32 ``(*leading, H, W)``."""

    def __init__(self, data: Any, limits: list[tuple[float, float] | None], axis: int) -> None:
        self.data, self.axis = data, axis
        self.limits = [None if p is None else (float(p[0]), float(p[1])) for p in limits]
        shape = tuple(data.shape)
        self.shape = shape[1:] if axis == 0 else shape[:-1]
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: Any) -> np.ndarray:
        from napari_sam.image import composite

        key = _full_key(key, len(self.shape))
        if self.axis == 0:
            stack = np.asarray(self.data[(slice(None), *key)])
        else:
            stack = np.moveaxis(np.asarray(self.data[(*key, slice(None))]), -1, 0)
        return composite(stack, self.limits)


def _full_key(key: Any, ndim: int) -> tuple:
    """``key`` as a tuple of ``ndim`` entries (trailing axes taken whole)."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key) or len(key) > ndim:
        raise IndexError(f"index {key!r}: give at most {ndim} entries, no Ellipsis")
    return (*key, *[slice(None)] * (ndim - len(key)))

"""The instance decoder of automatic instance segmentation (AIS): micro-sam's UNETR decoder.

A convolutional decoder over the SAM image embedding predicts, per pixel, three maps in
[0, 1] (sigmoid): foreground probability, distance to the object's centre and distance to
its boundary (:class:`Channel`). A seeded watershed on them separates instances (not here).

The architecture is torch_em's ``UNETR`` as micro-sam builds it for AIS
(``micro_sam.instance_segmentation.get_unetr``: no skip connections from the encoder,
``out_channels=3``, sigmoid), applied to pre-computed embeddings like micro-sam's
``DecoderAdapter``. Module names follow torch_em's, so :meth:`InstanceDecoder.state_dict`
has the keys and shapes of micro-sam's ``decoder_state`` (every non-encoder key of the
UNETR) and loads it strictly.

Shapes for an embedding grid ``g`` (64 for a 1024 input) and ``F = initial_features`` (64):
the embedding ``(B, 256, g, g)`` is lifted by four up-convolutions to ``(B, 8F, 2g)``,
``(B, 4F, 4g)``, ``(B, 2F, 8g)`` and ``(B, F, 16g)`` (the skips ``z9, z6, z3, z0``); the
decoder path goes ``base`` ``(B, 8F, g)`` -> three upsample + conv stages, each concatenating
the skip of its resolution -> ``(B, F, 8g)`` -> ``deconv_out`` ``(B, F, 16g)`` ->
``decoder_head`` on ``[x, z0]`` -> ``out_conv`` ``(B, 3, 16g, 16g)``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import IntEnum
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from napari_sam.model.checkpoints import CheckpointError, _unpickle, load_weights_into
from napari_sam.model.config import SamConfig

StateDict = dict[str, torch.Tensor]

#: the number of upsampling stages of the decoder path (torch_em's UNETR: 3)
DEPTH = 3


class Channel(IntEnum):
    """The output channels of the instance decoder, in micro-sam's order."""

    FOREGROUND = 0
    CENTER_DISTANCE = 1
    BOUNDARY_DISTANCE = 2


@dataclass(frozen=True)
class InstanceDecoderConfig:
    """One instance decoder architecture.

    ``in_channels``: channels of the image embedding (256 for every SAM encoder);
    ``image_size``: side of the padded model input the decoder's output is resized to (the
    encoder's ``image_size``); ``initial_features``: channels of the finest level (torch_em's
    64); ``conv_transpose``: upsample by transposed 2x2 convolutions instead of bilinear
    interpolation + 1x1 convolution (micro-sam's older decoders); ``image_skip``: the finest
    skip ``z0`` comes from the model's input image (a double conv, as torch_em's UNETR with
    skip connections makes its ``deconv4``) instead of from the embedding, so the head sees
    the pixels (ours, for small objects on a coarse embedding grid; micro-sam's decoders have
    none).
    """

    in_channels: int = 256
    image_size: int = 1024
    initial_features: int = 64
    out_channels: int = len(Channel)
    conv_transpose: bool = False
    image_skip: bool = False

    @classmethod
    def for_sam(cls, config: SamConfig, **overrides: object) -> InstanceDecoderConfig:
        """The decoder for the SAM architecture ``config`` (its embedding width and input)."""
        return replace(
            cls(in_channels=config.prompt_embed_dim, image_size=config.image_size), **overrides
        )

    @property
    def features(self) -> tuple[int, ...]:
        """Channels per level, coarse to fine: ``(8F, 4F, 2F, F)``."""
        return tuple(self.initial_features * 2**i for i in range(DEPTH + 1))[::-1]


# ------------------------------------------------------------------ blocks (torch_em names)


class _Conv(nn.Module):
    """A 3x3 convolution (torch_em's ``SingleConv2DBlock``: the conv is ``block``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = nn.Conv2d(cin, cout, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class _Interpolate(nn.Module):
    """Bilinear 2x upsampling then a 1x1 convolution (torch_em's ``Upsampler2d``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, cin, h, w) -> (B, cout, 2h, 2w)."""
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


class _Transposed(nn.Module):
    """A transposed 2x2 convolution, stride 2 (torch_em's ``SingleDeconv2DBlock``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, cin, h, w) -> (B, cout, 2h, 2w)."""
        return self.block(x)


def _upsampler(cin: int, cout: int, transpose: bool) -> nn.Module:
    return _Transposed(cin, cout) if transpose else _Interpolate(cin, cout)


class _DoubleConv(nn.Module):
    """(instance norm, 3x3 conv, ReLU) twice (torch_em's ``ConvBlock2d``; keys ``block.1``,
    ``block.4``: the affine-free instance norms hold no weights)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.InstanceNorm2d(cin), nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
            nn.InstanceNorm2d(cout), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class _UpConv(nn.Module):
    """2x upsampling, 3x3 conv, batch norm, ReLU (torch_em's ``Deconv2DBlock``)."""

    def __init__(self, cin: int, cout: int, transpose: bool) -> None:
        super().__init__()
        self.block = nn.Sequential(
            _upsampler(cin, cout, transpose), _Conv(cout, cout), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, cin, h, w) -> (B, cout, 2h, 2w)."""
        return self.block(x)


class _DecoderPath(nn.Module):
    """torch_em's UNet ``Decoder``: per level, upsample then a double conv on [x, skip]."""

    def __init__(self, features: tuple[int, ...], transpose: bool) -> None:
        super().__init__()
        pairs = list(itertools.pairwise(features))
        # a level's input is its upsampled x (cout) plus cout skip channels: cin = 2 cout
        self.blocks = nn.ModuleList(_DoubleConv(cin, cout) for cin, cout in pairs)
        self.samplers = nn.ModuleList(_upsampler(cin, cout, transpose) for cin, cout in pairs)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """x (B, 8F, g, g), skips coarse to fine -> (B, F, 8g, 8g)."""
        for block, sampler, skip in zip(self.blocks, self.samplers, skips, strict=True):
            x = sampler(x)
            x = block(torch.cat([x, _middle_channels(skip, x.shape[1])], dim=1))
        return x


def _middle_channels(skip: torch.Tensor, n: int) -> torch.Tensor:
    """The middle ``n`` channels of ``skip`` (B, C, h, w).

    torch_em centre-crops a skip to the decoder's shape in every dimension after the batch,
    channels included; the skips here have twice the channels of their level (``z9`` has 8F
    where the level has 4F), so only their middle half reaches the decoder.
    """
    start = (skip.shape[1] - n) // 2
    return skip[:, start : start + n]


# ------------------------------------------------------------------ the decoder


class InstanceDecoder(nn.Module):
    """micro-sam's AIS decoder on pre-computed image embeddings (eval mode when built)."""

    def __init__(self, config: InstanceDecoderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or InstanceDecoderConfig()
        f, t = config.features, config.conv_transpose
        self.deconv1 = _UpConv(config.in_channels, f[0], t)
        self.deconv2 = _UpConv(f[0], f[1], t)
        self.deconv3 = _UpConv(f[1], f[2], t)
        self.deconv4 = _DoubleConv(3, f[3]) if config.image_skip else _UpConv(f[2], f[3], t)
        self.base = _DoubleConv(config.in_channels, f[0])
        self.decoder = _DecoderPath(f, t)
        self.deconv_out = _upsampler(f[-1], f[-1], t)
        self.decoder_head = _DoubleConv(2 * f[-1], f[-1])
        self.out_conv = nn.Conv2d(f[-1], config.out_channels, 1)
        self.eval()

    def decode_padded(self, embeddings: torch.Tensor, image: torch.Tensor | None = None
                      ) -> torch.Tensor:  # fmt: skip
        """(B, in_channels, g, g) float embeddings -> (B, 3, 16g, 16g) maps in [0, 1].

        The maps cover the padded model input (the image resized, then zero padded bottom /
        right); channels are :class:`Channel`. ``image``: the (B, 3, 16g, 16g) normalised,
        padded model input the embeddings were made from, needed with ``image_skip``.
        """
        z9 = self.deconv1(embeddings)  # (B, 8F, 2g, 2g)
        z6 = self.deconv2(z9)  # (B, 4F, 4g, 4g)
        z3 = self.deconv3(z6)  # (B, 2F, 8g, 8g)
        if self.config.image_skip:
            if image is None:
                raise ValueError("this instance decoder reads the image too: give image=")
            z0 = self.deconv4(image)  # (B, F, 16g, 16g)
        else:
            z0 = self.deconv4(z3)  # (B, F, 16g, 16g)
        x = self.decoder(self.base(embeddings), [z9, z6, z3])  # (B, F, 8g, 8g)
        x = self.decoder_head(torch.cat([self.deconv_out(x), z0], dim=1))
        return torch.sigmoid(self.out_conv(x))

    def forward(
        self,
        embeddings: torch.Tensor,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
        image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Foreground, centre and boundary distance maps at the image's resolution.

        embeddings: (B, in_channels, g, g) of the padded input; input_size: (rows, cols) of
        the image resized to the model input, before padding; original_size: (rows, cols) of
        the image; image: the padded model input, with ``image_skip``. Returns
        (B, 3, *original_size) float in [0, 1], channels :class:`Channel`.
        As micro-sam: resized to the padded input, cropped to ``input_size``, resized to
        ``original_size`` (bilinear, ``align_corners=False``).
        """
        size = self.config.image_size
        maps = _resize(self.decode_padded(embeddings, image), (size, size))
        return _resize(maps[..., : input_size[0], : input_size[1]], tuple(original_size))


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) to ``size``; the identity (exactly) when it is one."""
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size, mode="bilinear", align_corners=False)


# ------------------------------------------------------------------ weights


def read_decoder_state(path: str | os.PathLike) -> StateDict:
    """The decoder state in a weights file: micro-sam's ``{"model_state": ..., "decoder_state":
    ...}`` layout, or a file holding the decoder's state dict alone.

    Read as the SAM weights are (:mod:`napari_sam.model.checkpoints`): ``torch.load`` with
    ``weights_only=True``, else the restricted unpickler that runs none of the file's code.
    Raises :class:`CheckpointError` when the file holds no decoder.
    """
    path = Path(path)
    obj = _unpickle(path)
    state = obj.get("decoder_state", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(state, Mapping) or "out_conv.weight" not in state:
        raise CheckpointError(f"{path} holds no instance decoder (no 'decoder_state')")
    return _tensors_only(state, path)


def decoder_state_of(obj: object, path: Path) -> StateDict | None:
    """The ``decoder_state`` of an unpickled weights file ``obj`` (micro-sam's layout), or
    None when it has none (a plain SAM state dict) or holds another kind of decoder (no
    UNETR ``out_conv``): the SAM weights then load without AIS / APG."""
    state = obj.get("decoder_state") if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or "out_conv.weight" not in state:
        return None
    return _tensors_only(state, path)


def _tensors_only(state: object, path: Path) -> StateDict:
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: the decoder state is not a state dict")
    not_tensors = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: decoder entries that are not tensors: {not_tensors[:8]}")
    return dict(state)


def config_for_state(state: Mapping[str, torch.Tensor], base: InstanceDecoderConfig
                     ) -> InstanceDecoderConfig:  # fmt: skip
    """``base`` with the widths and upsampling a decoder state dict was saved with.

    Transposed upsampling as micro-sam tells it: ``decoder.samplers.*`` keys with ``.block.``.
    """
    transpose = any(".block." in k for k in state if k.startswith("decoder.samplers"))
    skip = state.get("deconv4.block.1.weight")  # (F, 3, 3, 3) when z0 comes from the image
    out = state["out_conv.weight"]  # (out_channels, F, 1, 1)
    first = state.get("base.block.1.weight")  # (8F, in_channels, 3, 3); a gap: strict load says
    return replace(
        base,
        in_channels=base.in_channels if first is None else first.shape[1],
        initial_features=out.shape[1],
        out_channels=out.shape[0],
        conv_transpose=transpose,
        image_skip=skip is not None and skip.dim() == 4 and skip.shape[1] == 3,
    )


def build_instance_decoder(sam_config: SamConfig, state: Mapping[str, torch.Tensor] | None = None
                           ) -> InstanceDecoder:  # fmt: skip
    """The decoder for ``sam_config``'s encoder, random or with ``state`` loaded strictly
    (every key and shape; :class:`~napari_sam.model.checkpoints.StateDictMismatchError`)."""
    config = InstanceDecoderConfig.for_sam(sam_config)
    if state is None:
        return InstanceDecoder(config)
    decoder = InstanceDecoder(config_for_state(state, config))
    load_weights_into(decoder, state)
    return decoder.eval()


def load_instance_decoder(path: str | os.PathLike, sam_config: SamConfig) -> InstanceDecoder:
    """The decoder in the weights file ``path`` (see :func:`read_decoder_state`), in eval mode."""
    return build_instance_decoder(sam_config, read_decoder_state(path))

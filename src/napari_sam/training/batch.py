"""One training example as the model sees it: the image resized (longest side to the
model's input size), normalised and padded bottom / right, and one target mask per object.

The same preprocessing as SAM's predictor, in torch. Coordinates downstream are (x, y) in
this padded input frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from napari_sam.model.config import SamConfig


@dataclass(frozen=True)
class ModelInput:
    """``image``: (1, 3, S, S) float32 normalised and zero padded; ``resized``: (h, w), the
    image's size inside the padded frame; ``scale``: input pixels per original pixel."""

    image: torch.Tensor
    resized: tuple[int, int]
    scale: float


@dataclass(frozen=True)
class Targets:
    """``full``: (N, S, S) bool object masks in the input frame; ``low_res``: (N, 1, L, L)
    float in [0, 1], their area fractions on the decoder's low-res grid (L = S / ``stride``);
    ``neighbours``: (N, S, S) bool, each object's touching neighbour (the one sharing the
    longest border; all False when it touches none), or None when not computed;
    ``previous``: (N, 1, L, L) float in [0, 1], the same objects on the slice next to this
    one in a stack (as ``low_res``; all 0 where an object is not there), or None.
    """

    full: torch.Tensor
    low_res: torch.Tensor
    stride: int
    neighbours: torch.Tensor | None = None
    previous: torch.Tensor | None = None

    def select(self, keep: torch.Tensor) -> Targets:
        """The targets of the objects where ``keep`` (N,) is True."""
        near = None if self.neighbours is None else self.neighbours[keep]
        previous = None if self.previous is None else self.previous[keep]
        return Targets(self.full[keep], self.low_res[keep], self.stride, near, previous)


def resized_shape(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """(h, w) after resizing ``shape`` so that its longest side is ``size`` (SAM's rule)."""
    scale = size / max(shape)
    return int(shape[0] * scale + 0.5), int(shape[1] * scale + 0.5)


def model_input(image: np.ndarray, config: SamConfig, device=None) -> ModelInput:
    """``image``: (H, W) on the 0-255 scale (one channel, repeated to RGB) or (H, W, 3)."""
    x = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32, device=device)
    x = x[None].expand(3, -1, -1) if x.ndim == 2 else x.permute(2, 0, 1)
    size = config.image_size
    h, w = resized_shape(tuple(x.shape[1:]), size)
    x = F.interpolate(x[None], (h, w), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(config.pixel_mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(config.pixel_std, device=x.device).view(1, 3, 1, 1)
    x = F.pad((x - mean) / std, (0, size - w, 0, size - h))
    return ModelInput(x, (h, w), h / image.shape[0])


def padded_labels(labels: np.ndarray, size: int, device=None) -> torch.Tensor:
    """labels (H, W) -> (size, size) int64 in the model's input frame: resized (nearest) so
    the longest side is ``size``, zero padded bottom / right, as :func:`model_input` does
    the image."""
    h, w = resized_shape(labels.shape, size)
    lab = torch.as_tensor(np.ascontiguousarray(labels).astype(np.int64), device=device)
    lab = F.interpolate(lab[None, None].double(), (h, w), mode="nearest-exact")[0, 0].long()
    return F.pad(lab, (0, size - w, 0, size - h))


def object_targets(
    labels: np.ndarray, ids: np.ndarray, config: SamConfig, device=None,
    neighbours: bool = False, previous: np.ndarray | None = None,
) -> Targets:
    """Masks of the objects ``ids`` (N,) of ``labels`` (H, W) in the padded input frame;
    with ``neighbours``, each one's touching neighbour too (:func:`touching_neighbours`);
    with ``previous`` (H, W) labels of the next slice of a stack, the objects there."""
    size = config.image_size
    stride = size // config.low_res_mask_size
    lab = padded_labels(labels, size, device)
    full, low = _masks(lab, ids, stride)
    near = touching_neighbours(lab, full, ids) if neighbours else None
    before = None if previous is None else _masks(padded_labels(previous, size, device), ids,
                                                  stride)[1]  # fmt: skip
    return Targets(full, low, stride, near, before)


def _masks(lab: torch.Tensor, ids, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The objects ``ids`` (N,) of ``lab`` (S, S): (N, S, S) bool masks and their
    (N, 1, S / stride, S / stride) area fractions."""
    full = lab[None] == torch.as_tensor(ids, device=lab.device).view(-1, 1, 1)
    low = F.avg_pool2d(full[:, None].float(), stride) if stride > 1 else full[:, None].float()
    return full, low


def touching_neighbours(labels: torch.Tensor, full: torch.Tensor, ids) -> torch.Tensor:
    """(N, S, S) bool: for each object mask of ``full`` (N, S, S), the mask of the object of
    ``labels`` (S, S) int64 that shares the longest border with it (8-connected ring one
    pixel wide), all False when it touches none. ``ids`` (N,): the objects' own ids."""
    ring = F.max_pool2d(full[:, None].float(), 3, 1, 1)[:, 0].bool() & ~full
    out = torch.zeros_like(full)
    for i, own in enumerate(np.asarray(ids).tolist()):
        around = labels[ring[i]]
        around = around[(around != 0) & (around != own)]
        if len(around):
            out[i] = labels == torch.bincount(around).argmax()
    return out

"""Prompt simulation for SAM's interactive training: a first point or box per object, then
corrective points drawn from the error region of the best mask so far.

All coordinates are SAM's: (x, y) pixels in the model's input frame (after the resize of the
longest side to ``image_size``). Masks here are on any grid of that frame, with ``scale``
input pixels per mask pixel (4 for the low-res logits).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import torch


class PointLabel(IntEnum):
    """SAM's point labels: padding, background (negative) and foreground (positive)."""

    PAD = -1
    NEGATIVE = 0
    POSITIVE = 1


@dataclass(frozen=True)
class PointPrompts:
    """``coords``: (N, K, 2) float (x, y) in input pixels; ``labels``: (N, K) int64."""

    coords: torch.Tensor
    labels: torch.Tensor

    def append(self, coords: torch.Tensor, labels: torch.Tensor) -> PointPrompts:
        """These prompts plus one point per object: ``coords`` (N, 2), ``labels`` (N,)."""
        return PointPrompts(
            torch.cat([self.coords, coords[:, None]], 1), torch.cat([self.labels, labels[:, None]], 1)
        )

    @staticmethod
    def empty(n: int, device: torch.device | None = None) -> PointPrompts:
        """No point for ``n`` objects: coords (n, 0, 2), labels (n, 0)."""
        return PointPrompts(
            torch.zeros(n, 0, 2, device=device), torch.zeros(n, 0, dtype=torch.long, device=device)
        )


def _pixel_centres(flat_index: torch.Tensor, width: int, scale: float, jitter: torch.Tensor):
    """(N, 2) (x, y) input-frame coordinates of mask pixels ``flat_index`` (N,), placed at
    ``jitter`` (N, 2) in [0, 1) inside each pixel. Coordinates are pixel indices, as SAM's
    predictor passes them (its prompt encoder adds the half-pixel shift): jitter 0.5 at
    ``scale`` 1 gives the pixel's own index."""
    y = torch.div(flat_index, width, rounding_mode="floor")
    x = flat_index - y * width
    return (torch.stack([x, y], 1).float() + jitter) * scale - 0.5


def _sample_index(masks: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(N,) flat index of one uniformly random pixel of each non-empty mask (N, H, W)."""
    weights = masks.reshape(len(masks), -1).float()
    if (weights.sum(1) == 0).any():
        raise ValueError("cannot sample a point in an empty mask")
    return torch.multinomial(weights, 1, generator=generator)[:, 0]


def _jitter(n: int, scale: float, generator: torch.Generator | None, device) -> torch.Tensor:
    """(n, 2) position inside a mask pixel: uniform when a mask pixel spans several input
    pixels, else the pixel centre."""
    if scale > 1:
        return torch.rand(n, 2, generator=generator, device=device)
    return torch.full((n, 2), 0.5, device=device)


def sample_in_masks(
    masks: torch.Tensor, generator: torch.Generator | None = None, scale: float = 1.0
) -> torch.Tensor:
    """One uniformly random point inside each mask: ``masks`` (N, H, W) bool, every mask
    non-empty; returns (N, 2) float (x, y) input-frame coordinates."""
    index = _sample_index(masks, generator)
    jitter = _jitter(len(masks), scale, generator, masks.device)
    return _pixel_centres(index, masks.shape[2], scale, jitter)


def interior_points(masks: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """The "centre click" of each mask: the pixel deepest inside it (largest distance to the
    background, Chebyshev, by iterated erosion). ``masks`` (N, H, W) bool -> (N, 2) (x, y)."""
    n, _, w = masks.shape
    depth = torch.zeros(masks.shape, device=masks.device)
    current = masks.float()[:, None]
    while current.any():
        depth += current[:, 0]
        current = -torch.nn.functional.max_pool2d(-current, 3, 1, 1)
    flat = depth.reshape(n, -1)
    # Among the deepest pixels, take the one nearest the centroid (ties in round shapes).
    ys, xs = torch.meshgrid(
        torch.arange(masks.shape[1], device=masks.device),
        torch.arange(w, device=masks.device),
        indexing="ij",
    )
    grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1).float()  # (H*W, 2)
    mass = masks.reshape(n, -1).float()
    centroid = (mass @ grid) / mass.sum(1, keepdim=True).clamp(min=1)
    dist = torch.cdist(centroid[:, None], grid[None].expand(n, -1, -1))[:, 0]
    best = flat == flat.max(1, keepdim=True).values
    index = torch.where(best, -dist, torch.tensor(-float("inf"))).argmax(1)
    return _pixel_centres(index, w, scale, torch.full((n, 2), 0.5, device=masks.device))


def first_points(
    masks: torch.Tensor, generator: torch.Generator | None = None, scale: float = 1.0,
    centre_prob: float = 0.3,
) -> PointPrompts:
    """A single positive point per object: with probability ``centre_prob`` the interior
    centre, else uniform inside the object. ``masks`` (N, H, W) bool -> K = 1 prompts."""
    coords = sample_in_masks(masks, generator, scale)
    pick = torch.rand(len(masks), generator=generator, device=masks.device) < centre_prob
    if pick.any():
        coords[pick] = interior_points(masks[pick], scale)
    labels = torch.full((len(masks), 1), int(PointLabel.POSITIVE), dtype=torch.long)
    return PointPrompts(coords[:, None], labels.to(masks.device))


def neighbour_negatives(
    neighbours: torch.Tensor, generator: torch.Generator | None = None, centre_prob: float = 0.5,
) -> PointPrompts:
    """One negative point per object on its touching neighbour, as a user clicks a nucleus
    and then the one pressed against it: with probability ``centre_prob`` the neighbour's
    deepest pixel, else uniform inside it. ``neighbours`` (N, H, W) bool (input frame); an
    object without a neighbour gets a padding point. -> K = 1 prompts."""
    has = neighbours.flatten(1).any(1)
    coords = torch.zeros(len(neighbours), 2, device=neighbours.device)
    if has.any():
        near = neighbours[has]
        picked = sample_in_masks(near, generator)
        centre = torch.rand(len(near), generator=generator, device=near.device) < centre_prob
        if centre.any():
            picked[centre] = interior_points(near[centre])
        coords[has] = picked
    labels = torch.where(has, int(PointLabel.NEGATIVE), int(PointLabel.PAD))
    return PointPrompts(coords[:, None], labels[:, None].long())


def boxes_from_masks(masks: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """(N, 4) float tight boxes (x0, y0, x1, y1) in input pixels of ``masks`` (N, H, W)."""
    rows, cols = masks.any(2), masks.any(1)  # (N, H), (N, W)
    ar_h = torch.arange(masks.shape[1], device=masks.device)
    ar_w = torch.arange(masks.shape[2], device=masks.device)
    big = 1 << 30
    y0 = torch.where(rows, ar_h, big).min(1).values
    y1 = torch.where(rows, ar_h, -1).max(1).values + 1
    x0 = torch.where(cols, ar_w, big).min(1).values
    x1 = torch.where(cols, ar_w, -1).max(1).values + 1
    return torch.stack([x0, y0, x1, y1], 1).float() * scale


def noisy_boxes(
    masks: torch.Tensor, generator: torch.Generator | None = None, scale: float = 1.0,
    noise: float = 0.1, max_noise: float = 20.0,
) -> torch.Tensor:
    """SAM's box prompts: tight boxes with each coordinate moved by Gaussian noise of std
    ``noise`` x the box side, at most ``max_noise`` input pixels. (N, H, W) -> (N, 4)."""
    boxes = boxes_from_masks(masks, scale)
    side = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1).repeat(1, 2)
    jitter = torch.randn(boxes.shape, generator=generator, device=boxes.device) * noise * side
    boxes = boxes + jitter.clamp(-max_noise, max_noise)
    x0, y0, x1, y1 = boxes.unbind(1)
    return torch.stack([torch.minimum(x0, x1 - 1), torch.minimum(y0, y1 - 1), x1, y1], 1)


def corrective_points(
    predicted: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None = None,
    scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One corrective click per object, uniform in the error region of ``predicted``.

    ``predicted``, ``target``: (N, H, W) bool. A point in a missed part (false negative) is
    positive, one in a false positive is negative. An object without error gets a positive
    point inside the target. Returns coords (N, 2) (x, y) input pixels, labels (N,) int64.
    """
    false_neg = target & ~predicted
    false_pos = predicted & ~target
    error = false_neg | false_pos
    clean = ~error.flatten(1).any(1)
    error[clean] = target[clean]
    index = _sample_index(error, generator)
    jitter = _jitter(len(error), scale, generator, error.device)
    coords = _pixel_centres(index, error.shape[2], scale, jitter)
    picked_fn = false_neg.flatten(1).gather(1, index[:, None])[:, 0]
    labels = torch.where(picked_fn | clean, int(PointLabel.POSITIVE), int(PointLabel.NEGATIVE))
    return coords, labels.long()

"""Calibrating the IoU head: make the predicted IoU mean what automatic mode reads it as.

Segment-everything keeps a grid point's mask only when its predicted IoU passes a threshold
(0.88 by default, SAM's value). A small model trained on few steps predicts close to the
average quality of its training prompts (mostly first clicks, often poor), so good masks
get low scores and automatic mode finds nothing. This stage fixes the scale without
touching any mask: the image encoder, prompt encoder and mask decoder are frozen, and only
the IoU head (a 3-layer MLP on the decoder's IoU token) is trained, by MSE, on the prompts
automatic mode uses: a regular grid of single positive points over labelled images, plus
one click at each true object's centre (``prompting.interior_points``: the evaluation's
centre click, the prompt an interactive user gives), so that the head's choice among the
three masks of such a click stays good.

The target of each of the 3 masks of a point is its IoU with the best-matching true object
(0 for a mask that matches none): high for a clean object, low for background, for two
nuclei merged into one, or for a fragment. Masks are compared at the image's resolution
(low-res logits upsampled as the predictor does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_sam.automatic.mask_ops import point_grid
from napari_sam.training.augment import normalise
from napari_sam.training.batch import model_input
from napari_sam.training.data import ImagePair
from napari_sam.training.prompting import interior_points


@dataclass(frozen=True)
class CalibrationReport:
    """Mean absolute error of the predicted IoU (all 3 masks of every grid point) on the
    calibration points, before and after; ``points`` the grid points used."""

    error_before: float
    error_after: float
    points: int


def best_match_iou(masks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """masks (M, H, W) bool, labels (H, W) int64 instance ids (0 background) -> (M,) the
    IoU of each mask with the true object it overlaps best (0 for an empty mask)."""
    n_ids = int(labels.max()) + 1
    areas = torch.bincount(labels.flatten(), minlength=n_ids).float()  # (K,)
    out = torch.zeros(len(masks))
    for i, mask in enumerate(masks):
        inter = torch.bincount(labels[mask], minlength=n_ids).float()[1:]  # (K-1,)
        if inter.numel() == 0 or not mask.any():
            continue
        union = mask.sum() + areas[1:] - inter
        out[i] = (inter / union).max()
    return out


@torch.no_grad()
def _grid_samples(
    model: nn.Module, pair: ImagePair, points_per_side: int, batch: int, centres: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The IoU head's inputs and targets for a grid of points (and, with ``centres``, one
    click per object) on one image: (P*3, C) IoU-token outputs and (P*3,) best-match IoUs."""
    device = next(model.parameters()).device
    inputs = model_input(normalise(pair.image), model.config, device)
    embedding = model.image_encoder(inputs.image)
    shape = pair.labels.shape
    labels = torch.as_tensor(pair.labels.astype(np.int64))
    grid = point_grid(points_per_side) * np.array(shape)  # (P, 2) (row, col)
    xy = torch.as_tensor(grid[:, ::-1].copy(), dtype=torch.float32)
    if centres:  # the evaluation's centre click (pixel indices, as the plugin passes a click)
        ids = labels.unique()
        xy = torch.cat([xy, interior_points(labels[None] == ids[ids > 0, None, None])])
    xy = xy * inputs.scale
    captured: list[torch.Tensor] = []
    head = model.mask_decoder.iou_prediction_head
    hook = head.register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
    tokens, targets = [], []
    size, (h, w) = model.config.image_size, inputs.resized
    try:
        for start in range(0, len(xy), batch):
            coords = xy[start : start + batch, None].to(device)  # (B, 1, 2)
            ones = torch.ones(len(coords), 1, dtype=torch.long, device=device)
            sparse, dense = model.prompt_encoder(points=(coords, ones), boxes=None, masks=None)
            logits, _ = model.mask_decoder(
                image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                multimask_output=True,
            )  # fmt: skip
            up = F.interpolate(logits, (size, size), mode="bilinear", align_corners=False)
            up = F.interpolate(up[..., :h, :w], shape, mode="bilinear", align_corners=False)
            masks = (up > model.config.mask_threshold).flatten(0, 1).cpu()  # (B*3, H, W)
            targets.append(best_match_iou(masks, labels))
            # the head ran on all 4 output tokens' IoU token; multimask keeps columns 1..3
            tokens.append(captured.pop().repeat_interleave(3, dim=0).cpu())
    finally:
        hook.remove()
    return torch.cat(tokens), torch.cat(targets)


def calibrate_iou_head(
    model: nn.Module,
    pairs: Sequence[ImagePair],
    *,
    points_per_side: int = 16,
    steps: int = 300,
    lr: float = 1e-3,
    batch: int = 64,
    seed: int = 0,
    centres: bool = True,
) -> CalibrationReport:
    """Train ``model.mask_decoder.iou_prediction_head`` alone (in place) so that its
    multimask IoU predictions for grid points (and, with ``centres``, each object's centre
    click) on ``pairs`` match the best-match IoUs.
    Everything else in ``model`` is left bit for bit as it was."""
    was_training = model.training
    model.eval()
    samples = [_grid_samples(model, pair, points_per_side, batch, centres) for pair in pairs]
    x = torch.cat([s[0] for s in samples])  # (N, C), rows in groups of 3 (one per mask)
    y = torch.cat([s[1] for s in samples])  # (N,)
    column = torch.arange(len(x)) % 3 + 1  # the head's output for mask k is column k
    head = model.mask_decoder.iou_prediction_head
    device = next(head.parameters()).device
    x, y, column = x.to(device), y.to(device), column.to(device)

    def predicted() -> torch.Tensor:
        return head(x).gather(1, column[:, None])[:, 0]

    with torch.no_grad():
        before = float((predicted() - y).abs().mean())
    optimiser = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        for _ in range(steps):
            pick = torch.randint(len(x), (min(1024, len(x)),), generator=generator).to(device)
            loss = F.mse_loss(head(x[pick]).gather(1, column[pick, None])[:, 0], y[pick])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        after = float((predicted() - y).abs().mean())
    model.train(was_training)
    return CalibrationReport(before, after, len(x) // 3)

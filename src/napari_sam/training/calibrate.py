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

The target of each of the 3 masks of a grid point is its IoU with the best-matching true
object (0 for a mask that matches none): high for a clean object, low for background, for
two nuclei merged into one, or for a fragment. A centre click's target is the IoU with the
object clicked (a mask of the neighbour is wrong for that click). Masks are compared at the
image's resolution (low-res logits upsampled as the predictor does).

The loss is the MSE plus, with ``rank_weight``, a pairwise logistic loss on the order of the
three predictions of each click (whenever one mask's true IoU beats another's by more than
``RANK_MARGIN``): the head's argmax is what picks the mask of a single click, and the MSE
alone, dominated by the grid's background and edge clicks, can fit the scale while getting
the order of a centre click's three masks wrong.
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
from napari_sam.training.losses import mask_iou
from napari_sam.training.prompting import interior_points

RANK_MARGIN = 0.05  # true-IoU gap under which two masks of a click are not ranked
RANK_TEMPERATURE = 0.05  # scale of the predicted-IoU differences in the ranking loss


@dataclass(frozen=True)
class CalibrationReport:
    """Mean absolute error of the predicted IoU (all 3 masks of every calibration click),
    before and after; ``points`` the clicks used (grid and centres); ``pick_before`` /
    ``pick_after``: over the centre clicks, the mean true IoU of the mask the head picks
    (its argmax), as a single click in the plugin gets (nan without centres)."""

    error_before: float
    error_after: float
    points: int
    pick_before: float = float("nan")
    pick_after: float = float("nan")


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


def ranking_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred, target (G, M): the predicted and true IoUs of each click's M masks -> the
    mean pairwise logistic loss over the ordered pairs whose true IoUs differ by more than
    ``RANK_MARGIN`` (0 when there are none)."""
    gap = target[:, :, None] - target[:, None, :]  # (G, M, M): i better than j by gap
    wanted = gap > RANK_MARGIN
    if not wanted.any():
        return pred.sum() * 0.0
    diff = (pred[:, :, None] - pred[:, None, :]) / RANK_TEMPERATURE
    return F.softplus(-diff[wanted]).mean()


@torch.no_grad()
def _grid_samples(
    model: nn.Module, pair: ImagePair, points_per_side: int, batch: int, centres: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The IoU head's inputs and targets for a grid of points (and, with ``centres``, one
    click per object) on one image: (P, C) IoU-token outputs, (P*3,) target IoUs (best
    match for a grid point, the clicked object for a centre) and (P,) bool, True for a
    centre click."""
    device = next(model.parameters()).device
    inputs = model_input(normalise(pair.image), model.config, device)
    embedding = model.image_encoder(inputs.image)
    shape = pair.labels.shape
    labels = torch.as_tensor(pair.labels.astype(np.int64))
    grid = point_grid(points_per_side) * np.array(shape)  # (P, 2) (row, col)
    xy = torch.as_tensor(grid[:, ::-1].copy(), dtype=torch.float32)
    n_grid = len(xy)
    objects = torch.zeros(0, *shape, dtype=torch.bool)
    if centres:  # the evaluation's centre click (pixel indices, as the plugin passes a click)
        ids = labels.unique()
        objects = labels[None] == ids[ids > 0, None, None]  # (K, H, W)
        xy = torch.cat([xy, interior_points(objects)])
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
            up = (up - model.config.mask_threshold).cpu()  # (B, 3, H, W), > 0 inside
            n = max(min(n_grid - start, len(up)), 0)  # grid clicks in this batch, then centres
            targets.extend(best_match_iou(three > 0, labels) for three in up[:n])
            if n < len(up):  # a centre click is scored against the object clicked
                clicked = objects[start + n - n_grid : start + len(up) - n_grid, None]
                targets.extend(mask_iou(up[n:], clicked.float()))
            tokens.append(captured.pop().cpu())  # the head's input: (B, C) IoU tokens
    finally:
        hook.remove()
    is_centre = torch.arange(len(xy)) >= n_grid
    return torch.cat(tokens), torch.cat(targets), is_centre


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
    rank_weight: float = 0.1,
) -> CalibrationReport:
    """Train ``model.mask_decoder.iou_prediction_head`` alone (in place) so that its
    multimask IoU predictions for grid points (and, with ``centres``, each object's centre
    click) on ``pairs`` match the true IoUs, and (``rank_weight``) rank each click's three
    masks as their true IoUs do. Everything else in ``model`` is left bit for bit as it was."""
    was_training = model.training
    model.eval()
    samples = [_grid_samples(model, pair, points_per_side, batch, centres) for pair in pairs]
    head = model.mask_decoder.iou_prediction_head
    device = next(head.parameters()).device
    x = torch.cat([s[0] for s in samples]).to(device)  # (G, C) each click's IoU token
    y = torch.cat([s[1] for s in samples]).reshape(-1, 3).to(device)  # (G, 3) true IoUs
    is_centre = torch.cat([s[2] for s in samples]).to(device)  # (G,)

    def predicted(rows: torch.Tensor) -> torch.Tensor:
        return head(rows)[:, 1:4]  # multimask output: the head's columns 1..3

    def pick_quality(pred: torch.Tensor) -> float:
        if not is_centre.any():
            return float("nan")
        chosen = y[is_centre].gather(1, pred[is_centre].argmax(1, keepdim=True))
        return float(chosen.mean())

    with torch.no_grad():
        pred = predicted(x)
        before, pick_before = float((pred - y).abs().mean()), pick_quality(pred)
    optimiser = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        for _ in range(steps):
            pick = torch.randint(len(x), (min(1024, len(x)),), generator=generator).to(device)
            pred = predicted(x[pick])
            loss = F.mse_loss(pred, y[pick])
            if rank_weight:
                loss = loss + rank_weight * ranking_loss(pred, y[pick])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        pred = predicted(x)
        after, pick_after = float((pred - y).abs().mean()), pick_quality(pred)
    model.train(was_training)
    return CalibrationReport(before, after, len(x), pick_before, pick_after)

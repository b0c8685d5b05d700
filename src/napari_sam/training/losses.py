"""SAM's training loss: focal + dice at 20:1 on the best of the predicted masks, plus the MSE
between predicted and actual IoU.

Shapes: ``logits`` (N, M, H, W) with M = 1 or 3 masks per object; ``target`` (N, 1, H, W)
float in [0, 1] (soft where a target pixel straddles the object's edge at low resolution).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossTerms:
    """Scalar loss terms (0-dim tensors): ``total`` = focal_weight x focal + dice + iou."""

    total: torch.Tensor
    focal: torch.Tensor
    dice: torch.Tensor
    iou: torch.Tensor


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """(N, M) sigmoid focal loss (RetinaNet), mean over pixels; soft targets allowed."""
    target = target.expand_as(logits)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return (alpha_t * ce * (1 - p_t) ** gamma).flatten(2).mean(2)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """(N, M) soft dice loss, 1 - (2|P.T| + eps) / (|P| + |T| + eps)."""
    prob = logits.sigmoid().flatten(2)
    target = target.expand_as(logits).flatten(2)
    inter = (prob * target).sum(2)
    return 1 - (2 * inter + eps) / (prob.sum(2) + target.sum(2) + eps)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, M) IoU of the thresholded masks (logits > 0) with ``target`` > 0.5; no gradient.
    An empty prediction of an empty target counts as IoU 1."""
    pred = (logits > 0).flatten(2)
    true = (target > 0.5).expand_as(logits).flatten(2)
    inter = (pred & true).sum(2).float()
    union = (pred | true).sum(2).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def sam_loss(
    logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor, focal_weight: float = 20.0
) -> LossTerms:
    """SAM's loss for one round: ``logits`` (N, M, H, W), ``iou_pred`` (N, M), ``target``
    (N, 1, H, W). The mask loss of each object is the lowest over its M masks (so gradient
    flows only through that mask); the IoU loss covers all M predictions."""
    focal = focal_loss(logits, target)
    dice = dice_loss(logits, target)
    per_mask = focal_weight * focal + dice  # (N, M)
    best = per_mask.argmin(1, keepdim=True)  # (N, 1)
    focal_b = focal.gather(1, best).mean()
    dice_b = dice.gather(1, best).mean()
    iou_l = F.mse_loss(iou_pred, mask_iou(logits.detach(), target))
    return LossTerms(focal_weight * focal_b + dice_b + iou_l, focal_b, dice_b, iou_l)


def dice_error(prob: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """0-dim dice error 1 - 2|P.T| / (|P|^2 + |T|^2) over a whole batch ``prob`` / ``target``
    (B, 1, H, W) in [0, 1]: torch_em's ``DiceLoss`` for one channel."""
    inter = (prob * target).sum()
    return 1 - 2 * inter / ((prob * prob).sum() + (target * target).sum()).clamp(min=eps)


def distance_loss(maps: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """micro-sam's AIS loss (torch_em's ``DiceBasedDistanceLoss(mask_distances_in_bg=True)``):
    the dice error of the foreground plus those of both distance maps inside the true
    foreground. ``maps`` / ``target``: (B, 3, H, W) in [0, 1], channels foreground, centre
    distance, boundary distance."""
    fg = target[:, 0:1]
    loss = dice_error(maps[:, 0:1], fg)
    for c in (1, 2):
        loss = loss + dice_error(maps[:, c : c + 1] * fg, target[:, c : c + 1] * fg)
    return loss

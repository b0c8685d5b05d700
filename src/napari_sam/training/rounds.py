"""SAM's interactive training rounds on one image embedding.

Per object: a first prompt (a point or a box; or, on a slice of a stack, what a propagation
step carries from the slice next to it: the object's mask there as the dense prompt and a
click at its centre); then ``corrective`` rounds, each adding a
point from the error region of the best mask so far, with that mask's logits as the mask
input; then ``refine`` rounds with no new point. The image is encoded once; the rounds run
on the decoder, detached from each other (the mask input carries no gradient).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from napari_sam.training.batch import Targets
from napari_sam.training.losses import LossTerms, mask_iou, sam_loss
from napari_sam.training.prompting import (
    PointPrompts,
    corrective_points,
    first_points,
    neighbour_negatives,
    noisy_boxes,
)
from napari_sam.transforms import fraction_logits


@dataclass(frozen=True)
class RoundsConfig:
    """The prompt simulation.

    ``random_depth``: instead of running every round, each step stops after a random round
    (0 with probability ``depth_zero_prob``, else uniform), which makes a CPU step cheaper.
    ``loss_rounds``: "all" puts a loss (with gradient) on every round run, "first_last"
    only on the first and the last (the others run without autograd).
    ``neighbour_negative_prob``: the share of point-prompted objects that touch a neighbour
    whose first prompt also has a negative point on that neighbour (needs the targets'
    ``neighbours``).
    ``carried_prob``: the share of objects on a slice of a stack that are also, at least as
    large, on the slice next to it (needs the targets' ``previous``) whose first prompt is a
    propagation step from there: that slice's mask as the dense prompt (logits, as
    :func:`~napari_sam.transforms.fraction_logits` makes them) and a click at its centre, as
    :func:`napari_sam.propagation.carried_prompt` carries them. Propagation steps away from
    the prompted slice, mostly an object's middle: only those steps are drawn, so the model
    learns to shrink the carried mask towards the object's ends, where the slice shows its
    out-of-focus light, rather than to copy it (steps of any direction mostly ask for a copy).
    """

    corrective: int = 8
    refine: int = 2
    box_prob: float = 0.5
    centre_prob: float = 0.3
    random_depth: bool = False
    depth_zero_prob: float = 0.0
    loss_rounds: Literal["all", "first_last"] = "all"
    focal_weight: float = 20.0
    neighbour_negative_prob: float = 0.0
    carried_prob: float = 0.0

    def __post_init__(self) -> None:
        for name in ("neighbour_negative_prob", "carried_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    @property
    def total(self) -> int:
        """The number of rounds of a full simulation, the first prompt's included."""
        return 1 + self.corrective + self.refine


def _last_round(config: RoundsConfig, generator: torch.Generator) -> int:
    if not config.random_depth:
        return config.total - 1
    if torch.rand((), generator=generator) < config.depth_zero_prob:
        return 0
    return int(torch.randint(config.total, (), generator=generator))


def _mean_terms(terms: list[tuple[LossTerms, int]]) -> LossTerms:
    """Object-weighted mean of per-round loss terms."""
    n = sum(k for _, k in terms)
    return LossTerms(
        *(sum(getattr(t, f) * k for t, k in terms) / n for f in ("total", "focal", "dice", "iou"))
    )


def simulate_rounds(
    model: nn.Module,
    embedding: torch.Tensor,
    targets: Targets,
    config: RoundsConfig,
    generator: torch.Generator,
) -> LossTerms:
    """The mean loss over the rounds with a loss, for all objects of one image.

    ``model``: has SAM's ``prompt_encoder`` and ``mask_decoder``; ``embedding``: (1, C, h, w)
    the image's embedding (with autograd when the encoder trains); ``targets``: N objects.
    Gradient flows where autograd is enabled by the caller.
    """
    n = len(targets.full)
    last = _last_round(config, generator)
    loss_at = set(range(last + 1)) if config.loss_rounds == "all" else {0, last}
    is_box = torch.rand(n, generator=generator) < config.box_prob
    with_negative = torch.zeros(n, dtype=torch.bool)
    if config.neighbour_negative_prob > 0 and targets.neighbours is not None:
        touching = targets.neighbours.flatten(1).any(1).cpu()
        coin = torch.rand(n, generator=generator) < config.neighbour_negative_prob
        with_negative = ~is_box & touching & coin
    carried = torch.zeros(n, dtype=torch.bool)
    if config.carried_prob > 0 and targets.previous is not None:
        there = targets.previous.amax((1, 2, 3)).cpu() > 0.5  # on the decoder's grid there
        # a step away from the prompted slice: the object was at least as large there
        outward = (targets.previous.sum((1, 2, 3)) >= targets.low_res.sum((1, 2, 3))).cpu()
        carried = there & outward & (torch.rand(n, generator=generator) < config.carried_prob)
    terms: list[tuple[LossTerms, int]] = []
    for kind, group in (("box", is_box & ~carried),
                        ("point", ~is_box & ~with_negative & ~carried),
                        ("negative", with_negative & ~carried), ("carried", carried)):
        if group.any():
            sub = targets.select(group.to(targets.full.device))
            boxes = noisy_boxes(sub.full, generator) if kind == "box" else None
            terms.append((_group_rounds(model, embedding, sub, boxes, kind, last, loss_at,
                                        config, generator), int(group.sum())))
    return _mean_terms(terms)


def _group_rounds(
    model: nn.Module,
    embedding: torch.Tensor,
    targets: Targets,
    boxes: torch.Tensor | None,
    kind: Literal["box", "point", "negative", "carried"],
    last: int,
    loss_at: set[int],
    config: RoundsConfig,
    generator: torch.Generator,
) -> LossTerms:
    """The rounds of objects sharing one kind of first prompt: all boxes (``boxes``), all
    points (with a negative point on each object's neighbour for ``"negative"``), or all
    carried from the slice next to theirs (``"carried"``)."""
    n = len(targets.full)
    mask_input = None
    if kind == "carried":
        before = targets.previous[:, 0] > 0.5  # (N, L, L) on the slice next door
        points = first_points(before, generator, targets.stride, centre_prob=1.0)
        mask_input = fraction_logits(targets.previous)
    elif boxes is None:
        points = first_points(targets.full, generator, centre_prob=0.0)
        if config.centre_prob > 0:
            # The centre click, from the low-res grid (cheap erosions), for some objects.
            centre = first_points(
                targets.low_res[:, 0] > 0.5, generator, targets.stride, centre_prob=1.0
            )
            pick = torch.rand(n, generator=generator) < config.centre_prob
            points = PointPrompts(
                torch.where(pick[:, None, None], centre.coords, points.coords), points.labels
            )
        if kind == "negative":
            near = neighbour_negatives(targets.neighbours, generator)
            points = points.append(near.coords[:, 0], near.labels[:, 0])
    else:
        points = PointPrompts.empty(n, embedding.device)
    target = targets.low_res
    target_bool = target[:, 0] > 0.5
    dense_pe = model.prompt_encoder.get_dense_pe()
    terms: list[tuple[LossTerms, int]] = []
    for r in range(last + 1):
        with torch.set_grad_enabled(torch.is_grad_enabled() and r in loss_at):
            k = points.coords.shape[1]
            sparse, dense = model.prompt_encoder(
                points=(points.coords, points.labels) if k else None, boxes=boxes, masks=mask_input
            )
            multimask = boxes is None and k == 1 and mask_input is None
            logits, iou_pred = model.mask_decoder(
                image_embeddings=embedding,
                image_pe=dense_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )
            if r in loss_at:
                terms.append((sam_loss(logits, iou_pred, target, config.focal_weight), n))
        if r == last:
            break
        with torch.no_grad():
            best = mask_iou(logits, target).argmax(1)
            best_logits = logits[torch.arange(n), best]  # (N, L, L)
            mask_input = best_logits[:, None].detach()
            if r < config.corrective:
                coords, labels = corrective_points(
                    best_logits > 0, target_bool, generator, targets.stride
                )
                points = points.append(coords, labels)
    return _mean_terms(terms)

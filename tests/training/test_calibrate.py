"""IoU-head calibration: the targets are the right IoUs, only the head changes, and the
predicted IoUs move towards the truth."""

from __future__ import annotations

import numpy as np
import torch

from napari_sam.model.checkpoints import load_model
from napari_sam.training.calibrate import (
    best_match_iou,
    calibrate_iou_head,
    ranking_loss,
)
from napari_sam.training.data import ImagePair
from napari_sam.training.losses import mask_iou
from napari_sam.training.synthetic import synthetic_nuclei


def test_best_match_iou_scores_each_mask_against_its_best_object():
    labels = torch.zeros(10, 10, dtype=torch.int64)
    labels[1:4, 1:4] = 1  # 9 px
    labels[5:9, 5:9] = 2  # 16 px
    exact = labels == 1
    half = torch.zeros(10, 10, dtype=torch.bool)
    half[5:9, 5:7] = True  # 8 of object 2's 16 px
    merged = labels > 0  # both objects: best is object 2, 16 / 25
    background = torch.zeros(10, 10, dtype=torch.bool)
    background[0, :] = True
    empty = torch.zeros(10, 10, dtype=torch.bool)
    got = best_match_iou(torch.stack([exact, half, merged, background, empty]), labels)
    torch.testing.assert_close(got, torch.tensor([1.0, 0.5, 16 / 25, 0.0, 0.0]))


def test_calibration_trains_the_iou_head_alone_and_lowers_its_error(tiny_model, easy_pair):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    report = calibrate_iou_head(tiny_model, [easy_pair], points_per_side=6, steps=150,
                                lr=3e-3)  # fmt: skip
    assert report.points == 36 + len(np.unique(easy_pair.labels[easy_pair.labels > 0]))
    assert report.error_after < 0.5 * report.error_before, report
    changed = {k for k, v in tiny_model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("mask_decoder.iou_prediction_head.") for k in changed)


def test_a_centre_clicks_masks_are_scored_against_the_clicked_object_only():
    true = torch.zeros(6, 6, dtype=torch.bool)
    true[0:2, 0:2] = True  # 4 px
    neighbour = torch.zeros(6, 6, dtype=torch.bool)
    neighbour[3:6, 3:6] = True  # a perfect mask of another object is 0 for this click
    grown = true.clone()
    grown[0:2, 2:4] = True  # 8 px holding the 4
    masks = torch.stack([true, neighbour, grown]).float() * 2 - 1  # as logits
    got = mask_iou(masks[None], true[None, None].float())[0]
    torch.testing.assert_close(got, torch.tensor([1.0, 0.0, 0.5]))


def test_ranking_loss_penalises_a_wrong_order_and_ignores_near_ties():
    target = torch.tensor([[0.9, 0.2, 0.5]])
    right = ranking_loss(torch.tensor([[0.8, 0.3, 0.6]]), target)
    wrong = ranking_loss(torch.tensor([[0.3, 0.8, 0.6]]), target)
    assert wrong > 10 * right
    ties = torch.tensor([[0.50, 0.52, 0.54]])  # within the margin: nothing to rank
    assert ranking_loss(torch.tensor([[0.9, 0.1, 0.5]], requires_grad=True), ties) == 0


def test_calibration_improves_the_mask_picked_for_a_centre_click():
    """The report's pick is the mean true IoU of the mask the head chooses among the three
    of each object's centre click; the bundled model's choice improves when calibrated."""
    sample = synthetic_nuclei((256, 256), seed=1)
    model = load_model("bundled").model.float()
    report = calibrate_iou_head(model, [ImagePair(sample.image, sample.labels)],
                                points_per_side=4, steps=200)  # fmt: skip
    assert report.points > 16  # the grid and at least one centre
    assert report.pick_after > report.pick_before + 0.05, report
    grid_only = calibrate_iou_head(model, [ImagePair(sample.image, sample.labels)],
                                   points_per_side=4, steps=1, centres=False)  # fmt: skip
    assert np.isnan(grid_only.pick_after)

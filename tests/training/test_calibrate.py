"""IoU-head calibration: the targets are the right IoUs, only the head changes, and the
predicted IoUs move towards the truth."""

from __future__ import annotations

import numpy as np
import torch

from napari_sam.training.calibrate import best_match_iou, calibrate_iou_head


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

import torch

from napari_sam.training.losses import dice_loss, focal_loss, mask_iou, sam_loss


def _target():
    t = torch.zeros(2, 1, 16, 16)
    t[0, 0, 4:10, 4:10] = 1
    t[1, 0, 2:6, 8:14] = 1
    return t


def test_good_prediction_has_low_loss_and_iou_one():
    t = _target()
    good = (t * 2 - 1) * 10
    assert focal_loss(good, t).max() < 1e-4 and dice_loss(good, t).max() < 0.01
    assert torch.equal(mask_iou(good, t), torch.ones(2, 1))
    assert (focal_loss(-good, t) > 0.1).all() and (dice_loss(-good, t) > 0.9).all()
    assert torch.equal(mask_iou(-good, t), torch.zeros(2, 1))


def test_only_the_best_mask_gets_gradient():
    t = _target()
    logits = torch.stack([-(t[:, 0] * 2 - 1) * 5, (t[:, 0] * 2 - 1) * 3, torch.zeros(2, 16, 16)], 1)
    logits.requires_grad_(True)
    iou_pred = torch.full((2, 3), 0.5, requires_grad=True)
    terms = sam_loss(logits, iou_pred, t)
    terms.total.backward()
    per_mask = logits.grad.flatten(2).abs().sum(2)
    assert (per_mask[:, 1] > 0).all() and (per_mask[:, [0, 2]] == 0).all()
    # The IoU head is trained on all three masks, towards the actual IoU (0, 1, 0).
    assert (iou_pred.grad[:, 1] < 0).all() and (iou_pred.grad[:, [0, 2]] > 0).all()
    assert torch.allclose(terms.total, 20 * terms.focal + terms.dice + terms.iou)

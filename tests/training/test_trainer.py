import itertools
from typing import get_args

import numpy as np
import pytest
import torch
from training_helpers import TINY, FixedSampler

from napari_sam.model.sam import build_sam
from napari_sam.training.augment import AugmentConfig
from napari_sam.training.rounds import RoundsConfig
from napari_sam.training.trainer import (
    FROZEN,
    Freeze,
    TrainConfig,
    Trainer,
    export_weights,
    learning_rate,
    trainable_parameters,
)

QUICK_ROUNDS = RoundsConfig(corrective=2, refine=1)


def test_a_few_dozen_steps_lower_the_loss_on_a_fixed_batch(tiny_model, easy_pair):
    torch.manual_seed(0)
    config = TrainConfig(steps=40, lr=1e-3, warmup_steps=5, objects_per_image=6,
                         rounds=QUICK_ROUNDS, augment=AugmentConfig.none())
    trainer = Trainer(tiny_model, config, FixedSampler(easy_pair))
    before = trainer.batch_loss(0).total.item()
    reports = list(trainer.run())
    after = trainer.batch_loss(0).total.item()
    assert len(reports) == 40 and trainer.step == 40
    assert all(np.isfinite(r.loss) for r in reports)
    assert after < 0.7 * before


def test_learning_rate_schedule():
    config = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [learning_rate(config, s) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] == pytest.approx(0.1, abs=0.01)


def test_freeze_options(tiny_model):
    n_all = len(trainable_parameters(tiny_model, "none"))
    decoder = trainable_parameters(tiny_model, "all_but_decoder")
    no_encoder = trainable_parameters(tiny_model, "image_encoder")
    assert len(decoder) < len(no_encoder) < n_all
    assert not any(p.requires_grad for p in tiny_model.image_encoder.parameters())
    heads = trainable_parameters(tiny_model, "all_but_decoder_heads")
    assert 0 < len(heads) < len(decoder)
    mask_decoder = tiny_model.mask_decoder
    assert not any(p.requires_grad for p in mask_decoder.transformer.parameters())
    assert not mask_decoder.mask_tokens.weight.requires_grad
    assert not mask_decoder.iou_token.weight.requires_grad
    assert not any(p.requires_grad for p in tiny_model.prompt_encoder.parameters())
    for head in (mask_decoder.output_upscaling, mask_decoder.output_hypernetworks_mlps,
                 mask_decoder.iou_prediction_head):
        assert all(p.requires_grad for p in head.parameters())
    with pytest.raises(ValueError, match="freeze must be one of"):
        trainable_parameters(tiny_model, "decoder")
    assert set(FROZEN) == set(get_args(Freeze))  # the CLI offers get_args(Freeze)


def test_decoder_only_training_leaves_the_encoder_unchanged(tiny_model, easy_pair):
    encoder_before = {k: v.clone() for k, v in tiny_model.image_encoder.state_dict().items()}
    decoder_before = tiny_model.mask_decoder.output_upscaling[0].weight.clone()
    config = TrainConfig(steps=2, lr=1e-3, warmup_steps=1, objects_per_image=2,
                         freeze="all_but_decoder", rounds=QUICK_ROUNDS)
    list(Trainer(tiny_model, config, FixedSampler(easy_pair)).run())
    for k, v in tiny_model.image_encoder.state_dict().items():
        assert torch.equal(v, encoder_before[k])
    assert not torch.equal(tiny_model.mask_decoder.output_upscaling[0].weight, decoder_before)


def test_checkpoint_resumes_exactly(tmp_path, tiny_model, easy_pair):
    config = TrainConfig(steps=4, lr=1e-3, warmup_steps=1, objects_per_image=3,
                         rounds=RoundsConfig(corrective=1, refine=1))
    a = Trainer(tiny_model, config, FixedSampler(easy_pair))
    list(a.run(until=2))
    a.save_checkpoint(tmp_path / "ck.pt")
    list(a.run())
    torch.manual_seed(1)
    b = Trainer(build_sam(TINY), config, FixedSampler(easy_pair))
    b.load_checkpoint(tmp_path / "ck.pt")
    assert b.step == 2
    list(b.run())
    for k, v in a.model.state_dict().items():
        assert torch.allclose(v, b.model.state_dict()[k], atol=1e-6), k


def test_exported_weights_load_strictly_in_our_model(tmp_path, tiny_model, easy_pair):
    config = TrainConfig(steps=1, objects_per_image=2, rounds=QUICK_ROUNDS)
    list(Trainer(tiny_model, config, FixedSampler(easy_pair)).run())
    for dtype in (torch.float32, torch.float16):
        path = export_weights(tiny_model, tmp_path / "w.pt", dtype)
        state = torch.load(path, weights_only=True)
        assert all(v.dtype == dtype for v in state.values() if v.is_floating_point())
        fresh = build_sam(TINY)
        fresh.load_state_dict(state, strict=True)
        tol = 0 if dtype == torch.float32 else 1e-2
        for k, v in tiny_model.state_dict().items():
            assert torch.allclose(fresh.state_dict()[k], v, atol=tol, rtol=tol), k


def test_neighbour_negatives_put_a_negative_click_on_the_touching_neighbour(tiny_model):
    """With --neighbour-negatives, clicked objects that touch another get a first prompt of
    a positive click inside and a negative click on the neighbour."""
    from napari_sam.training.data import ImagePair

    labels = np.zeros((128, 128), np.int32)
    labels[30:60, 20:50] = 1
    labels[30:60, 50:80] = 2  # pressed against 1
    image = np.where(labels > 0, 200, 20).astype(np.uint8)
    seen = []
    encode = tiny_model.prompt_encoder.forward

    def spy(points, boxes, masks):
        if points is not None and masks is None:
            seen.append((points[0].clone(), points[1].clone()))
        return encode(points, boxes, masks)

    tiny_model.prompt_encoder.forward = spy
    rounds = RoundsConfig(corrective=0, refine=0, box_prob=0.0, neighbour_negative_prob=1.0)
    config = TrainConfig(steps=1, warmup_steps=0, objects_per_image=2, rounds=rounds,
                         augment=AugmentConfig.none())
    list(Trainer(tiny_model, config, FixedSampler(ImagePair(image, labels))).run())
    (coords, point_labels), = seen
    assert point_labels.tolist() == [[1, 0], [1, 0]]
    # Input frame = image frame here (128 px model input): look the clicks up in labels.
    at = labels[coords[..., 1].round().long(), coords[..., 0].round().long()]
    assert sorted(at.tolist()) == [[1, 2], [2, 1]]


def test_carried_rounds_prompt_with_the_next_slices_mask_and_a_click_at_its_centre(tiny_model):
    """With --carried, an object on a slice of a stack that is also, at least as large, on
    the slice next to it is prompted as propagation prompts it: that slice's mask and a
    click at its centre; an object the next slice does not have, or has smaller (a step
    towards the object's middle), gets its usual first prompt."""
    from napari_sam.training.data import ImagePair

    labels = np.zeros((128, 128), np.int32)
    labels[30:60, 20:50] = 1
    labels[80:110, 80:110] = 2  # only on this slice
    labels[80:120, 10:50] = 3
    previous = np.zeros_like(labels)
    previous[28:64, 32:68] = 1  # object 1 next door: larger, moved right
    previous[90:110, 20:40] = 3  # object 3 next door: smaller
    image = np.where(labels > 0, 200, 20).astype(np.uint8)
    seen = []
    encode = tiny_model.prompt_encoder.forward

    def spy(points, boxes, masks):
        seen.append((points, boxes, masks))
        return encode(points, boxes, masks)

    tiny_model.prompt_encoder.forward = spy
    rounds = RoundsConfig(corrective=0, refine=0, box_prob=0.0, carried_prob=1.0)
    config = TrainConfig(steps=1, warmup_steps=0, objects_per_image=3, rounds=rounds,
                         augment=AugmentConfig.none())
    list(Trainer(tiny_model, config, FixedSampler(ImagePair(image, labels, previous))).run())
    clicked, carried = seen  # plain clicks on objects 2 and 3, then the carried prompt on 1
    assert clicked[2] is None and carried[2] is not None and carried[1] is None
    # Input frame = image frame here (128 px input, 32 px mask grid): look things up.
    (x, y), = carried[0][0][0].round().long().tolist()
    assert carried[0][1].tolist() == [[1]] and 36 <= y < 56 and 40 <= x < 60  # its centre
    dense = carried[2][0, 0] > 0
    assert torch.equal(dense, torch.from_numpy(previous[::4, ::4] == 1))
    at = [labels[y, x] for (x, y) in clicked[0][0][:, 0].round().long().tolist()]
    assert sorted(at) == [2, 3]
    with pytest.raises(ValueError, match="carried_prob"):
        RoundsConfig(carried_prob=1.5)


def test_evaluate_measures_what_the_plugin_gives_and_keeps_the_training_mode(tiny_model,
                                                                             easy_pair):  # fmt: skip
    from napari_sam.predictor import Predictor
    from napari_sam.training.evaluate import EvalObject, evaluate, evaluate_prompting

    objects = [EvalObject(easy_pair, int(i)) for i in np.unique(easy_pair.labels)[1:4]]
    tiny_model.train()
    result = evaluate(tiny_model, objects)
    assert tiny_model.training and result.count == 3
    plugin = evaluate_prompting(Predictor(tiny_model), objects, zoom="off",
                                multimask=("single", "best"))  # fmt: skip
    assert (result.box_miou, result.point_miou) == (plugin.box_miou, plugin.point_miou)

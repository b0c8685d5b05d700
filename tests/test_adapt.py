"""Adapt to my objects: a short finetune of the bundled model on committed objects. The
adapted weights save and load back with the same masks, the base model is never touched
(reverting gives its masks, cancelling leaves it), and an adapted encoder changes the
embedding signature."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_sam.jobs import Cancelled, CancelToken, cancellable
from napari_sam.predictor import Predictor
from napari_sam.prompts import Prompt
from napari_sam.training.adapt import AdaptSettings, CommittedPlane, adapt, adapt_steps
from napari_sam.training.evaluate import binary_iou
from napari_sam.training.synthetic import NucleiStyle, synthetic_nuclei


@pytest.fixture(scope="module")
def base():
    return Predictor.load("bundled", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def scene():
    sample = synthetic_nuclei((192, 192), seed=7, style=NucleiStyle())
    ids = np.unique(sample.labels[sample.labels > 0])[:6]
    committed = np.where(np.isin(sample.labels, ids), sample.labels, 0).astype(np.int64)
    return sample.image, sample.labels, committed


def quick(target: str = "decoder", steps: int = 3) -> AdaptSettings:
    return AdaptSettings(budget_s=600, max_steps=steps, target=target, objects_per_step=2)


def state_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def prompts(labels: np.ndarray) -> list[Prompt]:
    """A click at the centre and the box of three objects of ``labels``."""
    out = []
    for i in np.unique(labels[labels > 0])[-3:]:
        rows, cols = np.nonzero(labels == i)
        out.append(Prompt.from_points(np.array([[rows.mean(), cols.mean()]])))
        out.append(Prompt.from_box(np.array([rows.min(), cols.min(), rows.max() + 1,
                                             cols.max() + 1])))  # fmt: skip
    return out


def logits_of(predictor: Predictor, image: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    embedding = predictor.embed(image, contrast_limits=(float(image.min()), float(image.max())))
    return [predictor.predict(embedding, p).logits[0].numpy() for p in prompts(labels)]


@pytest.fixture(scope="module")
def adapted(base, scene):
    image, _labels, committed = scene
    return adapt(base, [CommittedPlane(image, committed)], quick())


def test_the_adapted_weights_load_back_and_give_the_same_masks(adapted, scene, tmp_path):
    image, labels, _ = scene
    mine = logits_of(adapted.predictor, image, labels)
    before = logits_of(adapted.base, image, labels)
    assert any(not np.allclose(a, b, atol=1e-3) for a, b in zip(mine, before))  # it learned
    path = adapted.save(tmp_path / "adapted.pt")
    loaded = Predictor.load(str(path), device="cpu", precision="fp32")
    assert loaded.instance_decoder is not None  # automatic segmentation comes along
    for a, b in zip(logits_of(loaded, image, labels), mine):
        np.testing.assert_allclose(a, b, atol=1e-4)
        assert np.array_equal(a > 0, b > 0)


def test_the_base_model_is_untouched_so_reverting_gives_its_masks(base, scene):
    image, labels, committed = scene
    weights, masks = state_of(base.model), logits_of(base, image, labels)
    result = adapt(base, [CommittedPlane(image, committed)], quick())
    assert result.base is base
    for key, value in state_of(base.model).items():
        assert torch.equal(value, weights[key]), key
    for a, b in zip(logits_of(result.base, image, labels), masks):
        np.testing.assert_array_equal(a, b)


def test_cancelling_stops_within_a_step_and_leaves_the_base_model(base, scene):
    image, _labels, committed = scene
    weights = state_of(base.model)
    token = CancelToken()
    steps = adapt_steps(base, [CommittedPlane(image, committed)], quick(steps=50))
    with cancellable(token):
        next(steps)
        token.cancel()
        with pytest.raises(Cancelled):
            next(steps)
    for key, value in state_of(base.model).items():
        assert torch.equal(value, weights[key]), key


def test_an_adapted_encoder_changes_the_embedding_signature(base, adapted, scene):
    image, _labels, committed = scene
    assert adapted.predictor.signature == base.signature  # decoder only: embeddings stay valid
    assert not adapted.encoder_changed
    result = adapt(base, [CommittedPlane(image, committed)], quick("decoder+encoder", 2))
    assert result.encoder_changed
    assert result.predictor.signature != base.signature
    assert set(result.predictor.model.state_dict()) == set(base.model.state_dict())  # merged
    stale = base.embed(image)
    with pytest.raises(ValueError, match="embed the image again"):
        result.predictor.predict(stale, Prompt.from_points(np.array([[96.0, 96.0]])))
    fresh = result.predictor.embed(image)
    assert not torch.allclose(fresh.features, stale.features, atol=1e-4)


def test_heads_only_leaves_the_decoders_transformer_as_it_was(base, scene):
    image, labels, committed = scene
    settings = AdaptSettings(budget_s=600, max_steps=3, objects_per_step=2, decoder_part="heads",
                             fit_choice=False)  # fmt: skip
    result = adapt(base, [CommittedPlane(image, committed)], settings)
    before, after = state_of(base.model), state_of(result.predictor.model)
    frozen = ("mask_decoder.transformer.", "mask_decoder.iou_token.", "mask_decoder.mask_tokens.",
              "image_encoder.", "prompt_encoder.")  # fmt: skip
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and not any(k.startswith(frozen) for k in changed)
    for head in ("output_hypernetworks_mlps", "output_upscaling", "iou_prediction_head"):
        assert any(k.startswith(f"mask_decoder.{head}.") for k in changed), head
    new, old = logits_of(result.predictor, image, labels), logits_of(base, image, labels)
    assert any(not np.allclose(a, b, atol=1e-4) for a, b in zip(new, old))
    whole = adapt(base, [CommittedPlane(image, committed)], replace(settings, decoder_part="all"))
    after = state_of(whole.predictor.model)
    assert any(not torch.equal(before[k], after[k]) for k in before
               if k.startswith("mask_decoder.transformer."))  # fmt: skip
    with pytest.raises(ValueError, match="decoder_part"):
        AdaptSettings(decoder_part="transformer")


def test_no_committed_object_is_a_clear_error(base, scene):
    image = scene[0]
    empty = np.zeros(image.shape, np.int64)
    with pytest.raises(ValueError, match="commit some objects first"):
        adapt(base, [CommittedPlane(image, empty)], quick())
    with pytest.raises(ValueError, match="do not match"):
        CommittedPlane(image, empty[:10])


def test_the_mask_choice_is_fitted_to_the_committed_objects_and_saved(base, scene, tmp_path):
    """A model whose own choice is a poor candidate (SAM's second ambiguity-aware mask, a
    part of the nucleus) learns a better one from the committed objects; the file carries
    it."""
    from dataclasses import replace

    from napari_sam.jobs import drain
    from napari_sam.training.candidate_choice import fit_candidate_choice

    image, _labels, committed = scene
    poor = Predictor(base.model, weights_id=base.weights_id)
    poor.config = replace(base.config, auto_multimask=(("click", "2"), ("box", "2")))
    plane = CommittedPlane(image, committed)
    objects = [(0, int(i)) for i in np.unique(committed[committed > 0])]
    choice = drain(fit_candidate_choice(poor, [plane], objects))
    modes, before, after = dict(choice.modes), dict(choice.before), dict(choice.after)
    assert choice.prompts == len(objects) * 3  # a box and two clicks each
    assert modes["click"] != "2" and after["click"] > before["click"] + 0.05
    assert after["box"] >= before["box"]

    result = adapt(base, [plane], quick())
    fitted = result.predictor.config.auto_multimask
    assert result.report.choice is not None and fitted == result.report.choice.modes
    loaded = Predictor.load(str(result.save(tmp_path / "a.pt")), device="cpu")
    assert loaded.config.auto_multimask == fitted


def test_a_file_with_unreadable_settings_is_refused(base, tmp_path):
    from napari_sam.model.checkpoints import CheckpointError

    path = tmp_path / "odd.pt"
    torch.save({"model_state": base.model.state_dict(),
                "napari_sam": {"auto_multimask": [["click", "biggest"]]}}, path)  # fmt: skip
    with pytest.raises(CheckpointError, match="unreadable 'napari_sam' settings"):
        Predictor.load(str(path), device="cpu")


def test_the_pick_term_makes_a_click_get_the_best_of_sams_masks_more_often(base, scene):
    """A click's mask is chosen among SAM's four by predicted IoU. With the pick term the
    adapted IoU head ranks them better on the committed objects: the IoU lost against the
    best candidate falls below the base model's and below the same run without the term."""
    image, _labels, committed = scene
    rng = np.random.default_rng(0)
    clicks = []
    for i in np.unique(committed[committed > 0]):
        rows, cols = np.nonzero(committed == i)
        for j in rng.choice(len(rows), 4, replace=False):
            clicks.append((committed == i, Prompt.from_points(np.array([[rows[j], cols[j]]]))))

    def lost(predictor: Predictor) -> float:
        embedding = predictor.embed(image, contrast_limits=(float(image.min()),
                                                            float(image.max())))  # fmt: skip
        prediction = predictor.predict(embedding, [p for _, p in clicks], multimask="any")
        out = []
        for k, (truth, _) in enumerate(clicks):
            masks = [prediction.candidate(k, m).to_array() for m in range(4)]
            ious = [binary_iou(m, truth) for m in masks]
            out.append(max(ious) - ious[int(prediction.best[k])])
        return float(np.mean(out))

    plane = CommittedPlane(image, committed)
    settings = replace(quick(steps=20), fit_choice=False)
    with_term = adapt(base, [plane], replace(settings, pick_weight=1.0)).predictor
    without = adapt(base, [plane], replace(settings, pick_weight=0.0)).predictor
    assert lost(with_term) < 0.8 * min(lost(base), lost(without))
    with pytest.raises(ValueError, match="pick_weight"):
        AdaptSettings(pick_weight=-1.0)

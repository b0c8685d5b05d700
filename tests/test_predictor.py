"""The predictor gives the reference predictor's masks for every prompt kind (same weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from napari_sam.predictor import ImageEmbedding, Predictor, prompt_family
from napari_sam.prompts import PointLabel, Prompt
from napari_sam.transforms import upsample_logits


@pytest.fixture(scope="module")
def image():
    """(192, 256) uint8 gray image with blobs; longest side = the tiny model's input."""
    rng = np.random.default_rng(1)
    rr, cc = np.mgrid[:192, :256]
    img = 40 + 30 * rng.random((192, 256))
    for r, c, s in [(60, 70, 25), (120, 180, 35), (150, 60, 20)]:
        img += 150 * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * s**2))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def ours(tiny_sam, image):
    predictor = Predictor(tiny_sam)
    return predictor, predictor.embed(image)


@pytest.fixture(scope="module")
def reference(official_tiny_sam, image):
    predictor = SamPredictor(official_tiny_sam)
    predictor.set_image(np.repeat(image[..., None], 3, axis=2))
    return predictor


def _agree(mask_a: np.ndarray, mask_b: np.ndarray) -> None:
    """Masks equal but for pixels whose logit is within float rounding of the threshold."""
    assert mask_a.shape == mask_b.shape
    assert np.count_nonzero(mask_a != mask_b) <= max(2, mask_a.size // 5000)


def test_embedding_matches_reference(ours, reference):
    _, embedding = ours
    assert embedding.features.shape == (256, 16, 16)
    torch.testing.assert_close(embedding.features, reference.features[0], atol=1e-4, rtol=1e-4)


PROMPTS = {
    "one point": dict(points=[[60, 70]], labels=[1]),
    "positive and negative": dict(points=[[60, 70], [120, 180]], labels=[1, 0]),
    "box": dict(box=[30, 40, 95, 110]),
    "box and point": dict(points=[[60, 70]], labels=[1], box=[30, 40, 95, 110]),
}


@pytest.mark.parametrize("multimask", ["auto", "best", "single", "any"])
@pytest.mark.parametrize("name", list(PROMPTS))
def test_prompt_gives_reference_mask(name, multimask, ours, reference):
    predictor, embedding = ours
    spec = PROMPTS[name]
    prompt = Prompt(**{k: np.asarray(v) for k, v in spec.items()})
    result = predictor.predict(embedding, prompt, multimask)

    xy = np.asarray(spec["points"])[:, ::-1] if "points" in spec else None
    box = np.asarray(spec["box"])[[1, 0, 3, 2]] if "box" in spec else None
    labels = np.asarray(spec["labels"]) if "labels" in spec else None
    masks, scores, low = reference.predict(xy, labels, box, multimask_output=True)
    single, single_score, single_low = reference.predict(xy, labels, box,
                                                         multimask_output=False)

    # Candidate 0 is the single-mask output, 1-3 the three ambiguity-aware masks.
    np.testing.assert_allclose(result.all_scores[0, 1:], scores, atol=1e-4)
    np.testing.assert_allclose(result.all_scores[0, :1], single_score, atol=1e-4)
    for k in range(3):  # all four candidates are reported
        _agree(result.candidate(0, k + 1).to_array(), masks[k])
    _agree(result.candidate(0, 0).to_array(), single[0])
    torch.testing.assert_close(result.all_logits[0, 1:], torch.from_numpy(low), atol=1e-3,
                               rtol=0)  # fmt: skip
    torch.testing.assert_close(result.all_logits[0, :1], torch.from_numpy(single_low),
                               atol=1e-3, rtol=0)  # fmt: skip
    # "best": the best of the three by predicted IoU, as the reference's multimask output
    # ranks them; "single": the reference's single-mask output; "any": the better of those
    # two by predicted IoU; "auto": per prompt family, as the model's configuration says
    if multimask == "auto":
        multimask = dict(predictor.config.auto_multimask).get(prompt_family(prompt), "single")
    if multimask == "any":
        multimask = "best" if scores.max() > single_score[0] else "single"
    if multimask == "best":
        best = int(np.argmax(scores))
        assert result.best[0] == best + 1
        assert result.scores[0] == pytest.approx(scores[best], abs=1e-4)
        _agree(result.masks[0].to_array(), masks[best])
    else:
        assert result.best[0] == 0
        assert result.scores[0] == pytest.approx(single_score[0], abs=1e-4)
        _agree(result.masks[0].to_array(), single[0])


def test_previous_logits_refine_like_reference(ours, reference):
    predictor, embedding = ours
    first = predictor.predict(embedding, Prompt.from_points([[60, 70]]))
    prompt = Prompt.from_points([[60, 70], [75, 90]], [1, 1]).with_mask_logits(first.logits[0])
    refined = predictor.predict(embedding, prompt)

    masks, scores, _ = reference.predict(
        np.array([[70, 60], [90, 75]]), np.array([1, 1]), None,
        mask_input=first.logits[0].numpy()[None], multimask_output=False,
    )
    np.testing.assert_allclose(refined.all_scores[0, :1], scores, atol=1e-4)
    _agree(refined.masks[0].to_array(), masks[0])


def test_dense_mask_prompt_reaches_decoder(ours):
    predictor, embedding = ours
    mask = np.zeros(embedding.original_size, dtype=bool)
    mask[40:80, 50:90] = True
    with_mask = predictor.predict(embedding, Prompt(box=np.array([40, 50, 79, 89]), mask=mask))
    without = predictor.predict(embedding, Prompt(box=np.array([40, 50, 79, 89])))
    assert not np.allclose(with_mask.all_scores, without.all_scores)


def test_batch_of_boxes_gives_one_mask_each_as_reference(ours, reference):
    predictor, embedding = ours
    boxes_rc = np.array([[30, 40, 95, 110], [90, 140, 160, 220], [120, 20, 180, 100]])
    result = predictor.predict(embedding, [Prompt.from_box(b) for b in boxes_rc])
    assert len(result) == 3 and result.all_scores.shape == (3, 4)

    boxes_xy = torch.as_tensor(boxes_rc[:, [1, 0, 3, 2]], dtype=torch.float)
    masks, scores, _ = reference.predict_torch(
        None, None, reference.transform.apply_boxes_torch(boxes_xy, reference.original_size),
        multimask_output=False,
    )
    for i in range(3):
        np.testing.assert_allclose(result.all_scores[i, :1], scores[i].numpy(), atol=1e-4)
        _agree(result.masks[i].to_array(), masks[i, 0].numpy())


def test_mixed_prompt_kinds_come_back_in_order(ours):
    predictor, embedding = ours
    prompts = [
        Prompt.from_points([[60, 70]]),
        Prompt.from_box([90, 140, 160, 220]),
        Prompt.from_points([[150, 60], [120, 180]], [PointLabel.POSITIVE, PointLabel.NEGATIVE]),
    ]
    together = predictor.predict(embedding, prompts)
    for i, prompt in enumerate(prompts):
        alone = predictor.predict(embedding, prompt)
        np.testing.assert_allclose(together.all_scores[i], alone.all_scores[0], atol=1e-5)
        _agree(together.masks[i].to_array(), alone.masks[0].to_array())


def test_resized_image_matches_reference(tiny_sam, official_tiny_sam):
    """An image larger than the model input is resized as the reference does (PIL), +-1."""
    rng = np.random.default_rng(3)
    image = (rng.random((300, 420, 3)) * 255).astype(np.uint8)
    predictor = Predictor(tiny_sam)
    embedding = predictor.embed(image)
    reference = SamPredictor(official_tiny_sam)
    reference.set_image(image)
    assert embedding.geometry.input_size == reference.input_size
    result = predictor.predict(embedding, Prompt.from_points([[150, 200]]))
    masks, scores, _ = reference.predict(np.array([[200, 150]]), np.array([1]))
    ours_mask, ref_mask = result.masks[0].to_array(), masks[int(np.argmax(scores))]
    inter = np.count_nonzero(ours_mask & ref_mask)
    union = max(np.count_nonzero(ours_mask | ref_mask), 1)
    assert inter / union > 0.97


def test_fast_upsampling_equals_sam_postprocess(ours):
    predictor, embedding = ours
    result = predictor.predict(embedding, Prompt.from_points([[60, 70]]))
    full = upsample_logits(result.logits[0], embedding.geometry) > 0
    _agree(result.masks[0].to_array(), full.numpy())
    assert result.masks[0].crop.shape[0] <= embedding.original_size[0]


def test_embedding_of_another_model_is_refused(ours):
    predictor, embedding = ours
    other = ImageEmbedding(embedding.features, embedding.geometry, "vit_b:0000")
    with pytest.raises(ValueError, match="embed the image again"):
        predictor.predict(other, Prompt.from_points([[10, 10]]))


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (lambda: Prompt.from_points([[200, 10]]), "outside"),
        (lambda: Prompt.from_points([[10, -3]]), "outside"),
        (lambda: Prompt.from_box([10, 10, 10, 50]), "zero area"),
        (lambda: Prompt(), "at least one point"),
        (lambda: Prompt.from_box([500, 500, 600, 600]), "outside"),
    ],
)
def test_bad_prompts_raise_clear_errors(ours, prompt, message):
    predictor, embedding = ours
    with pytest.raises(ValueError, match=message):
        predictor.predict(embedding, prompt())


def test_negative_point_removes_a_region_as_reference_does(ours, reference):
    """Random weights do not know objects, so 'removes' is checked against the reference:
    the negative point takes pixels out of the positive-only mask, the same ones."""
    predictor, embedding = ours
    alone = predictor.predict(embedding, Prompt.from_points([[60, 70]])).masks[0].to_array()
    prompt = Prompt.from_points([[60, 70], [150, 60]], [PointLabel.POSITIVE, PointLabel.NEGATIVE])
    with_negative = predictor.predict(embedding, prompt, "single").masks[0].to_array()
    removed = alone & ~with_negative
    assert removed.sum() > 100
    masks, _, _ = reference.predict(np.array([[70, 60], [60, 150]]), np.array([1, 0]),
                                    multimask_output=False)  # two points: one mask
    _agree(with_negative, masks[0])


def test_prompt_families_and_a_bad_multimask_mode(ours):
    assert prompt_family(Prompt.from_points([[1, 2]])) == "click"
    assert prompt_family(Prompt.from_points([[1, 2]], [0])) == "clicks"
    assert prompt_family(Prompt.from_points([[1, 2], [3, 4]], [1, 0])) == "clicks"
    assert prompt_family(Prompt.from_box([1, 2, 5, 6])) == "box"
    assert prompt_family(Prompt(points=[[2, 3]], labels=[1], box=[1, 2, 5, 6])) == "box+points"
    assert prompt_family(Prompt(mask=np.ones((4, 4), bool))) == "mask"
    predictor, embedding = ours
    with pytest.raises(ValueError, match="multimask must be one of auto, best, single, any"):
        predictor.predict(embedding, Prompt.from_points([[60, 70]]), "three")


def test_a_candidate_by_index_is_that_candidate(ours):
    """multimask "0"-"3" (the widget's candidate key) gives exactly that one of the four."""
    predictor, embedding = ours
    prompt = Prompt.from_points([[60, 70]])
    every = predictor.predict(embedding, prompt, "any")
    for k in range(4):
        chosen = predictor.predict(embedding, prompt, str(k))
        assert chosen.best[0] == k and chosen.scores[0] == every.all_scores[0, k]
        assert torch.equal(chosen.logits[0], every.all_logits[0, k])

"""The inference decoder (fast_decode) computes what the plain MaskDecoder computes.

Random weights and embeddings on a 16 x 16 grid (the decoder's real widths: 256 channels,
8 heads); every prompt kind, single and multimask, batches, many points (where the
reordered attention falls back to plain projections). Logits and IoU predictions must agree
to 1e-4 of the output scale. The predictor's per-embedding cache must not change results.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from napari_sam.model import fast_decode
from napari_sam.predictor import IMAGE_STATE_CACHE, Predictor
from napari_sam.prompts import Prompt

REL_TOL = 1e-4


@pytest.fixture(scope="module")
def model(tiny_sam):
    """A private copy of the tiny SAM with its prompt encoder and decoder re-randomised to
    well-scaled random values (LayerNorm weights near 1, biases small)."""
    sam = copy.deepcopy(tiny_sam)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for module in (sam.prompt_encoder, sam.mask_decoder):
            for t in module.state_dict().values():
                noise = torch.randn(t.shape, generator=gen)
                if t.ndim == 1:  # LayerNorm weights start at 1, biases at 0
                    t.copy_(t.mean().round() + 0.1 * noise)
                elif t.ndim == 2:
                    t.copy_(noise / t.shape[-1] ** 0.5)
                else:
                    t.copy_(0.3 * noise)
    return sam.eval()


def _prompts(b: int, n_points: int, box: bool, mask: bool, seed: int):
    gen = torch.Generator().manual_seed(seed)
    points = None
    if n_points:
        coords = torch.rand((b, n_points, 2), generator=gen) * 256
        points = (coords, torch.randint(0, 2, (b, n_points), generator=gen, dtype=torch.int32))
    boxes = torch.sort(torch.rand((b, 2, 2), generator=gen) * 256, 1).values.reshape(b, 4)
    masks = 3 * torch.randn((b, 1, 64, 64), generator=gen) if mask else None
    return points, boxes if box else None, masks


def _close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max() <= REL_TOL * ref.abs().max()


CASES = {
    "one point": (1, 1, False, False),
    "points and box": (1, 3, True, False),
    "box": (1, 0, True, False),
    "batch of points": (4, 2, False, False),
    "batch of boxes": (5, 0, True, False),
    "many points (plain projections)": (2, 18, False, False),
    "mask": (1, 1, False, True),
    "batch with masks": (3, 2, True, True),
}


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("name", list(CASES))
def test_fast_decode_matches_plain_decoder(model, name, multimask):
    b, n_points, box, mask = CASES[name]
    embedding = torch.randn((1, 256, 16, 16), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(*_prompts(b, n_points, box, mask, seed=b + n_points))
        image_pe = model.prompt_encoder.get_dense_pe()
        ref_masks, ref_iou = model.mask_decoder(embedding, image_pe, sparse, dense, multimask)
        shared = not mask
        state = fast_decode.prepare_image(
            model.mask_decoder, embedding, image_pe, dense[:1] if shared else dense, shared=shared
        )
        masks, iou = fast_decode.decode(model.mask_decoder, state, sparse, multimask)
    _close(masks, ref_masks)
    _close(iou, ref_iou)


def test_shared_state_serves_any_batch(model):
    """One cached image state (first-layer projections) decodes batches of any size."""
    embedding = torch.randn((1, 256, 16, 16), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        image_pe = model.prompt_encoder.get_dense_pe()
        no_mask = model.prompt_encoder.no_mask_embed.weight.view(1, -1, 1, 1)
        state = fast_decode.prepare_image(
            model.mask_decoder, embedding, image_pe, no_mask, shared=True
        )
        for b in (1, 3):
            sparse, dense = model.prompt_encoder(*_prompts(b, 2, False, False, seed=b))
            ref = model.mask_decoder(embedding, image_pe, sparse, dense, True)
            masks, iou = fast_decode.decode(model.mask_decoder, state, sparse, True)
            _close(masks, ref[0])
            _close(iou, ref[1])


def test_predictor_cache_keeps_results_and_is_bounded(model):
    predictor = Predictor(model)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 80), dtype=np.uint8) for _ in range(2)]
    embeddings = [predictor.embed(im) for im in images]
    prompts = [Prompt.from_points([[20, 30]]), Prompt.from_box([5, 10, 40, 60])]

    first = [predictor.predict(e, prompts) for e in embeddings]
    again = [predictor.predict(e, prompts) for e in reversed(embeddings)][::-1]
    for a, b in zip(first, again):
        torch.testing.assert_close(a.all_logits, b.all_logits, rtol=0, atol=0)
        np.testing.assert_array_equal(a.best, b.best)
    # the first embedding's decode does not depend on the state cached for the second
    assert not torch.equal(first[0].all_logits, first[1].all_logits)

    extra = [predictor.embed(images[0]) for _ in range(IMAGE_STATE_CACHE + 2)]
    for e in extra:
        predictor.predict(e, prompts[0])
    assert len(predictor._states) <= IMAGE_STATE_CACHE
    del extra, embeddings, e
    predictor.predict(predictor.embed(images[1]), prompts[0])  # drops released entries
    assert len(predictor._states) == 1


def test_predictor_mask_prompt_matches_plain_decoder(model):
    """A mask prompt (per-prompt dense embedding, no shared state) through the predictor."""
    predictor = Predictor(model)
    image = np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)
    embedding = predictor.embed(image)
    logits = np.random.default_rng(2).normal(0, 3, (64, 64)).astype(np.float32)
    prompt = Prompt.from_points([[30, 30]]).with_mask_logits(logits)
    result = predictor.predict(embedding, prompt)
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(
            (torch.tensor([[[30.0 * 4, 30.0 * 4]]]), torch.ones((1, 1), dtype=torch.int32)),
            None,
            torch.from_numpy(logits)[None, None],
        )
        ref, ref_iou = (torch.cat(pair, 1) for pair in zip(*(
            model.mask_decoder(embedding.features[None], model.prompt_encoder.get_dense_pe(),
                               sparse, dense, multimask) for multimask in (False, True))))
    _close(result.all_logits, ref)  # single-mask output first, then the three
    _close(torch.from_numpy(result.all_scores), ref_iou)

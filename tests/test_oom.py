"""Out of memory on the accelerator (injected: this machine has none): the embedding is
retried on the CPU with a warning; out of memory on the CPU is not hidden."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.predictor import AcceleratorFallbackWarning
from napari_sam.prompts import Prompt
from stub_sam import DiscSam, OnAcceleratorPredictor, disc_predictor, fail_first_encodes

IMAGE = np.random.default_rng(0).random((40, 50)).astype(np.float32)
OOM = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")


def test_accelerator_oom_retries_on_the_cpu_and_says_so():
    model = fail_first_encodes(DiscSam(), OOM)
    predictor = OnAcceleratorPredictor(model, weights_id="disc")
    with pytest.warns(AcceleratorFallbackWarning, match="out of memory.*CPU"):
        embedding = predictor.embed(IMAGE)
    assert predictor.device.type == "cpu" and "Tried to allocate" in predictor.fallback_note
    assert model.encode_calls == 1  # the failed call never reached the encoder
    reference = disc_predictor().embed(IMAGE)
    torch.testing.assert_close(embedding.features, reference.features)
    result = predictor.predict(embedding, Prompt.from_points([[20, 25]]))
    assert result.masks[0].area > 0
    predictor.embed(IMAGE)  # later embeddings run on the CPU without another warning
    assert model.encode_calls == 2


def test_out_of_memory_twice_or_on_the_cpu_is_raised():
    predictor = OnAcceleratorPredictor(fail_first_encodes(DiscSam(), OOM, times=2))
    with pytest.warns(AcceleratorFallbackWarning), pytest.raises(torch.OutOfMemoryError):
        predictor.embed(IMAGE)
    cpu = disc_predictor()
    fail_first_encodes(cpu.model, OOM)
    with pytest.raises(torch.OutOfMemoryError):
        cpu.embed(IMAGE)
    assert cpu.fallback_note is None


BOXES = [Prompt.from_box([x, 5, x + 12, 30]) for x in (2, 10, 18, 26, 34)]


def _decode_failing(predictor, fails) -> list[int]:
    """Make ``predictor._decode`` raise out of memory on the accelerator while
    ``fails(batch size)``. Returns the list of batch sizes tried."""
    original, tried = predictor._decode, []

    def decode(embedding, prompts, multimask=None):
        tried.append(len(prompts))
        if predictor.device.type != "cpu" and fails(len(prompts)):
            raise OOM
        return original(embedding, prompts, multimask)

    predictor._decode = decode
    return tried


def test_decode_out_of_memory_halves_the_batch_until_it_fits():
    predictor = OnAcceleratorPredictor(DiscSam(), weights_id="disc")
    embedding = disc_predictor().embed(IMAGE)
    tried = _decode_failing(predictor, lambda n: n > 2)
    result = predictor.predict(embedding, BOXES)
    assert tried == [5, 2, 3, 1, 2]
    assert predictor.fallback_note is None  # still on the accelerator
    expected = disc_predictor().predict(embedding, BOXES)
    for ours, theirs in zip(result.masks, expected.masks, strict=True):
        np.testing.assert_array_equal(ours.to_array(), theirs.to_array())


def test_decode_out_of_memory_for_one_prompt_moves_to_the_cpu_and_says_so():
    predictor = OnAcceleratorPredictor(DiscSam(), weights_id="disc")
    embedding = disc_predictor().embed(IMAGE)
    tried = _decode_failing(predictor, lambda n: True)
    with pytest.warns(AcceleratorFallbackWarning, match="out of memory.*CPU"):
        result = predictor.predict(embedding, BOXES[:2])
    assert tried == [2, 1, 1, 1] and predictor.device.type == "cpu"
    expected = disc_predictor().predict(embedding, BOXES[:2])
    for ours, theirs in zip(result.masks, expected.masks, strict=True):
        np.testing.assert_array_equal(ours.to_array(), theirs.to_array())

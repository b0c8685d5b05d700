"""Fixtures of the training tests (see training_helpers.py)."""

from __future__ import annotations

import pytest
from training_helpers import EASY, TINY

from napari_sam.model.sam import build_sam
from napari_sam.training.data import ImagePair
from napari_sam.training.synthetic import synthetic_nuclei


@pytest.fixture
def tiny_model():
    import torch

    torch.manual_seed(0)
    return build_sam(TINY)


@pytest.fixture
def easy_pair() -> ImagePair:
    sample = synthetic_nuclei((128, 128), seed=3, style=EASY)
    return ImagePair(sample.image, sample.labels)

"""The bundled model (src/napari_sam/weights/vit_nano.pt, trained by docs/training.md's
command): it must exist, fit the wheel, and segment a nucleus from a centre click."""

from pathlib import Path

import numpy as np

from napari_sam.model.checkpoints import load_model
from napari_sam.training.data import ImagePair
from napari_sam.training.evaluate import EvalObject, evaluate
from napari_sam.training.synthetic import NucleiStyle, synthetic_nuclei

WEIGHTS = Path(__file__).parents[2] / "src" / "napari_sam" / "weights" / "vit_nano.pt"

# A typical widefield nuclear stain (the sample data's look).
TYPICAL = NucleiStyle(
    radius=(10.0, 18.0), coverage=(0.25, 0.3), cluster_fraction=(0.3, 0.3), blur=(1.0, 1.0),
    photons=(400.0, 400.0), gamma=(1.0, 1.0),
)


def test_bundled_weights_fit_in_the_wheel():
    assert WEIGHTS.is_file() and WEIGHTS.stat().st_size <= 20 * 1024 * 1024


def test_bundled_model_segments_a_nucleus_from_a_centre_click():
    model = load_model(WEIGHTS).model
    sample = synthetic_nuclei((256, 256), seed=7, style=TYPICAL)
    pair = ImagePair(sample.image, sample.labels)
    # The nucleus nearest the image centre.
    ids = np.arange(1, sample.labels.max() + 1)
    centres = [np.argwhere(sample.labels == i).mean(0) for i in ids]
    label = int(ids[np.argmin([np.hypot(*(c - 128)) for c in centres])])
    result = evaluate(model, [EvalObject(pair, label)])
    # Floor for the weights shipped now (training step ~22580, docs/training.md; 0.61 here),
    # an untrained model gives ~0.01. Issue 9's target, 0.8, is not reached yet; raise this
    # bar as the training run continues (benchmarks/bench_quality.py prints the figures).
    assert result.point_miou >= 0.5

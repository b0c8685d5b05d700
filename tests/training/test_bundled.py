"""The bundled model (src/napari_sam/weights/vit_nano.pt, trained by docs/training.md's
command): it must exist, fit the wheel, and segment nuclei from centre clicks."""

from pathlib import Path

from napari_sam.model.checkpoints import load_model
from napari_sam.training.data import ImagePair
from napari_sam.training.evaluate import EvalObject, evaluate_prompting
from napari_sam.training.synthetic import NucleiStyle, synthetic_nuclei

WEIGHTS = Path(__file__).parents[2] / "src" / "napari_sam" / "weights" / "vit_nano.pt"

# A typical widefield nuclear stain (the sample data's look).
TYPICAL = NucleiStyle(
    radius=(10.0, 18.0), coverage=(0.25, 0.3), cluster_fraction=(0.3, 0.3), blur=(1.0, 1.0),
    photons=(400.0, 400.0), gamma=(1.0, 1.0),
)


def test_bundled_weights_fit_in_the_wheel():
    assert WEIGHTS.is_file() and WEIGHTS.stat().st_size <= 20 * 1024 * 1024


def test_bundled_model_segments_nuclei_from_centre_clicks():
    """Every nucleus of a typical image, prompted as a user would (one click at its centre,
    then a box), through the plugin's prompting path with its defaults (zoom on)."""
    from napari_sam.predictor import Predictor

    predictor = Predictor(load_model(WEIGHTS).model)
    sample = synthetic_nuclei((256, 256), seed=7, style=TYPICAL)
    pair = ImagePair(sample.image, sample.labels)
    objects = [EvalObject(pair, int(i)) for i in range(1, sample.labels.max() + 1)]
    assert len(objects) >= 20
    result = evaluate_prompting(predictor, objects)
    # Issue 9's bar for a centre click is 0.8. The weights shipped now (docs/training.md)
    # give 0.83 for clicks and 0.90 for boxes on these 21 nuclei; untrained, ~0.01.
    assert result.point_miou >= 0.8
    assert result.box_miou >= 0.85

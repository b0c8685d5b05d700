"""The bundled model's own instance decoder, shipped in the package: it segments the package's
nuclei sample (AIS and APG), the same tiled or not, and through a stack."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from label_oracle import f1
from napari_sam.automatic import auto_config, segment_everything
from napari_sam.model.download import WEIGHTS
from napari_sam.predictor import Predictor
from napari_sam.sample_data import synthetic_2d, synthetic_3d

#: F1@0.5 floors on the 2D sample (measured: docs/automatic.md; set below the measurement)
FLOORS = {"ais": 0.8, "apg": 0.7}


@pytest.fixture(scope="module")
def predictor():
    return Predictor.load("bundled", device="cpu")


def test_the_decoder_ships_beside_the_bundled_weights_and_is_small(predictor):
    path = WEIGHTS["bundled"].decoder_path()
    assert path.is_file() and path.stat().st_size < 2 * 2**20  # bytes: under 2 MiB
    assert predictor.instance_decoder is not None


@pytest.mark.parametrize("mode", ["ais", "apg"])
def test_it_finds_the_nuclei_of_the_sample(predictor, mode):
    sample = synthetic_2d()
    labels = segment_everything(predictor, sample.image, auto_config(predictor, mode))
    score = f1(labels, sample.labels)
    assert score >= FLOORS[mode], score


@pytest.mark.parametrize("mode", ["ais", "apg"])
def test_tiled_is_untiled_within_tolerance_and_border_objects_stay_whole(predictor, mode):
    sample = synthetic_2d()
    # untiled: no magnification (the bundled settings' would tile the plane itself)
    config = replace(auto_config(predictor, mode), magnification=1.0)
    whole = segment_everything(predictor, sample.image, config)
    tiled = segment_everything(predictor, sample.image, config, tile=(256, 256), halo=(96, 96))
    truth = sample.labels
    # the tiles see the plane 1.45x larger than one resize: the same objects within tolerance
    assert f1(tiled, whole) >= 0.8
    assert f1(tiled, truth) >= f1(whole, truth) - 0.06
    # nuclei across a tile border (row or column 256): as many found whole (one id holding
    # 70 % of the nucleus) tiled as untiled, within one
    crossing = np.union1d(np.unique(truth[255:257]), np.unique(truth[:, 255:257]))
    crossing = crossing[crossing > 0]

    def found_whole(labels):
        count = 0
        for i in crossing:
            nucleus = truth == i
            ids, counts = np.unique(labels[nucleus], return_counts=True)
            counts = counts[ids > 0]
            count += bool(len(counts)) and counts.max() >= 0.7 * nucleus.sum()
        return count

    assert len(crossing) >= 8
    assert found_whole(tiled) >= max(found_whole(whole) - 1, 6)


def test_a_stack_is_segmented_slice_by_slice_and_linked(predictor):
    sample = synthetic_3d()
    image, truth = sample.image[8:20], sample.labels[8:20]
    labels = segment_everything(predictor, image, auto_config(predictor, "ais"))
    assert labels.shape == image.shape
    # a nucleus through five or more slices is mostly one 3D object (the slices linked)
    linked = []
    for i in np.unique(truth[truth > 0]):
        nucleus = truth == i
        if len(np.unique(np.nonzero(nucleus)[0])) < 5:
            continue
        ids, counts = np.unique(labels[nucleus], return_counts=True)
        counts = counts[ids > 0]
        linked.append(counts.max() / nucleus.sum() if len(counts) else 0.0)
    assert len(linked) >= 5 and np.mean(np.array(linked) >= 0.6) >= 0.7, linked
    per_slice = np.mean([f1(labels[z], truth[z]) for z in range(len(image))])
    assert per_slice >= 0.8, per_slice


def test_the_decoder_runs_in_the_models_precision_and_finds_the_same_nuclei():
    sample = synthetic_2d()
    config = auto_config(Predictor.load("bundled", device="cpu", precision="fp32"), "ais")
    found, dtypes = {}, {}
    for precision in ("fp32", "bf16"):
        predictor = Predictor.load("bundled", device="cpu", precision=precision)
        head = predictor.instance_decoder.out_conv
        hook = head.register_forward_hook(
            lambda _m, _i, out, p=precision: dtypes.update({p: out.dtype}))
        found[precision] = segment_everything(predictor, sample.image, config)
        hook.remove()
    assert dtypes == {"fp32": torch.float32, "bf16": torch.bfloat16}
    # the same nuclei: bf16 moves a few boundary pixels, no object
    assert f1(found["bf16"], found["fp32"]) >= 0.95
    assert abs(f1(found["bf16"], sample.labels) - f1(found["fp32"], sample.labels)) <= 0.02

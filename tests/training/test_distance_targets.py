"""The instance decoder's training targets equal torch_em's PerObjectDistanceTransform."""

import numpy as np
import pytest

from microsam_oracle import torch_em_distance_targets
from napari_sam.model.instance_decoder import Channel
from napari_sam.training.distance_targets import distance_targets
from napari_sam.training.synthetic import synthetic_nuclei


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_targets_match_torch_em(seed):
    labels = synthetic_nuclei((160, 192), seed=seed).labels  # touching, lobed, at the edges
    ours = distance_targets(labels)
    theirs = torch_em_distance_targets()(labels)
    assert ours.shape == theirs.shape == (3, 160, 192)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_a_disc_has_its_centre_at_zero_and_its_rim_at_one():
    yy, xx = np.mgrid[:41, :41]
    labels = (((yy - 20) ** 2 + (xx - 20) ** 2) <= 15**2).astype(np.int32) * 7  # id 7
    t = distance_targets(labels)
    assert t[Channel.FOREGROUND].sum() == labels.astype(bool).sum()
    assert t[Channel.CENTER_DISTANCE, 20, 20] == 0 and t[Channel.BOUNDARY_DISTANCE, 20, 20] == 0
    assert t[Channel.BOUNDARY_DISTANCE, 20, 5] == pytest.approx(1.0)  # on the rim
    assert t[Channel.CENTER_DISTANCE, 0, 0] == 1 and t[Channel.FOREGROUND, 0, 0] == 0


def test_empty_labels_give_background_only():
    t = distance_targets(np.zeros((8, 9), np.uint16))
    assert (t[0] == 0).all() and (t[1:] == 1).all()

"""A run shorter than its warm-up says so (it would train at a fraction of its rate)."""

import pytest

from napari_sam.training.trainer import TrainConfig, learning_rate


def test_a_run_inside_its_warm_up_warns_with_the_rate_it_reaches():
    with pytest.warns(UserWarning, match=r"never gets above 5e-06 of the 0.0001"):
        config = TrainConfig(steps=5, warmup_steps=100, lr=1e-4)
    assert max(learning_rate(config, s) for s in range(5)) == pytest.approx(5e-6)


def test_a_run_past_its_warm_up_is_quiet(recwarn):
    TrainConfig(steps=500, warmup_steps=100)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]

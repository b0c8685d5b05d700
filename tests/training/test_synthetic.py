import numpy as np
import pytest

from napari_sam.training.synthetic import (
    EASY_STYLE,
    NucleiStyle,
    curriculum_style,
    synthetic_nuclei,
)


def test_2d_image_and_labels_agree():
    s = synthetic_nuclei((200, 160), seed=1)
    assert s.image.shape == s.labels.shape == (200, 160)
    assert s.image.dtype == np.uint16 and s.labels.dtype == np.int32
    ids = np.unique(s.labels)
    assert ids[0] == 0 and np.array_equal(ids[1:], np.arange(1, len(ids)))  # 1..n, no gaps
    # Nuclei are brighter than the background on average.
    assert s.image[s.labels > 0].mean() > s.image[s.labels == 0].mean()


def test_3d_stack():
    s = synthetic_nuclei((12, 96, 96), seed=2, anisotropy=2.0)
    assert s.image.shape == s.labels.shape == (12, 96, 96)
    # An object spans several slices.
    spans = [np.ptp(np.nonzero(s.labels == i)[0]) for i in range(1, s.labels.max() + 1)]
    assert max(spans) >= 2


def test_seed_reproducible_and_styles_differ():
    a, b = synthetic_nuclei((96, 96), seed=5), synthetic_nuclei((96, 96), seed=5)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    small = synthetic_nuclei((256, 256), seed=5, style=NucleiStyle(radius=(4.0, 5.0)))
    big = synthetic_nuclei((256, 256), seed=5, style=NucleiStyle(radius=(30.0, 40.0)))
    mean_area = lambda s: np.bincount(s.labels.ravel())[1:].mean()  # noqa: E731
    assert mean_area(small) * 10 < mean_area(big)


def test_curriculum_interpolates():
    assert curriculum_style(0.0) == EASY_STYLE
    assert curriculum_style(1.0) == NucleiStyle()
    mid = curriculum_style(0.5)
    assert mid.radius[0] == pytest.approx((EASY_STYLE.radius[0] + NucleiStyle().radius[0]) / 2)


def test_bad_shape():
    with pytest.raises(ValueError):
        synthetic_nuclei((4, 4, 4, 4))

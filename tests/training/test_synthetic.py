from dataclasses import replace

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


def test_axial_blur_spreads_a_nucleus_light_past_its_ends_in_z():
    """Microscopes blur more along z: with axial_blur 3 the slices just past a nucleus's ends
    glow over its footprint, with 1 they stay near the background."""
    style = NucleiStyle(radius=(8.0, 9.0), blur=(2.0, 2.0), coverage=(0.1, 0.1),
                        cluster_fraction=(0.0, 0.0), photons=(5000.0, 5000.0),
                        read_noise=(0.0, 0.0), illumination=(0.0, 0.0), texture=(0.0, 0.0))
    glow = {}
    for axial in (1.0, 3.0):
        s = synthetic_nuclei((20, 96, 96), seed=4, style=style, anisotropy=4.0, axial_blur=axial)
        image, labels = s.image.astype(float), s.labels
        ratios = []
        for i in range(1, labels.max() + 1):
            zs = np.nonzero((labels == i).any((1, 2)))[0]
            mid = zs[len(zs) // 2]
            footprint = (labels[mid] == i) & (labels[zs[0] - 1] == 0)
            if zs[0] > 0 and footprint.sum() > 20:  # the slice before its first one
                base = np.median(image[zs[0] - 1][labels[zs[0] - 1] == 0])
                ratios.append((image[zs[0] - 1][footprint].mean() - base)
                              / (image[mid][footprint].mean() - base))  # fmt: skip
        glow[axial] = np.mean(ratios)
    assert glow[1.0] < 0.15 and glow[3.0] > 0.3  # (0.06 and 0.39 here)
    with pytest.raises(ValueError, match="axial_blur"):
        synthetic_nuclei((4, 32, 32), axial_blur=0.0)


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


def test_turned_nuclei_are_whole_ellipses():
    # One nucleus, semi-axes 20 and 40 px, at a random angle: its label is the whole ellipse
    # (a box that ignored the turn used to cut flat sides off).
    style = NucleiStyle(radius=(20.0, 20.0), elongation=(2.0, 2.0), coverage=(0.01, 0.01))
    checked = 0
    for seed in range(8):
        labels = synthetic_nuclei((300, 300), seed=seed, style=style).labels > 0
        if labels[[0, -1]].any() or labels[:, [0, -1]].any():
            continue  # cut by the image border
        assert labels.sum() == pytest.approx(np.pi * 20 * 40, rel=0.02)
        checked += 1
    assert checked >= 3


def test_no_nucleus_is_hidden_behind_others():
    # Dense clusters: nuclei touch and overlap, but later ones cover at most the `hidden`
    # share of an earlier one, so each label keeps its nucleus's shape (no slivers).
    from skimage.measure import regionprops

    def solidities(hidden):
        style = NucleiStyle(radius=(10.0, 20.0), coverage=(0.5, 0.5),
                            cluster_fraction=(0.8, 0.8), hidden=hidden)
        labels = [synthetic_nuclei((256, 256), seed=s, style=style).labels for s in range(4)]
        return np.array([r.solidity for lab in labels for r in regionprops(lab)
                         if r.area >= 30])

    capped = solidities((0.25, 0.25))
    assert len(capped) > 100 and capped.min() > 0.7
    assert (solidities((1.0, 1.0)) < 0.5).sum() > 10  # uncapped: crescents behind others


def test_wide_style_lobes_press_nuclei_together_and_adds_haze():
    from skimage.measure import regionprops

    from napari_sam.training.synthetic import WIDE_STYLE

    base = NucleiStyle(radius=(12.0, 16.0), coverage=(0.3, 0.3), cluster_fraction=(0.8, 0.8),
                       blur=(0.0, 0.0), illumination=(0.0, 0.0))  # fmt: skip

    def solidity(style):
        return np.mean([p.solidity for s in range(3) for p in regionprops(
            synthetic_nuclei((192, 192), seed=s, style=style).labels) if p.area > 50])  # fmt: skip

    def touching(style):  # pixels of one nucleus next to another's
        total = 0
        for s in range(3):
            lab = synthetic_nuclei((192, 192), seed=s, style=style).labels
            a, b = lab[:, :-1], lab[:, 1:]
            total += int(((a > 0) & (b > 0) & (a != b)).sum())
        return total

    assert solidity(replace(base, lobes=(0.4, 0.4))) < solidity(base) - 0.03
    assert touching(replace(base, contact=(1.0, 1.0))) > 1.5 * touching(base)
    def background(style):  # light outside the nuclei, relative to the nuclei's
        ratios = []
        for s in range(3):
            sample = synthetic_nuclei((192, 192), seed=s, style=style)
            ratios.append(sample.image[sample.labels == 0].mean()
                          / sample.image[sample.labels > 0].mean())  # fmt: skip
        return np.mean(ratios)

    assert background(replace(base, haze=(0.5, 0.5))) > 1.2 * background(base)
    assert WIDE_STYLE.radius[0] <= 2.5  # nuclei down to 5 px across


"""AIS post-processing (napari_sam.automatic.instances) against micro-sam's: its
``InstanceSegmentationWithDecoder.generate`` over torch_em's
``watershed_from_center_and_boundary_distances``, compiled from their sources
(tests/microsam_oracle.py). bioimage_cpp's Gaussian, label and watershed are stand-ins there
(scipy / skimage), so this checks micro-sam's logic (smoothing order, thresholds, seeds, mask,
size filter, defaults), not an independent watershed.
"""

from __future__ import annotations

import ast
import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from microsam_oracle import _package_file, micro_sam_ais_generate
from napari_sam.automatic.instances import InstanceSettings, instances_from_distances


def disc_targets(shape, discs, seed=0):
    """Maps as micro-sam's targets (torch_em's PerObjectDistanceTransform: per-object
    normalised, inverted boundary distance), blurred and noised like a prediction.

    discs: [(row, col, radius)], overlaps go to the later disc.
    Returns foreground, center, boundary: (H, W) float32 in [0, 1]; truth (H, W) int labels.
    """
    rows, cols = np.indices(shape)
    truth = np.zeros(shape, np.int32)
    for i, (r, c, rad) in enumerate(discs, 1):
        truth[(rows - r) ** 2 + (cols - c) ** 2 <= rad**2] = i
    center = np.ones(shape, np.float32)
    boundary = np.ones(shape, np.float32)
    for i, (r, c, _) in enumerate(discs, 1):
        obj = truth == i
        d_center = np.hypot(rows - r, cols - c)[obj]
        center[obj] = d_center / max(d_center.max(), 1)
        edt = ndimage.distance_transform_edt(obj)[obj]
        boundary[obj] = 1 - edt / edt.max()
    gen = np.random.default_rng(seed)
    maps = []
    for m in ((truth > 0).astype(np.float32), center, boundary):
        m = ndimage.gaussian_filter(m, 1.0) + 0.05 * gen.standard_normal(shape)
        maps.append(np.clip(m, 0, 1).astype(np.float32))
    return (*maps, truth)


DISCS = [(30, 30, 14), (30, 56, 13), (70, 40, 18), (100, 100, 9), (75, 110, 20), (20, 110, 6),
         (118, 20, 4)]  # fmt: skip


def matched(ours: np.ndarray, theirs: np.ndarray) -> list[float]:
    """Per object of ``theirs``: IoU with the object of ``ours`` it overlaps most; also checks
    the matching is one to one."""
    ious, partners = [], set()
    for i in np.unique(theirs[theirs > 0]):
        obj = theirs == i
        ids, counts = np.unique(ours[obj], return_counts=True)
        j = ids[np.argmax(counts)]
        if j == 0:
            ious.append(0.0)
            continue
        assert j not in partners
        partners.add(j)
        ious.append(float((obj & (ours == j)).sum() / (obj | (ours == j)).sum()))
    return ious


def same_up_to_renumbering(a: np.ndarray, b: np.ndarray) -> bool:
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(set(pairs[0])) == len(set(pairs[1])) == pairs.shape[1]


def test_settings_defaults_are_micro_sams():
    src = _package_file("micro_sam", "instance_segmentation.py").read_text()
    cls = next(n for n in ast.parse(src).body
               if isinstance(n, ast.ClassDef) and n.name == "InstanceSegmentationWithDecoder")  # fmt: skip
    gen = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "generate")
    args = gen.args.args[-len(gen.args.defaults) :]
    defaults = {a.arg: ast.literal_eval(d) for a, d in zip(args, gen.args.defaults)}
    for field in dataclasses.fields(InstanceSettings):
        assert defaults[field.name] == field.default, field.name


@pytest.mark.parametrize(
    "settings",
    [
        InstanceSettings(),
        InstanceSettings(min_size=200),
        InstanceSettings(
            center_distance_threshold=0.4,
            boundary_distance_threshold=0.6,
            foreground_threshold=0.4,
            foreground_smoothing=0.0,
            distance_smoothing=0.0,
        ),
    ],
    ids=["defaults", "min_size", "no_smoothing"],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_instances_match_micro_sam(settings, seed):
    foreground, center, boundary, truth = disc_targets((128, 140), DISCS, seed=seed)
    ours = instances_from_distances(foreground, center, boundary, settings)
    theirs = micro_sam_ais_generate()(foreground, center, boundary, **dataclasses.asdict(settings))
    assert ours.shape == truth.shape and ours.dtype == np.int32
    assert ours.max() >= 3  # the maps really separate several objects
    theirs = np.asarray(theirs)
    # identical up to renumbering; where watershed ties break differently, IoU >= 0.99 per object
    if not same_up_to_renumbering(ours, theirs):
        assert ours.max() == theirs.max()
        assert min(matched(ours, theirs)) >= 0.99
    if settings.min_size:
        assert np.bincount(ours.ravel())[1:].min() >= settings.min_size
        assert set(np.unique(ours)) == set(range(ours.max() + 1))


def test_min_size_removes_the_small_disc():
    foreground, center, boundary, _ = disc_targets((128, 140), DISCS)
    kept = instances_from_distances(foreground, center, boundary, InstanceSettings(min_size=200))
    assert kept.max() == len(DISCS) - 2  # radius 6 (113 px) goes, radius 9 (254 px) stays


def test_defaults_recover_the_discs():
    foreground, center, boundary, truth = disc_targets((128, 140), DISCS)
    ours = instances_from_distances(foreground, center, boundary)
    # the smallest disc (radius 4) drowns in the smoothing, micro-sam's too
    assert ours.max() == len(DISCS) - 1
    assert min(matched(ours, truth)[:-1]) >= 0.9


def test_rejects_mismatched_or_non_2d_maps():
    a = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match="shape"):
        instances_from_distances(a, a, np.zeros((8, 9), np.float32))
    with pytest.raises(ValueError, match="H, W"):
        b = np.zeros((2, 8, 8), np.float32)
        instances_from_distances(b, b, b)
    with pytest.raises(ValueError):
        InstanceSettings(min_size=-1)

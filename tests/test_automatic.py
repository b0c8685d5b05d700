"""Segment everything: settings, mask helpers against the reference, labels, stacks, tiles,
progress and cancel."""

from __future__ import annotations

import gc
import inspect
import itertools
import weakref

import numpy as np
import pytest
import torch

from napari_sam.automatic import (
    PRESETS,
    AutoMaskConfig,
    link_slices,
    masks_to_labels,
    merge_tiles,
    segment_everything,
    segment_everything_steps,
)
from napari_sam.automatic.mask_ops import (
    box_nms,
    clean_small_regions,
    crop_boxes,
    paint_labels,
    point_grid,
    tight_box,
)
from napari_sam.tile_grid import TileGrid
from napari_sam.transforms import ObjectMask

# settings that let the random tiny model's few, large masks through
LOOSE = AutoMaskConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                       box_nms_thresh=0.95)  # fmt: skip


@pytest.fixture(scope="module")
def predictor(tiny_sam):
    from napari_sam.predictor import Predictor

    return Predictor(tiny_sam)


# ----------------------------------------------------------------------------- settings


def test_defaults_are_the_official_generators():
    from segment_anything import SamAutomaticMaskGenerator

    params = inspect.signature(SamAutomaticMaskGenerator.__init__).parameters
    for name, value in AutoMaskConfig().official_kwargs().items():
        assert params[name].default == pytest.approx(value), name
    assert PRESETS["default"] == AutoMaskConfig()
    nuclei = PRESETS["nuclei"]
    assert nuclei.points_per_side > AutoMaskConfig().points_per_side
    assert nuclei.min_mask_region_area > 0


def test_out_of_range_settings_are_refused():
    with pytest.raises(ValueError, match="pred_iou_thresh"):
        AutoMaskConfig(pred_iou_thresh=1.5)
    with pytest.raises(ValueError, match="points_per_side"):
        AutoMaskConfig(points_per_side=0)


def test_cli_options_come_from_the_config(tmp_path):
    from napari_sam.cli import build_parser
    from napari_sam.cli.auto import config_from_args

    args = build_parser().parse_args(
        ["auto", "in.tif", "-o", str(tmp_path / "out.tif"), "--preset", "nuclei",
         "--points-per-side", "8", "--stability-score-offset", "0.5"]
    )  # fmt: skip
    config = config_from_args(args, "vit_b")
    assert config == PRESETS["nuclei"].with_values(points_per_side=8, stability_score_offset=0.5)


def test_cli_without_a_preset_starts_from_the_models_own_settings(tmp_path):
    from napari_sam.cli import build_parser
    from napari_sam.cli.auto import config_from_args

    args = build_parser().parse_args(["auto", "in.tif", "-o", str(tmp_path / "o.tif"),
                                      "--box-nms-thresh", "0.2"])  # fmt: skip
    assert config_from_args(args, "vit_nano") == PRESETS["nuclei-bundled"].with_values(
        box_nms_thresh=0.2)
    assert config_from_args(args, "vit_b") == PRESETS["default"].with_values(box_nms_thresh=0.2)


# ----------------------------------------------------------------------------- helpers


def test_grid_and_crops_are_the_reference_ones():
    from segment_anything.utils.amg import build_point_grid, generate_crop_boxes

    np.testing.assert_allclose(point_grid(5), build_point_grid(5)[:, ::-1])
    ref_boxes, ref_layers = generate_crop_boxes((300, 420), 2, 512 / 1500)
    ours = crop_boxes((300, 420), 2, 512 / 1500)
    assert [layer for _, layer in ours] == ref_layers
    assert [[c0, r0, c1, r1] for (r0, c0, r1, c1), _ in ours] == ref_boxes


# torchvision's documented rule (torchvision.ops.nms): "iteratively removes lower scoring
# boxes which have an IoU greater than iou_threshold with another (higher scoring) box";
# returns the indices kept, "sorted in decreasing order of scores". Worked by hand:
NMS_CASES = {
    # A (0,0)-(10,10) .9, B shifted by 5 .8, C by 10 .7: IoU(A, B) = IoU(B, C) = 50/150,
    # IoU(A, C) = 0. At 0.3 A removes B, and C stays (only a kept box suppresses).
    "chain": ([[0, 0, 10, 10], [0, 5, 10, 15], [0, 10, 10, 20]], [0.9, 0.8, 0.7], 0.3, [0, 2]),
    # IoU exactly at the threshold is not "greater": B stays.
    "at threshold": ([[0, 0, 10, 10], [0, 5, 10, 15]], [0.9, 0.8], 50 / 150, [0, 1]),
    # disjoint boxes: all kept, best score first
    "by score": ([[0, 0, 2, 2], [5, 5, 7, 7], [10, 10, 12, 12]], [0.1, 0.9, 0.5], 0.5,
                 [1, 2, 0]),
    # a small box inside a big one: IoU 4/100 (its area over the big one's)
    "inside": ([[0, 0, 10, 10], [2, 2, 4, 4]], [0.5, 0.9], 0.03, [1]),
}  # fmt: skip


@pytest.mark.parametrize("case", NMS_CASES)
def test_box_nms_follows_torchvisions_documented_rule(case):
    from torchvision.ops.boxes import batched_nms

    boxes, scores, thresh, kept = NMS_CASES[case]
    boxes, scores = np.array(boxes, float), np.array(scores)
    np.testing.assert_array_equal(box_nms(boxes, scores, thresh), kept)
    # the batched_nms the official generator calls here agrees (see below)
    ref = batched_nms(torch.tensor(boxes), torch.tensor(scores), torch.zeros(len(boxes)), thresh)
    np.testing.assert_array_equal(ref.numpy(), kept)


def test_box_nms_keeps_what_the_official_generators_nms_keeps():
    """Against the ``batched_nms`` that ``segment_anything`` imports: torchvision's where it
    loads; on these machines it does not (tests/oracles/README.md), and the official
    generator then runs the textbook greedy NMS of tests/oracles, which the worked cases
    above hold to torchvision's rule. Not an independent implementation of ours: a check
    that automatic mode suppresses exactly as the official pipeline run here does."""
    from torchvision.ops.boxes import batched_nms

    rng = np.random.default_rng(0)
    corner = rng.integers(0, 80, (200, 2))
    boxes = np.concatenate([corner, corner + rng.integers(1, 40, (200, 2))], 1).astype(float)
    scores = rng.random(200)
    ref = batched_nms(torch.tensor(boxes), torch.tensor(scores), torch.zeros(200), 0.5)
    np.testing.assert_array_equal(box_nms(boxes, scores, 0.5), ref.numpy())


def test_small_holes_filled_and_islands_dropped():
    crop = np.zeros((20, 20), bool)
    crop[2:15, 2:15] = True
    crop[6:8, 6:8] = False  # a 4-pixel hole
    crop[18, 18] = True  # a 1-pixel island
    cleaned, changed = clean_small_regions(ObjectMask(crop, (0, 0), (20, 20)), 10)
    assert changed
    expected = np.zeros((20, 20), bool)
    expected[2:15, 2:15] = True
    np.testing.assert_array_equal(cleaned.crop, expected)
    _, changed = clean_small_regions(cleaned, 10)
    assert not changed


def test_a_kept_mask_does_not_hold_the_image_sized_array():
    # thousands of candidates are kept until NMS: each must hold its own pixels only
    plane = np.zeros((512, 512), dtype=bool)
    plane[10:14, 20:23] = True
    trimmed, box = tight_box(ObjectMask(plane, (0, 0), plane.shape))
    assert box == (10, 20, 13, 22) and trimmed.crop.all()
    alive = weakref.ref(plane)
    del plane
    gc.collect()
    assert alive() is None and trimmed.crop.nbytes == 12


def test_labels_do_not_overlap_and_the_best_mask_is_whole():
    a = np.zeros((10, 10), bool)
    a[2:8, 2:8] = True
    b = np.zeros((10, 10), bool)
    b[5:10, 5:10] = True
    labels = paint_labels([ObjectMask(a, (0, 0), (10, 10)), ObjectMask(b, (0, 0), (10, 10))],
                          (10, 10))  # fmt: skip
    assert (labels[a] == 1).all()
    assert set(np.unique(labels[b & ~a])) == {2}


def test_a_mask_mostly_taken_by_better_ones_is_not_painted():
    whole = np.zeros((20, 20), bool)
    whole[2:12, 2:12] = True  # 100 px, the best
    part = np.zeros((20, 20), bool)
    part[6:12, 6:16] = True  # 60 px, 36 of them inside the whole one: a part of it
    other = np.zeros((20, 20), bool)
    other[11:19, 11:19] = True  # 64 px, 1 taken: a neighbour
    masks = [ObjectMask(m, (0, 0), (20, 20)) for m in (whole, part, other)]
    kept = paint_labels(masks, (20, 20), min_free=0.5)
    assert (kept[whole] == 1).all() and set(np.unique(kept[other & ~whole])) == {2}
    assert kept.max() == 2 and not (kept[part & ~whole & ~other]).any()
    every = paint_labels(masks, (20, 20))  # min_free 0: the part's leftover is an object
    assert every.max() == 3
    assert AutoMaskConfig().min_free_fraction == 0.5


# ----------------------------------------------------------------------------- stacks and tiles


def _nuclei_3d():
    from napari_sam.training.synthetic import synthetic_nuclei

    return synthetic_nuclei((6, 96, 96), seed=3).labels


def test_an_object_spanning_slices_gets_one_id():
    truth = _nuclei_3d()
    rng = np.random.default_rng(0)
    planes = []
    for z in range(len(truth)):  # each slice numbered on its own, as per-slice runs are
        ids = np.unique(truth[z])
        perm = np.zeros(truth.max() + 1, np.int32)
        perm[ids[ids > 0]] = rng.permutation(len(ids) - (ids[0] == 0)) + 1
        planes.append(perm[truth[z]])
    linked = link_slices(planes, 0.5)
    spanning = 0
    for obj in np.unique(truth[truth > 0]):
        zs = np.flatnonzero((truth == obj).any(axis=(1, 2)))
        sections = [truth[z] == obj for z in zs]
        ious = [(a & b).sum() / (a | b).sum() for a, b in itertools.pairwise(sections)]
        if len(zs) > 1 and min(ious) >= 0.6 and np.all(np.diff(zs) == 1):
            spanning += 1
            ids = np.unique(linked[truth == obj])
            assert len(ids) == 1, f"object {obj} split into {ids}"
    assert spanning >= 5
    # distinct objects are not joined: each linked id lies (mostly) on one true object
    for new_id in np.unique(linked[linked > 0]):
        _owners, counts = np.unique(truth[linked == new_id], return_counts=True)
        assert counts.max() >= 0.9 * counts.sum()


def test_an_object_on_a_tile_border_gets_one_id():
    from napari_sam.training.synthetic import synthetic_nuclei

    truth = synthetic_nuclei((160, 200), seed=3).labels
    grid = TileGrid(truth.shape, (80, 100), (24, 24))
    windows = []
    for tile in grid.tiles:  # each tile numbers its objects its own way
        r0, c0, r1, c1 = tile.window
        local = truth[r0:r1, c0:c1]
        ids = np.unique(local[local > 0])
        perm = np.zeros(truth.max() + 1, np.int32)
        perm[ids] = np.arange(len(ids), 0, -1)
        windows.append(perm[local])
    merged = merge_tiles(grid, windows, 0.5)
    crossing = 0
    for obj in np.unique(truth[truth > 0]):
        rows, cols = np.nonzero(truth == obj)
        on_border = {grid.tile_at(r, c) for r, c in zip(rows, cols)}
        ids = np.unique(merged[truth == obj])
        if len(on_border) > 1:
            crossing += 1
            assert len(ids) == 1, f"object {obj} across tiles {on_border} got ids {ids}"
    assert crossing >= 3
    # every object is whole and alone: the merged labels are the truth, renumbered
    pairs = np.unique(np.stack([truth.ravel(), merged.ravel()]), axis=1)
    assert len(pairs[0]) == len(np.unique(truth)) == len(np.unique(merged))


def test_identical_slices_give_one_3d_object_per_object(predictor):
    from napari_sam.training.synthetic import synthetic_nuclei

    plane = synthetic_nuclei((64, 64), seed=0).image
    labels = segment_everything(predictor, np.stack([plane, plane, plane]), LOOSE)
    assert labels.shape == (3, 64, 64) and labels.dtype == np.int32
    assert labels.max() >= 1
    np.testing.assert_array_equal(labels[0], labels[1])
    np.testing.assert_array_equal(labels[1], labels[2])


def bright_region_predictor():
    """The real predictor (preprocessing, grid, filters, NMS, upsampling, tiles, embedding
    store) around a stand-in whose mask of a point is the bright connected region under it,
    found on the model input at low-res resolution (4 model pixels a cell). So automatic
    mode on an image of bright blobs on a dark ground should give the blobs."""
    from scipy import ndimage

    from napari_sam.transforms import points_to_model
    from stub_sam import FEATURES, DiscPredictor, DiscSam

    f = torch.nn.functional

    class BrightRegionPredictor(DiscPredictor):
        def _encode(self, batch):
            # (1, 3, S, S) normalised -> grey (1, 1, S/4, S/4), stored as SAM-shaped features
            # (1, 256, S/16, S/16): 4 x 4 cells into 16 channels, the rest zero
            grey = f.pixel_unshuffle(f.avg_pool2d(batch.mean(1, keepdim=True), 4), 4)
            return f.pad(grey, (0, 0, 0, 0, 0, FEATURES - grey.shape[1]))

        def _decode(self, embedding, prompts, multimask=None):
            grey = f.pixel_shuffle(embedding.features[None, :16].float(), 4)[0, 0]
            regions, _ = ndimage.label(grey.numpy() > 0.5)
            xy = points_to_model(np.stack([p.points for p in prompts]), embedding.geometry)
            cells = (xy[:, 0].numpy() / 4).astype(int)  # (B, 2) x, y cells
            low = np.stack([regions == regions[y, x] if regions[y, x] else regions < 0
                            for x, y in cells])  # fmt: skip
            logits = torch.from_numpy(np.where(low, 8.0, -8.0)).float()[:, None]
            k = 4 if multimask is None else 3 if multimask else 1
            return logits.repeat(1, k, 1, 1), torch.full((len(prompts), k), 0.95)

    return BrightRegionPredictor(DiscSam(image_size=512), weights_id="bright-region")


def test_tiled_image_is_segmented_whole():
    """Bright discs on a 100 x 140 image cut into 2 x 2 tiles of 50 x 70 (halo 16): one on
    the row seam, one on the column seam, one on the corner where four tiles meet, one
    inside a tile. Each must come out as one object equal to its disc."""
    rows, cols = np.mgrid[:100, :140]
    truth = np.zeros((100, 140), np.int32)
    for i, (r, c, radius) in enumerate([(50, 30, 10), (22, 70, 9), (50, 70, 12), (80, 115, 8)]):
        truth[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = i + 1
    noise = np.random.default_rng(0).normal(0, 5, truth.shape)
    image = (np.where(truth > 0, 200.0, 20.0) + noise).astype(np.float32)
    config = AutoMaskConfig(points_per_side=16, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    grid = TileGrid(truth.shape, (50, 70), (16, 16))
    tiles_of = [{grid.tile_at(r, c) for r, c in zip(*np.nonzero(truth == i))}
                for i in range(1, 5)]  # fmt: skip
    assert [len(t) for t in tiles_of] == [2, 2, 4, 1]  # the layout the test means
    steps = []
    labels = segment_everything(bright_region_predictor(), image, config,
                                lambda d, t: steps.append((d, t)), tile=(50, 70),
                                halo=(16, 16))  # fmt: skip
    assert labels.shape == (100, 140)
    assert len(np.unique(labels)) - 1 == 4  # the four discs, no fragments
    for i in range(1, 5):
        ids, counts = np.unique(labels[truth == i], return_counts=True)
        found = labels == ids[np.argmax(counts)]
        iou = (found & (truth == i)).sum() / (found | (truth == i)).sum()
        assert iou >= 0.97, f"disc {i} across tiles {tiles_of[i - 1]}: IoU {iou:.2f}"
    assert [d for d, _ in steps] == list(range(1, len(steps) + 1))
    assert steps[-1][0] == steps[-1][1]  # progress reaches its total


# ----------------------------------------------------------------------------- cancel


def test_closing_the_steps_cancels_before_the_next_batch(predictor, monkeypatch):
    calls, decode = [], predictor.decode_low_res
    monkeypatch.setattr(predictor, "decode_low_res",
                        lambda *a: calls.append(1) or decode(*a))  # fmt: skip
    config = LOOSE.with_values(points_per_batch=2)  # 8 batches per slice
    image = np.random.default_rng(0).integers(0, 255, (2, 32, 32), dtype=np.uint8)
    steps = segment_everything_steps(predictor, image, config)
    first = next(steps)  # the first embedding
    next(steps)  # the first batch
    steps.close()
    assert first == (1, 2 * (1 + 8))
    assert len(calls) == 1


def test_masks_to_labels_paints_best_first(predictor):
    from napari_sam.automatic import generate_masks

    masks = generate_masks(predictor, np.random.default_rng(0).integers(0, 255, (64, 64)),
                           LOOSE.with_values(box_nms_thresh=1.0))  # fmt: skip
    labels = masks_to_labels(masks, (64, 64))
    best = max(masks, key=lambda m: m.predicted_iou)
    assert (labels[best.mask.to_array()] == 1).all()


def test_loose_candidates_selected_again_give_the_strict_settings_masks():
    from napari_sam.automatic import generate_masks, select_masks
    from napari_sam.predictor import Predictor
    from napari_sam.training.synthetic import synthetic_nuclei

    predictor = Predictor.load("bundled", device="cpu", precision="fp32")
    image = synthetic_nuclei((128, 128), seed=3).image
    loose = LOOSE.with_values(points_per_side=8, crop_n_layers=1, box_nms_thresh=1.0,
                              crop_nms_thresh=1.0)  # nothing suppressed
    candidates = generate_masks(predictor, image, loose)
    scores = sorted(m.predicted_iou for m in candidates)
    strict = loose.with_values(pred_iou_thresh=scores[len(scores) // 2], box_nms_thresh=0.3,
                               crop_nms_thresh=0.5, stability_rank_weight=1.0,
                               min_mask_region_area=4)  # fmt: skip
    direct = generate_masks(predictor, image, strict)
    again = select_masks(candidates, strict)
    assert 0 < len(direct) < len(candidates)
    assert [m.box for m in again] == [m.box for m in direct]


# ----------------------------------------------------------------------------- CLI


def test_cli_writes_3d_labels(tmp_path, monkeypatch, predictor, capsys):
    import tifffile

    from napari_sam.cli import main
    from napari_sam.cli.auto import NOTHING_FOUND
    from napari_sam.predictor import Predictor
    from napari_sam.training.synthetic import synthetic_nuclei

    monkeypatch.setattr(Predictor, "load", classmethod(lambda cls, *a, **k: predictor))
    plane = synthetic_nuclei((48, 48), seed=2).image
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([plane, plane]))
    out = tmp_path / "labels.tif"
    argv = ["auto", str(tmp_path / "stack.tif"), "-o", str(out), "--points-per-side", "4",
            "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    labels = tifffile.imread(out)
    assert labels.shape == (2, 48, 48) and labels.dtype == np.uint16
    assert labels.max() >= 1
    np.testing.assert_array_equal(labels[0], labels[1])  # same objects, same ids
    assert "objects" in capsys.readouterr().out
    assert main(["auto", str(tmp_path / "stack.tif"), "-o", str(out), "--box-nms-thresh", "2"]) == 2
    strict = ["auto", str(tmp_path / "stack.tif"), "-o", str(out), "--points-per-side", "4",
              "--pred-iou-thresh", "1", "--quiet"]  # fmt: skip
    # nothing found: the (empty) labels are written, the exit status says so, with a hint
    assert main(strict) == NOTHING_FOUND != 0 and tifffile.imread(out).max() == 0
    err = capsys.readouterr().err
    assert "no object found" in err and "lower --pred-iou-thresh (now 1)" in err
    assert "--preset nuclei-bundled" in err


def test_a_blank_or_constant_image_has_no_objects(predictor):
    from napari_sam.automatic import segment_everything

    loose = AutoMaskConfig(points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0)
    for value in (0, 1234):
        image = np.full((48, 48), value, np.uint16)
        assert not segment_everything(predictor, image, loose).any()
    stack = np.zeros((2, 48, 48), np.float32)
    stack[1] = np.random.default_rng(0).random((48, 48))  # one blank slice, one not
    found = segment_everything(predictor, stack, loose)
    assert not found[0].any() and found[1].any()


def test_progress_in_a_log_is_one_line_per_tenth(capsys, monkeypatch):
    import sys

    from napari_sam.cli.progress import Progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    report = Progress(quiet=False)
    for done in range(1, 101):
        report(done, 100)
    report.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 11 and "\r" not in "".join(lines)  # the start, then each tenth
    assert lines[-1] == "segmenting: 100/100 steps"


def test_cli_loads_no_qt():
    import subprocess
    import sys

    code = ("import sys; from napari_sam.cli import build_parser; build_parser(); "
            "import napari_sam.automatic; print('qtpy' in sys.modules, 'napari' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_stability_rank_weight_puts_the_steadier_mask_first():
    from napari_sam.automatic import AutoMask, config_labels

    def auto(rows, cols, iou, stability):
        plane = np.zeros((20, 20), bool)
        plane[rows, cols] = True
        return AutoMask(ObjectMask(plane, (0, 0), plane.shape), (0, 0, 19, 19), iou, stability,
                        (0.0, 0.0), (0, 0, 20, 20))  # fmt: skip

    shaky = auto(slice(2, 12), slice(2, 12), 0.9, 0.5)  # a part-and-background blob
    steady = auto(slice(4, 14), slice(4, 14), 0.8, 0.95)
    config = AutoMaskConfig(min_free_fraction=0.7)
    by_iou = config_labels([steady, shaky], (20, 20), config)
    assert (by_iou[2:12, 2:12] == 1).all() and by_iou.max() == 1  # steady: 36 % free, dropped
    by_both = config_labels([shaky, steady], (20, 20),
                            config.with_values(stability_rank_weight=1.0))  # fmt: skip
    assert (by_both[4:14, 4:14] == 1).all() and by_both.max() == 1


def test_cli_with_no_options_finds_most_nuclei_of_the_sample(tmp_path, capsys):
    # the bundled model, `napari-sam auto IMAGE -o OUT` and nothing else, on a quarter of
    # the package's 2D sample (File > Open Sample): the model's own settings find them
    import tifffile

    from napari_sam.cli import main
    from napari_sam.sample_data import synthetic_2d

    sample = synthetic_2d()
    image, truth = sample.image[:256, :256], sample.labels[:256, :256]
    tifffile.imwrite(tmp_path / "nuclei.tif", image)
    out = tmp_path / "labels.tif"
    assert main(["auto", str(tmp_path / "nuclei.tif"), "-o", str(out), "--quiet"]) == 0
    found = tifffile.imread(out).astype(np.int64)
    ids = [i for i in np.unique(truth) if i and (truth == i).sum() >= 30]
    matched = 0
    for i in ids:  # a found object matching this nucleus at IoU > 0.5
        nucleus = truth == i
        best = np.bincount(found[nucleus]).argmax() if found[nucleus].any() else 0
        if best:
            obj = found == best
            matched += (nucleus & obj).sum() / (nucleus | obj).sum() > 0.5
    n_found = len(np.unique(found[found > 0]))
    f1 = 2 * matched / (len(ids) + n_found)
    assert len(ids) >= 15 and f1 >= 0.7, (matched, len(ids), n_found)

"""Zoom: a small object is decoded once more on a magnified window around it."""

from __future__ import annotations

import numpy as np
import pytest

from label_oracle import LabelOracle, LabelWindow, oracle_embeddings
from napari_sam.plane_segmentation import segment_plane, zoom_in
from napari_sam.prompts import Prompt
from napari_sam.transforms import ObjectMask
from napari_sam.zoom import FAST_MODELS, ZoomConfig, resolve_zoom, zoom_window

PLANE = (512, 512)
WHOLE = (0, 0, 512, 512)


def test_window_is_context_times_the_object_and_stays_in_the_plane():
    # a 10 x 20 object: the window is 4 x 20 = 80, raised to the 96-pixel minimum, centred
    assert zoom_window((100, 100, 110, 120), PLANE, WHOLE, ZoomConfig()) == (57, 62, 153, 158)
    # a 30 x 30 object: 120 pixels
    assert zoom_window((200, 200, 230, 230), PLANE, WHOLE, ZoomConfig()) == (155, 155, 275, 275)
    # at the corner the window slides inside the plane
    assert zoom_window((0, 500, 10, 512), PLANE, WHOLE, ZoomConfig()) == (0, 416, 96, 512)


def test_no_window_where_it_would_not_magnify():
    # 100 px object: a 400 px window would be magnified only 1.28x more than the plane
    assert zoom_window((0, 0, 100, 100), PLANE, WHOLE, ZoomConfig()) is None
    assert zoom_window((0, 0, 60, 60), PLANE, WHOLE, ZoomConfig()) is not None
    # first decoded in a small tile already: no gain from a window of the same size
    assert zoom_window((10, 10, 30, 30), PLANE, (0, 0, 96, 96), ZoomConfig()) is None
    assert zoom_window((5, 5, 5, 9), PLANE, WHOLE, ZoomConfig()) is None  # empty mask


def test_auto_zooms_only_for_fast_models():
    assert resolve_zoom("auto", "vit_nano") == ZoomConfig() and "vit_nano" in FAST_MODELS
    assert resolve_zoom("auto", "vit_h") is None
    assert resolve_zoom("on", "vit_h") == ZoomConfig()
    assert resolve_zoom("off", "vit_nano") is None
    custom = ZoomConfig(context=3.0)
    assert resolve_zoom(custom, "vit_h") is custom
    with pytest.raises(ValueError, match="zoom must be"):
        resolve_zoom("yes", "vit_nano")


def _two_nuclei() -> np.ndarray:
    labels = np.zeros((1, *PLANE), np.int32)
    labels[0, 200:212, 300:316] = 1  # small
    labels[0, 20:40, 20:40] = 2
    return labels


def test_small_object_is_decoded_again_in_its_window():
    labels = _two_nuclei()
    oracle = LabelOracle()
    result = segment_plane(oracle_embeddings(labels), oracle, 0,
                           Prompt.from_points([[205, 305]]), zoom="on")  # fmt: skip
    assert result.zoomed == (158, 260, 254, 356)
    np.testing.assert_array_equal(result.mask.to_array(), labels[0] == 1)
    (_, first), (_, second) = oracle.calls
    # the second decode got the click in the window's frame (and no logits of the first)
    np.testing.assert_array_equal(first.points, [[205, 305]])
    np.testing.assert_array_equal(second.points, [[205 - 158, 305 - 260]])
    assert second.mask_logits is None


def test_window_embedding_is_the_windows_pixels():
    labels = _two_nuclei()
    embeddings = oracle_embeddings(labels)
    window = embeddings.window(0, (158, 260, 254, 356))
    assert isinstance(window, LabelWindow)
    np.testing.assert_array_equal(window.labels, labels[0, 158:254, 260:356])
    assert embeddings.window(0, (158, 260, 254, 356)) is window  # kept for the next edit


def test_no_zoom_when_the_new_mask_runs_into_the_window_edge():
    # a window as tight as the first mask: the object touches its edges, so the first stays
    labels = _two_nuclei()
    tight = ZoomConfig(context=1.0, min_side=1, min_gain=1.0)
    result = segment_plane(oracle_embeddings(labels), LabelOracle(), 0,
                           Prompt.from_points([[205, 305]]), zoom=tight)  # fmt: skip
    assert result.zoomed is None
    np.testing.assert_array_equal(result.mask.to_array(), labels[0] == 1)


def test_no_zoom_when_a_positive_point_is_outside_the_window():
    labels = _two_nuclei()
    oracle = LabelOracle()
    prompt = Prompt.from_points([[205, 305], [30, 30]])  # the oracle follows the first
    result = segment_plane(oracle_embeddings(labels), oracle, 0, prompt, zoom="on")
    assert result.zoomed is None and len(oracle.calls) == 1


def test_no_zoom_and_no_error_when_the_first_mask_misses_the_only_click():
    # a model may answer a click with a mask beside it (propagation met it on a synthetic
    # volume): its window then holds nothing of the prompt, and the first mask stays
    labels = _two_nuclei()
    oracle = LabelOracle()
    beside = ObjectMask(labels[0, 20:40, 20:40] == 2, (20, 20), PLANE)
    assert zoom_in(oracle_embeddings(labels), oracle, 0, Prompt.from_points([[205, 305]]),
                   beside, WHOLE, ZoomConfig()) is None  # fmt: skip
    assert not oracle.calls


def test_off_and_auto_for_other_models_decode_once():
    labels = _two_nuclei()
    for zoom in ("off", "auto"):
        oracle = LabelOracle()
        result = segment_plane(oracle_embeddings(labels), oracle, 0,
                               Prompt.from_points([[205, 305]]), zoom=zoom)  # fmt: skip
        assert result.zoomed is None and len(oracle.calls) == 1


def test_bundled_model_segments_small_nuclei_better_zoomed():
    """What a user sees: small nuclei (radius 4-7 px in a 512 px image) come out closer to
    the truth with zoom (the default for the bundled model) than without."""
    from napari_sam.plane_segmentation import WindowEmbeddings
    from napari_sam.predictor import Predictor
    from napari_sam.tile_grid import TileGrid
    from napari_sam.training.synthetic import NucleiStyle, synthetic_nuclei

    predictor = Predictor.load("bundled", device="cpu")
    style = NucleiStyle(radius=(4.0, 7.0), coverage=(0.05, 0.1), blur=(0.0, 1.0),
                        photons=(500.0, 5000.0), brightness=(0.5, 1.0))  # fmt: skip
    ious = {"off": [], "auto": []}
    for seed in range(2):
        sample = synthetic_nuclei(PLANE, seed=seed, style=style)
        limits = tuple(np.percentile(sample.image, [1.0, 99.8]))

        def embed(_s, w, image=sample.image, limits=limits):
            return predictor.embed(image[w[0] : w[2], w[1] : w[3]], contrast_limits=limits)

        embeddings = WindowEmbeddings(TileGrid(PLANE), embed)
        for obj in range(1, 7):
            truth = sample.labels == obj
            rows, cols = np.nonzero(truth)
            box = Prompt.from_box([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1])
            for zoom in ious:
                mask = segment_plane(embeddings, predictor, 0, box, zoom=zoom).mask.to_array()
                ious[zoom].append((mask & truth).sum() / (mask | truth).sum())
    zoomed, plain = np.mean(ious["auto"]), np.mean(ious["off"])
    assert zoomed > plain + 0.05 and zoomed > 0.7, (zoomed, plain)

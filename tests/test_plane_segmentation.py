"""Prompting one slice, tiled or not: routing near and across tile borders, whole objects."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from label_oracle import LabelOracle, oracle_embeddings
from napari_sam.plane_segmentation import segment_plane
from napari_sam.predictor import Predictor
from napari_sam.prompts import Prompt
from napari_sam.slice_source import SliceSource
from napari_sam.stack_embeddings import PredictorEmbedder, StackEmbeddings
from napari_sam.tile_grid import TileGrid
from napari_sam.transforms import ObjectMask

GRID = TileGrid((128, 128), (64, 64), (16, 16))  # 2 x 2 tiles, windows of up to 80 px


def _plane_with(*objects) -> np.ndarray:
    """(1, 128, 128) labels; objects: (id, row0, col0, row1, col1) rectangles."""
    labels = np.zeros((1, 128, 128), np.int32)
    for obj, r0, c0, r1, c1 in objects:
        labels[0, r0:r1, c0:c1] = obj
    return labels


def test_object_near_a_tile_border_is_whole_in_the_routed_window():
    labels = _plane_with((1, 54, 56, 72, 70), (2, 0, 0, 10, 10))  # straddles the core corner
    oracle = LabelOracle()
    result = segment_plane(
        oracle_embeddings(labels, GRID), oracle, 0, Prompt.from_points([[60, 60]])
    )
    np.testing.assert_array_equal(result.mask.to_array(), labels[0] == 1)
    assert result.tiles == (result.tile,)  # no other tile needed
    assert len(oracle.calls) == 1
    assert result.mask.shape == (128, 128)


def test_object_across_tile_borders_is_segmented_whole():
    labels = _plane_with((3, 10, 20, 118, 100))  # far wider than a window
    oracle = LabelOracle()
    result = segment_plane(
        oracle_embeddings(labels, GRID), oracle, 0, Prompt.from_points([[20, 30]])
    )
    np.testing.assert_array_equal(result.mask.to_array(), labels[0] == 3)
    assert sorted(result.tiles) == [0, 1, 2, 3] and not result.truncated
    assert result.tile == GRID.route(np.array([[20, 30]]))


def test_box_across_a_core_border_goes_to_a_window_holding_it():
    labels = _plane_with((4, 50, 40, 78, 60))
    oracle = LabelOracle()
    box = Prompt.from_box([50, 40, 77, 59])
    result = segment_plane(oracle_embeddings(labels, GRID), oracle, 0, box)
    r0, c0, r1, c1 = GRID[result.tile].window
    assert r0 <= 50 and 78 <= r1 and c0 <= 40 and 60 <= c1
    np.testing.assert_array_equal(result.mask.to_array(), labels[0] == 4)


def test_a_thin_box_on_the_planes_last_row_is_still_a_box():
    # a nucleus cut by the image's edge, one row of it inside: its box (max + 1) ends on the
    # edge; once in the window's frame it must not shrink to nothing
    labels = _plane_with((6, 127, 20, 128, 40), (7, 0, 0, 10, 10))
    result = segment_plane(oracle_embeddings(labels, GRID), LabelOracle(), 0,
                           Prompt.from_box([127, 20, 128, 40]))  # fmt: skip
    np.testing.assert_array_equal(result.mask.to_array(), labels[0] == 6)


def test_negative_point_in_a_neighbour_tile_still_counts():
    labels = _plane_with((5, 10, 10, 118, 40))
    oracle = LabelOracle()
    prompt = Prompt.from_points([[20, 20], [110, 20]], [1, 0])  # the negative one is far below
    result = segment_plane(oracle_embeddings(labels, GRID), oracle, 0, prompt)
    below = result.mask.to_array()[80:]
    assert not below.any()  # the tile holding the negative point contributes nothing


class NegativeShy(LabelOracle):
    """A model that loses the object (an empty mask) whenever a prompt has a negative point."""

    def predict(self, emb, prompt, multimask: str = "auto"):
        out = super().predict(emb, prompt, multimask)
        if (prompt.labels == 0).any():
            empty = ObjectMask(np.zeros((0, 0), bool), (0, 0), out.masks[0].shape)
            return replace(out, masks=(empty,), logits=torch.full_like(out.logits, -10.0))
        return out


def test_a_negative_point_the_click_already_leaves_out_changes_nothing():
    labels = _plane_with((1, 20, 20, 40, 40), (2, 20, 40, 40, 60))  # two touching objects
    embeddings = oracle_embeddings(labels, GRID)
    click_and_neighbour = Prompt.from_points([[30, 30], [30, 50]], [1, 0])
    result = segment_plane(embeddings, NegativeShy(), 0, click_and_neighbour)
    np.testing.assert_array_equal(result.mask.to_array(), labels[0] == 1)
    # the model's own answer to the whole prompt, asked for, is what the rule spared
    raw = segment_plane(embeddings, NegativeShy(), 0, click_and_neighbour, positives_first=False)
    assert raw.mask.area == 0
    # a negative point on the click's own mask is the model's to answer
    on_it = Prompt.from_points([[30, 30], [35, 35]], [1, 0])
    assert segment_plane(embeddings, NegativeShy(), 0, on_it).mask.area == 0


class PositivesShy(LabelOracle):
    """A model that finds nothing for positive points alone."""

    def predict(self, emb, prompt, multimask: str = "auto"):
        out = super().predict(emb, prompt, multimask)
        if not (prompt.labels == 0).any():
            empty = ObjectMask(np.zeros((0, 0), bool), (0, 0), out.masks[0].shape)
            return replace(out, masks=(empty,), logits=torch.full_like(out.logits, -10.0))
        return out


def test_an_empty_mask_of_the_positives_alone_leaves_the_whole_prompt_to_the_model():
    labels = _plane_with((1, 20, 20, 40, 40), (2, 20, 40, 40, 60))
    embeddings = oracle_embeddings(labels, GRID)
    prompt = Prompt.from_points([[30, 30], [30, 50]], [1, 0])
    result = segment_plane(embeddings, PositivesShy(), 0, prompt)
    np.testing.assert_array_equal(result.mask.to_array(), labels[0] == 1)
    # a candidate named outright (the widget's candidate key) is the model's own answer
    shy = NegativeShy()
    assert segment_plane(embeddings, shy, 0, prompt, multimask="1").mask.area == 0
    assert all((p.labels == 0).any() for _, p in shy.calls)


def test_bad_prompts_fail_clearly():
    embeddings = oracle_embeddings(_plane_with((1, 0, 0, 5, 5)), GRID)
    with pytest.raises(ValueError, match="outside"):
        segment_plane(embeddings, LabelOracle(), 0, Prompt.from_points([[130, 5]]))
    with pytest.raises(ValueError, match="tile="):
        segment_plane(
            embeddings, LabelOracle(), 0, Prompt(box=[0, 0, 4, 4], mask_logits=np.ones((16, 16)))
        )


@pytest.fixture(scope="module")
def predictor(tiny_sam):
    return Predictor(tiny_sam, weights_id="tiny")


def test_untiled_plane_is_the_plain_prediction(predictor):
    data = np.random.default_rng(0).integers(0, 4000, (2, 90, 120), dtype=np.uint16)
    stack = StackEmbeddings.open(SliceSource(data), PredictorEmbedder(predictor, (0, 4000)))
    prompt = Prompt(points=[[40, 50], [10, 10]], labels=[1, 0], box=[20, 30, 70, 90])
    result = segment_plane(stack, predictor, 1, prompt)
    plain = predictor.predict(stack.get(1), prompt)
    np.testing.assert_array_equal(result.mask.to_array(), plain.masks[0].to_array())
    assert result.score == pytest.approx(float(plain.scores[0]))


def test_tiled_plane_with_a_real_model_gives_a_plane_mask(predictor):
    data = np.random.default_rng(1).integers(0, 4000, (1, 128, 128), dtype=np.uint16)
    stack = StackEmbeddings.open(SliceSource(data), PredictorEmbedder(predictor, (0, 4000)),
                                 tile=(64, 64), halo=(16, 16))  # fmt: skip
    result = segment_plane(stack, predictor, 0, Prompt.from_points([[70, 100]]))
    assert result.mask.shape == (128, 128)
    assert result.tile == stack.grid.route(np.array([[70, 100]]))
    local = predictor.predict(stack.get(0, result.tile), Prompt.from_points(
        stack.grid[result.tile].to_local(np.array([[70, 100]]))))  # fmt: skip
    r0, c0, r1, c1 = stack.grid[result.tile].window
    inside = result.mask.to_array()[r0:r1, c0:c1]
    assert (inside | ~local.masks[0].to_array()).all()  # the routed tile's mask is all kept


def test_zoom_window_of_a_stack_is_embedded_with_the_stacks_contrast(predictor):
    data = np.random.default_rng(2).integers(0, 4000, (2, 90, 120), dtype=np.uint16)
    stack = StackEmbeddings.open(SliceSource(data), PredictorEmbedder(predictor, (0, 4000)))
    window = stack.window(1, (10, 20, 58, 68))
    plain = predictor.embed(data[1, 10:58, 20:68], contrast_limits=(0, 4000))
    assert window.original_size == (48, 48)
    assert np.array_equal(window.features.numpy(), plain.features.numpy())
    assert not stack.is_done()[1, 0]  # a window is not a tile: nothing stored

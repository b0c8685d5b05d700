"""Find similar: a few example objects find the others of their kind, with the bundled model,
never touching committed objects; across the slices of a stack and through the CLI on a
folder."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from label_oracle import match_counts
from napari_sam.automatic.run import plane_embeddings
from napari_sam.automatic.similar import exemplars_from_labels, find_similar, similar_settings
from napari_sam.cli import main
from napari_sam.cli.auto import NOTHING_FOUND
from napari_sam.predictor import Predictor
from napari_sam.testing import two_kinds


@pytest.fixture(scope="module")
def predictor():
    return Predictor.load("bundled", device="cpu")


@pytest.fixture(scope="module")
def scene():
    return two_kinds((256, 256), seed=3, n_large=6, n_small=14)


def examples_of(scene, kind: int, n: int = 3) -> np.ndarray:
    ids = [i for i, k in scene.kinds.items() if k == kind][:n]
    return np.where(np.isin(scene.labels, ids), scene.labels, 0)


def of_kind(scene, kind: int, leave_out: np.ndarray) -> np.ndarray:
    ids = [i for i, k in scene.kinds.items() if k == kind and not (leave_out == i).any()]
    return np.where(np.isin(scene.labels, ids), scene.labels, 0)


@pytest.mark.parametrize("kind", [0, 1], ids=["large-dim", "small-bright"])
def test_examples_of_one_kind_find_that_kind_only(predictor, scene, kind):
    committed = examples_of(scene, kind)
    found = find_similar(predictor, scene.image, committed)
    same, _, n_same = match_counts(found, of_kind(scene, kind, committed))
    other, n_found, _ = match_counts(found, of_kind(scene, 1 - kind, committed))
    assert other == 0
    assert same >= 0.8 * n_same  # most of the kind found ...
    assert same >= 0.9 * n_found  # ... and little else


def test_committed_objects_are_never_touched_and_ids_are_new(predictor, scene):
    committed = examples_of(scene, 1)
    # a committed object of the other kind sits where its kind would be found
    other = next(i for i, k in scene.kinds.items() if k == 0)
    committed = np.where(scene.labels == other, 90, committed)
    before = committed.copy()
    found = find_similar(predictor, scene.image, committed)
    np.testing.assert_array_equal(committed, before)
    assert not found[committed > 0].any()
    new = np.unique(found[found > 0])
    assert len(new) and new.min() > committed.max()


def test_rejected_objects_turn_a_mixed_search_to_one_kind(predictor, scene):
    # one example of each kind finds both; rejecting large ones leaves the small
    positives = examples_of(scene, 0, 1) + examples_of(scene, 1, 1)
    both = find_similar(predictor, scene.image, positives)
    large = of_kind(scene, 0, positives)
    assert match_counts(both, large)[0] >= 2
    rejected_ids = [i for i, k in scene.kinds.items() if k == 0 and not (positives == i).any()][:2]
    rejected = np.where(np.isin(scene.labels, rejected_ids), scene.labels, 0)
    fewer = find_similar(predictor, scene.image, positives, rejected=rejected)
    assert match_counts(fewer, large)[0] < match_counts(both, large)[0]
    assert match_counts(fewer, of_kind(scene, 1, positives))[0] >= 0.8 * match_counts(
        both, of_kind(scene, 1, positives))[0]  # fmt: skip


def test_examples_on_one_slice_find_their_kind_on_every_slice(predictor, scene):
    second = two_kinds((256, 256), seed=4, n_large=6, n_small=14)
    stack = np.stack([scene.image, second.image])
    committed = np.zeros(stack.shape, np.int32)
    committed[0] = examples_of(scene, 1)
    found = find_similar(predictor, stack, committed)
    small = of_kind(second, 1, np.zeros_like(second.labels))
    matches, n_found, n_small = match_counts(found[1], small)
    assert matches >= 0.8 * n_small and matches >= 0.9 * n_found


def test_bad_examples_are_refused_with_a_message(predictor, scene):
    embeddings = plane_embeddings(predictor, scene.image,
                                  similar_settings(predictor).magnification)  # fmt: skip
    with pytest.raises(ValueError, match="at least one example"):
        exemplars_from_labels(embeddings, np.zeros(scene.labels.shape, np.int32))
    with pytest.raises(ValueError, match="the image's planes"):
        exemplars_from_labels(embeddings, scene.labels[:100])
    with pytest.raises(ValueError, match="integer labels"):
        exemplars_from_labels(embeddings, scene.labels.astype(np.float32))


def test_cli_on_a_folder_keeps_the_examples_and_writes_every_image(tmp_path, scene, capsys):
    second = two_kinds((256, 256), seed=4, n_large=6, n_small=14)
    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", scene.image)
    tifffile.imwrite(folder / "b.tif", second.image)
    examples = examples_of(scene, 1).astype(np.uint16)
    tifffile.imwrite(folder / "a_labels.tif", examples)
    out = tmp_path / "out"
    assert main(["similar", str(folder), "--exemplars", str(folder / "a_labels.tif"),
                 "-o", str(out), "--quiet"]) == 0  # fmt: skip
    a, b = tifffile.imread(out / "a.tif"), tifffile.imread(out / "b.tif")
    np.testing.assert_array_equal(a[examples > 0], examples[examples > 0])
    assert len(np.unique(a[examples == 0])) > 5  # new objects beside the examples
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.tif"]  # no labels searched
    inputs = sorted(p.name for p in folder.iterdir())
    assert main(["similar", str(folder), "--exemplars", str(folder / "a_labels.tif"),
                 "-o", str(folder), "--quiet"]) == 2  # fmt: skip
    assert "input folder" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == inputs
    assert match_counts(b, of_kind(second, 1, np.zeros_like(second.labels)))[0] >= 8
    assert match_counts(b, of_kind(second, 0, np.zeros_like(second.labels)))[0] == 0


def test_cli_exits_nonzero_when_nothing_new_is_found(tmp_path):
    alone = two_kinds((192, 192), seed=5, n_large=0, n_small=3)
    tifffile.imwrite(tmp_path / "img.tif", alone.image)
    tifffile.imwrite(tmp_path / "lab.tif", alone.labels.astype(np.uint16))
    code = main(["similar", str(tmp_path / "img.tif"), "--exemplars", str(tmp_path / "lab.tif"),
                 "-o", str(tmp_path / "out.tif"), "--quiet"])  # fmt: skip
    assert code == NOTHING_FOUND
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), alone.labels)

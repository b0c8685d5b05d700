"""``napari-sam segment``: prompts JSON + image file -> label TIFF, with clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_sam.cli import main
from napari_sam.predictor import Predictor
from napari_sam.prompts import Prompt


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data = np.random.default_rng(0).integers(0, 4000, (3, 80, 100), dtype=np.uint16)
    path = tmp_path_factory.mktemp("img") / "stack.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    return path, data


def _prompts(tmp_path, objects):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"objects": objects}))
    return path


def test_segment_stack_writes_ids_at_slices(tmp_path, weights, stack):
    path, data = stack
    prompts = _prompts(tmp_path, [
        {"id": 3, "slice": [1], "points": [[40, 50], [10, 10]], "labels": [1, 0]},
        {"id": 5, "slice": [1], "box": [50, 60, 75, 95]},
        {"id": 7, "slice": [2], "points": [[20, 20]], "box": [5, 5, 40, 40]},
    ])  # fmt: skip
    out = tmp_path / "labels.tif"
    args = [str(path), "--prompts", str(prompts), "-o", str(out), "--model", str(weights),
            "--device", "cpu", "--precision", "fp32"]  # fmt: skip
    assert main(["segment", *args]) == 0
    labels = tifffile.imread(out)
    assert labels.shape == (3, 80, 100)
    assert not labels[0].any()
    assert set(np.unique(labels[1])) <= {0, 3, 5} and set(np.unique(labels[2])) <= {0, 7}

    from napari_sam.model.checkpoints import load_model
    from napari_sam.slice_source import SliceSource, sample_limits

    # every slice is embedded with the stack's contrast, as `embed` and `auto` give it
    predictor = Predictor(load_model(weights).model)
    limits = sample_limits(SliceSource(data))
    result = predictor.predict(predictor.embed(data[2], contrast_limits=limits),
                               Prompt(points=[[20, 20]], labels=[1], box=[5, 5, 40, 40]))  # fmt: skip
    np.testing.assert_array_equal(labels[2] == 7, result.masks[0].to_array())


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        ([{"id": 1, "slice": [1], "points": [[500, 5]]}], "outside"),
        ([{"id": 1, "slice": [1], "box": [5, 5, 5, 40]}], "zero area"),
        ([{"id": 1, "points": [[5, 5]]}], "1 slice indices"),
        ([{"id": 1, "slice": [1]}], "points', a 'box'"),
        ([], "at least one object"),
    ],
)
def test_bad_prompts_fail_clearly(tmp_path, weights, stack, objects, message, capsys):
    out = tmp_path / "labels.tif"
    code = main(["segment", str(stack[0]), "--prompts", str(_prompts(tmp_path, objects)),
                 "-o", str(out), "--model", str(weights)])  # fmt: skip
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_png_and_zarr_inputs(tmp_path, weights):
    import zarr
    from PIL import Image

    rgb = np.random.default_rng(1).integers(0, 255, (60, 70, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "img.png")
    zarr.save_array(str(tmp_path / "img.zarr"), rgb[..., 0])
    prompts = _prompts(tmp_path, [{"id": 2, "points": [[30, 30]]}])
    for name in ("img.png", "img.zarr"):
        out = tmp_path / f"{name}.tif"
        assert main(["segment", str(tmp_path / name), "--prompts", str(prompts), "-o", str(out),
                     "--model", str(weights)]) == 0  # fmt: skip
        assert tifffile.imread(out).shape == (60, 70)


def test_cli_loads_no_qt(tmp_path):
    code = ("import sys; from napari_sam.cli import build_parser; build_parser(); "
            "import napari_sam.cli.segment; print('qtpy' in sys.modules or 'PyQt6' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------- --embeddings, propagation, tiles (issue 6)


def _in_process_stack(data, weights, tile=None, halo=None):
    from napari_sam.model.checkpoints import load_model
    from napari_sam.slice_source import SliceSource, sample_limits
    from napari_sam.stack_embeddings import PredictorEmbedder, StackEmbeddings

    loaded = load_model(weights)
    predictor = Predictor(loaded.model, weights_id=loaded.weights_hash)
    source = SliceSource(data)
    embedder = PredictorEmbedder(predictor, sample_limits(source))
    return predictor, StackEmbeddings.open(source, embedder, None, tile=tile, halo=halo)


def test_embed_then_segment_with_the_store_equals_in_process(tmp_path, weights, stack):
    from napari_sam.jobs import drain
    from napari_sam.plane_segmentation import segment_plane
    from napari_sam.propagation import PropagationConfig, propagate

    path, data = stack
    store = tmp_path / "emb.zarr"
    tiling = ["--tile", "40", "50", "--halo", "8", "8"]
    assert main(["embed", str(path), "--out", str(store), "--model", str(weights),
                 "--device", "cpu", *tiling]) == 0  # fmt: skip
    everything = {"min_score": 0.0, "min_overlap": 0.0}
    prompts = _prompts(tmp_path, [
        {"id": 2, "slice": [1], "points": [[30, 40]], "propagate": everything},
        {"id": 4, "slice": [2], "box": [50, 55, 75, 95]},
    ])  # fmt: skip
    out = tmp_path / "labels.tif"
    assert main(["segment", str(path), "--prompts", str(prompts), "-o", str(out),
                 "--embeddings", str(store), "--model", str(weights), "--device", "cpu"]) == 0  # fmt: skip
    labels = tifffile.imread(out)

    predictor, embeddings = _in_process_stack(data, weights, (40, 50), (8, 8))
    expected = np.zeros(data.shape, np.uint16)
    result = drain(propagate(embeddings, predictor, {1: Prompt.from_points([[30, 40]])},
                           slices=range(3), config=PropagationConfig(**everything)))  # fmt: skip
    expected[result.to_array(3)] = 2
    box = segment_plane(embeddings, predictor, 2, Prompt.from_box([50, 55, 75, 95]))
    expected[2][box.mask.to_array() & (expected[2] == 0)] = 4
    np.testing.assert_array_equal(labels, expected)
    assert embeddings.grid.n_tiles == 4


def test_a_store_made_for_something_else_is_refused(tmp_path, weights, stack, capsys):
    from napari_sam.model.checkpoints import load_model
    from napari_sam.slice_source import SliceSource
    from napari_sam.stack_embeddings import PredictorEmbedder, StackEmbeddings

    path, data = stack
    store = tmp_path / "other.zarr"
    loaded = load_model(weights)
    predictor = Predictor(loaded.model, weights_id=loaded.weights_hash)
    StackEmbeddings.open(SliceSource(data), PredictorEmbedder(predictor, (0.0, 100.0)), store)
    prompts = _prompts(tmp_path, [{"id": 1, "slice": [0], "points": [[5, 5]]}])
    out = tmp_path / "labels.tif"
    args = ["segment", str(path), "--prompts", str(prompts), "-o", str(out), "--embeddings",
            str(store), "--model", str(weights)]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "made for something else" in err and "contrast" in err and "--contrast" in err
    assert not out.exists()
    assert main([*args, "--contrast", "0", "100"]) == 0  # the limits it was made with
    assert main([*args[:-3], str(tmp_path / "missing.zarr"), *args[-2:]]) == 2
    assert "no embedding store" in capsys.readouterr().err


def test_propagation_stops_at_a_negative_entry(tmp_path, weights, stack):
    path, _ = stack
    everything = {"min_score": 0.0, "min_overlap": 0.0}
    prompts = _prompts(tmp_path, [
        {"id": 6, "slice": [0], "points": [[30, 40]], "propagate": everything},
        {"id": 6, "slice": [2], "points": [[30, 40]], "labels": [0]},
    ])  # fmt: skip
    out = tmp_path / "labels.tif"
    assert main(["segment", str(path), "--prompts", str(prompts), "-o", str(out),
                 "--model", str(weights), "--tile", "40", "50", "--halo", "8", "8"]) == 0  # fmt: skip
    labels = tifffile.imread(out)
    assert not labels[2].any() and set(np.unique(labels)) <= {0, 6}


def test_segment_without_a_store_embeds_with_the_contrast_asked_for(tmp_path, weights, stack):
    path, data = stack
    prompts = _prompts(tmp_path, [{"id": 7, "slice": [2], "box": [5, 5, 40, 40]}])
    out = tmp_path / "labels.tif"
    low, high = np.percentile(data, [20, 60])  # far from the default percentiles
    assert main(["segment", str(path), "--prompts", str(prompts), "-o", str(out),
                 "--model", str(weights), "--device", "cpu", "--precision", "fp32",
                 "--contrast", str(low), str(high)]) == 0  # fmt: skip
    from napari_sam.model.checkpoints import load_model

    predictor = Predictor(load_model(weights).model)
    result = predictor.predict(predictor.embed(data[2], contrast_limits=(low, high)),
                               Prompt.from_box([5, 5, 40, 40]))  # fmt: skip
    np.testing.assert_array_equal(tifffile.imread(out)[2] == 7, result.masks[0].to_array())

"""``napari-sam segment``: prompts JSON + image file -> label TIFF, with clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch

from napari_sam.cli import main
from napari_sam.model.sam import build_sam
from napari_sam.predictor import Predictor
from napari_sam.prompts import Prompt


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random-weight vit_nano checkpoint file (the bundled architecture, 512 input)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "nano.pt"
    torch.save(build_sam("vit_nano").state_dict(), path)
    return path


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

    predictor = Predictor(load_model(weights).model)
    result = predictor.predict(
        predictor.embed(data[2]), Prompt(points=[[20, 20]], labels=[1], box=[5, 5, 40, 40])
    )
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

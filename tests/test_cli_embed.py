"""``napari-sam embed``: a store made from the command line, resumable, refusing mismatches."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_sam.cli import embed as cli_embed
from napari_sam.cli import main
from napari_sam.embeddings import EmbeddingStore
from napari_sam.slice_source import SliceSource
from napari_sam.stack_embeddings import StackEmbeddings
from napari_sam.testing import BlockMeanEmbedder


@pytest.fixture
def image(tmp_path):
    data = np.random.default_rng(5).integers(0, 4000, (4, 120, 100), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", data, photometric="minisblack")
    return tmp_path / "stack.tif", data


@pytest.fixture
def embedders(monkeypatch):
    """The model is replaced by the cheap block-mean embedder; returns those made."""
    made = []

    def make(args, source, limits):
        made.append(BlockMeanEmbedder())
        return made[-1]

    monkeypatch.setattr(cli_embed, "make_embedder", make)
    return made


def test_embed_makes_a_store_that_opens_elsewhere(tmp_path, image, embedders, capsys):
    path, data = image
    out = tmp_path / "emb.zarr"
    assert main(["embed", str(path), "--out", str(out), "--tile", "64", "64",
                 "--halo", "8", "8"]) == 0  # fmt: skip
    assert embedders[0].calls == 4 * 4
    store = EmbeddingStore.open(out)
    assert store.pending(verify=True) == []
    assert (store.signature.tile, store.signature.halo) == ((64, 64), (8, 8))
    assert "4 slice(s)" in capsys.readouterr().err
    # "the laptop": the same data opened in another session is served, nothing recomputed
    laptop = BlockMeanEmbedder()
    stack = StackEmbeddings.open(SliceSource(data), laptop, out, tile=(64, 64), halo=(8, 8))
    stack.get(2, 3)
    assert laptop.calls == 0


def test_rerun_resumes_and_mismatch_needs_overwrite(tmp_path, image, embedders, capsys):
    path, _ = image
    out = str(tmp_path / "emb.zarr")
    assert main(["embed", str(path), "--out", out]) == 0
    assert main(["embed", str(path), "--out", out]) == 0
    assert [e.calls for e in embedders] == [4, 0]
    assert main(["embed", str(path), "--out", out, "--tile", "64", "64"]) == 2
    assert "tile" in capsys.readouterr().err
    assert main(["embed", str(path), "--out", out, "--tile", "64", "64", "--overwrite"]) == 0
    assert embedders[-1].calls == 4 * 4


def test_missing_image_is_one_clear_line(tmp_path, capsys):
    assert main(["embed", str(tmp_path / "nope.tif"), "--out", str(tmp_path / "o.zarr")]) == 2
    assert "no image at" in capsys.readouterr().err


def test_embed_path_loads_no_qt():
    code = ("import sys; import napari_sam.cli.embed, napari_sam.scaleout, napari_sam.stack_embeddings; "
            "from napari_sam.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('qtpy', 'PyQt5', 'PyQt6', 'napari') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_embed_uses_the_same_default_model_as_every_command(monkeypatch, image, tmp_path):
    # no --model: the bundled model (what segment, auto and the widget default to), so the
    # README's own `napari-sam embed` works offline and builds the store segment will use
    from napari_sam.model import checkpoints

    loaded = []
    real = checkpoints.load_model
    monkeypatch.setattr(checkpoints, "load_model", lambda name, *a, **k: loaded.append(name)
                        or real(name, *a, **k))  # fmt: skip
    path, _ = image
    assert main(["embed", str(path), "--out", str(tmp_path / "s.zarr")]) == 0
    assert loaded == ["bundled"]

"""How every command reads its image (issue 20, "Inputs"): fluorescence channels are not
colour, every command takes ``--channel``, ``--scheduler`` works on TIFF, ``segment`` reads
lazily and shows progress, an 8-bit picture is RGB everywhere, Ctrl-C says where it stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
import tifffile

from napari_sam.cli import embed as cli_embed
from napari_sam.cli import main
from napari_sam.embeddings import EmbeddingStore
from napari_sam.predictor import Predictor
from napari_sam.testing import BlockMeanEmbedder


@pytest.fixture
def embedders(monkeypatch):
    """``embed``'s model is the cheap block-mean embedder; returns those made."""
    made = []

    def make(args, source, *limits):
        made.append(BlockMeanEmbedder())
        return made[-1]

    monkeypatch.setattr(cli_embed, "make_embedder", make)
    return made


@pytest.fixture
def tiny(monkeypatch, tiny_sam):
    """Every ``Predictor.load`` gives the tiny random-weight model (fast automatic mode)."""
    predictor = Predictor(tiny_sam)
    monkeypatch.setattr(Predictor, "load", classmethod(lambda cls, *a, **k: predictor))
    return predictor


def _prompts(tmp_path, objects):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"objects": objects}))
    return path


def _features(store):
    return EmbeddingStore.open(store).group["features"][...]


# ------------------------------------------------ 1. three fluorescence channels are not RGB


@pytest.fixture
def three_channels(tmp_path):
    """(60, 70, 3) uint16, as a microscope exports three channels (tifffile: an RGB TIFF)."""
    data = np.random.default_rng(2).integers(0, 4000, (60, 70, 3), dtype=np.uint16)
    data[20:40, 25:45, 1] += 8000  # a bright square in channel 1 only
    tifffile.imwrite(tmp_path / "cells.tif", data, photometric="rgb")
    return tmp_path / "cells.tif", data


@pytest.mark.parametrize("command", ["segment", "embed", "auto"])
def test_three_fluorescence_channels_need_a_choice(tmp_path, three_channels, command, capsys,
                                                   weights):  # fmt: skip
    path, _ = three_channels
    out = tmp_path / ("out.zarr" if command == "embed" else "labels.tif")
    argv = {
        "segment": ["--prompts", str(_prompts(tmp_path, [{"id": 1, "points": [[30, 35]]}])),
                    "-o", str(out)],
        "embed": ["--out", str(out)],
        "auto": ["-o", str(out)],
    }[command]  # fmt: skip
    assert main([command, str(path), *argv, "--model", str(weights)]) == 2
    err = capsys.readouterr().err
    assert "uint16" in err and "not 8-bit colour" in err
    assert "--rgb" in err and "--channel N" in err and "--channel composite" in err
    assert not out.exists()


def test_a_chosen_channel_is_segmented_as_grey(tmp_path, three_channels, weights):
    path, data = three_channels
    tifffile.imwrite(tmp_path / "green.tif", data[..., 1])
    prompts = _prompts(tmp_path, [{"id": 4, "points": [[30, 35]]}])
    common = ["--prompts", str(prompts), "--model", str(weights), "--device", "cpu"]
    assert main(["segment", str(path), *common, "-o", str(tmp_path / "a.tif"),
                 "--channel", "1"]) == 0  # fmt: skip
    assert main(["segment", str(tmp_path / "green.tif"), *common, "-o",
                 str(tmp_path / "b.tif")]) == 0  # fmt: skip
    picked = tifffile.imread(tmp_path / "a.tif")
    np.testing.assert_array_equal(picked, tifffile.imread(tmp_path / "b.tif"))
    assert picked.shape == (60, 70) and picked.any()
    assert main(["segment", str(path), *common, "-o", str(tmp_path / "c.tif"), "--rgb"]) == 0
    assert tifffile.imread(tmp_path / "c.tif").shape == (60, 70)


# ----------------------------------------- 2. --channel for every command, not channels as z


@pytest.fixture
def channels_first(tmp_path):
    """(C=2, Z=3, 40, 50) uint16: two channels of a three-slice stack."""
    data = np.random.default_rng(3).integers(0, 4000, (2, 3, 40, 50), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "czyx.tif", data, photometric="minisblack")
    tifffile.imwrite(tmp_path / "c1.tif", data[1], photometric="minisblack")
    return tmp_path / "czyx.tif", data


def test_embed_takes_a_channel_and_keeps_the_slices(tmp_path, channels_first, embedders,
                                                    capsys):  # fmt: skip
    path, _ = channels_first
    assert main(["embed", str(path), "--out", str(tmp_path / "a.zarr"), "--channel", "1"]) == 0
    assert "3 slice(s) of (40, 50)" in capsys.readouterr().err
    assert main(["embed", str(tmp_path / "c1.tif"), "--out", str(tmp_path / "b.zarr")]) == 0
    np.testing.assert_array_equal(_features(tmp_path / "a.zarr"), _features(tmp_path / "b.zarr"))
    assert main(["embed", str(path), "--out", str(tmp_path / "c.zarr"), "--channel",
                 "composite"]) == 0  # fmt: skip
    assert "3 slice(s) of (40, 50)" in capsys.readouterr().err
    assert main(["embed", str(path), "--out", str(tmp_path / "d.zarr"), "--channel", "2"]) == 2
    assert "has 2 channels on its first axis, 0 to 1" in capsys.readouterr().err


def test_segment_reads_a_channel_store_made_by_embed(tmp_path, channels_first, weights,
                                                     capsys):  # fmt: skip
    path, _ = channels_first
    store = tmp_path / "emb.zarr"
    model = ["--model", str(weights), "--device", "cpu"]
    prompts = _prompts(tmp_path, [{"id": 3, "slice": [2], "points": [[20, 25]]}])
    for channel in ("1", "composite"):
        out = tmp_path / f"labels-{channel}.tif"
        assert main(["embed", str(path), "--out", str(store), "--channel", channel, *model,
                     "--overwrite"]) == 0  # fmt: skip
        assert main(["segment", str(path), "--prompts", str(prompts), "-o", str(out),
                     "--embeddings", str(store), "--channel", channel, *model]) == 0  # fmt: skip
        assert tifffile.imread(out).shape == (3, 40, 50)
    capsys.readouterr()
    assert main(["segment", str(path), "--prompts", str(prompts), "-o", str(out),
                 "--embeddings", str(store), "--channel", "0", *model]) == 2  # fmt: skip
    assert "made for something else" in capsys.readouterr().err  # a composite store


def test_auto_takes_a_channel_and_links_only_slices(tmp_path, tiny):
    from napari_sam.training.synthetic import synthetic_nuclei

    planes = [synthetic_nuclei((48, 48), seed=s).image for s in (2, 3)]
    data = np.stack([np.stack(planes), np.stack(planes[::-1])])  # (C=2, Z=2, 48, 48)
    tifffile.imwrite(tmp_path / "czyx.tif", data, photometric="minisblack")
    tifffile.imwrite(tmp_path / "c1.tif", data[1], photometric="minisblack")
    settings = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh",
                "0", "--quiet"]  # fmt: skip
    out = tmp_path / "labels.tif"
    assert main(["auto", str(tmp_path / "czyx.tif"), "-o", str(out), "--channel", "1",
                 *settings]) == 0  # fmt: skip
    assert main(["auto", str(tmp_path / "c1.tif"), "-o", str(tmp_path / "ref.tif"),
                 *settings]) == 0  # fmt: skip
    labels = tifffile.imread(out)
    assert labels.shape == (2, 48, 48) and labels.max() >= 1
    np.testing.assert_array_equal(labels, tifffile.imread(tmp_path / "ref.tif"))


def test_a_wrong_slice_index_names_channel(tmp_path, channels_first, weights, capsys):
    _, data = channels_first
    tifffile.imwrite(tmp_path / "cyx.tif", data[:, 0], photometric="minisblack")  # (2, 40, 50)
    prompts = _prompts(tmp_path, [{"id": 1, "points": [[20, 25]]}])
    out = tmp_path / "labels.tif"
    assert main(["segment", str(tmp_path / "cyx.tif"), "--prompts", str(prompts), "-o",
                 str(out), "--model", str(weights)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "leading axes (2,)" in err and "--channel N" in err and not out.exists()
    assert main(["segment", str(tmp_path / "cyx.tif"), "--prompts", str(prompts), "-o",
                 str(out), "--model", str(weights), "--channel", "0"]) == 0  # fmt: skip
    assert tifffile.imread(out).shape == (40, 50)


# ------------------------------------------------------------ 3. --scheduler works on TIFF


def test_scheduler_embeds_a_tiff(tmp_path, embedders):
    data = np.random.default_rng(4).integers(0, 4000, (3, 60, 50), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", data, photometric="minisblack")
    cluster = tmp_path / "cluster.zarr"
    assert main(["embed", str(tmp_path / "stack.tif"), "--out", str(cluster), "--scheduler",
                 "local-cluster", "--tile", "32", "32"]) == 0  # fmt: skip
    assert EmbeddingStore.open(cluster).pending(verify=True) == []
    local = tmp_path / "local.zarr"
    assert main(["embed", str(tmp_path / "stack.tif"), "--out", str(local), "--tile", "32",
                 "32"]) == 0  # fmt: skip
    np.testing.assert_array_equal(_features(cluster), _features(local))


def test_data_that_cannot_reach_the_workers_is_refused_in_one_line(tmp_path):
    from distributed import LocalCluster

    from napari_sam.scaleout import FileArray, embed_all
    from napari_sam.slice_source import SliceSource, open_image
    from napari_sam.stack_embeddings import StackEmbeddings

    tifffile.imwrite(tmp_path / "s.tif", np.ones((2, 40, 40), np.uint16), photometric="minisblack")
    data, _ = open_image(tmp_path / "s.tif")  # a zarr view holding an open tifffile handle
    stack = StackEmbeddings.open(SliceSource(data), BlockMeanEmbedder(), tmp_path / "e.zarr")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                      host="127.0.0.1", dashboard_address=None) as cluster:  # fmt: skip
        with pytest.raises(ValueError, match=r"cannot be sent to the dask workers.*FileArray"):
            list(embed_all(stack, scheduler=cluster.scheduler_address))
        by_path = StackEmbeddings.open(SliceSource(FileArray(tmp_path / "s.tif")),
                                       BlockMeanEmbedder(), tmp_path / "e.zarr")  # fmt: skip
        assert list(embed_all(by_path, scheduler=cluster.scheduler_address))[-1] == (2, 2)


# ------------------------------------------- 4. segment reads lazily and shows its progress


def test_segment_reads_only_the_slices_it_segments(tmp_path, weights, monkeypatch):
    # float64: the image is 4 x the uint16 labels written; the model is loaded before memory
    # is traced (loading it takes more than the image)
    predictor = Predictor.load(str(weights), device="cpu", precision="fp32")
    monkeypatch.setattr(Predictor, "load", classmethod(lambda cls, *a, **k: predictor))
    data = np.random.default_rng(6).random((64, 256, 256))
    tifffile.imwrite(tmp_path / "big.tif", data, photometric="minisblack")
    prompts = _prompts(tmp_path, [{"id": 1, "slice": [5], "points": [[100, 100]]}])
    tracemalloc.start()
    try:
        assert main(["segment", str(tmp_path / "big.tif"), "--prompts", str(prompts), "-o",
                     str(tmp_path / "labels.tif")]) == 0  # fmt: skip
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert tifffile.imread(tmp_path / "labels.tif")[5].any()
    # reading the image whole needs its size at least; one slice and the labels need far less
    assert peak < data.nbytes, (
        f"peak {peak / 2**20:.0f} MiB, the image {data.nbytes / 2**20:.0f} MiB"
    )


def test_segment_shows_progress_in_a_log(tmp_path, weights, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    data = np.random.default_rng(0).integers(0, 4000, (3, 80, 100), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", data, photometric="minisblack")
    prompts = _prompts(tmp_path, [
        {"id": 2, "slice": [1], "points": [[30, 40]],
         "propagate": {"min_score": 0.0, "min_overlap": 0.0}},
        {"id": 4, "slice": [2], "box": [50, 55, 75, 95]},
    ])  # fmt: skip
    assert main(["segment", str(tmp_path / "stack.tif"), "--prompts", str(prompts), "-o",
                 str(tmp_path / "labels.tif"), "--model", str(weights)]) == 0  # fmt: skip
    err = capsys.readouterr().err.splitlines()
    assert "segmenting prompts: 1/1 prompts" in err
    assert "propagating object 2: 3/3 slices" in err
    assert not main(["segment", str(tmp_path / "stack.tif"), "--prompts", str(prompts), "-o",
                     str(tmp_path / "labels.tif"), "--model", str(weights), "--quiet"])  # fmt: skip
    assert capsys.readouterr().err == ""


# ------------------------------------------------ 5. an 8-bit picture is RGB in every command


def test_every_command_detects_an_rgb_picture(tmp_path, embedders, tiny, capsys):
    from PIL import Image

    rgb = np.random.default_rng(1).integers(0, 255, (60, 70, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "img.png")
    out = tmp_path / "labels.tif"
    assert main(["auto", str(tmp_path / "img.png"), "-o", str(out), "--points-per-side", "4",
                 "--quiet"]) in (0, 3)  # 3: nothing found; the labels are written either way  # fmt: skip
    assert tifffile.imread(out).shape == (60, 70)
    assert main(["embed", str(tmp_path / "img.png"), "--out", str(tmp_path / "e.zarr")]) == 0
    assert "1 slice(s) of (60, 70)" in capsys.readouterr().err


# ------------------------------------------------ 6. Ctrl-C says where it stopped, exit 130


class _CtrlCAfter(BlockMeanEmbedder):
    """The block-mean embedder that is interrupted (Ctrl-C) at its ``fail_after``-th call."""

    def embed(self, image):
        if self.calls >= self.fail_after:
            raise KeyboardInterrupt
        return super().embed(image)


def _main_interrupted(argv):
    try:
        return main(argv)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped main() as a KeyboardInterrupt traceback")


def test_ctrl_c_in_embed_says_where_and_resumes(tmp_path, monkeypatch, capsys):
    data = np.random.default_rng(5).integers(0, 4000, (4, 60, 50), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", data, photometric="minisblack")
    store = tmp_path / "s.zarr"
    monkeypatch.setattr(cli_embed, "make_embedder", lambda *a: _CtrlCAfter(fail_after=2))
    argv = ["embed", str(tmp_path / "stack.tif"), "--out", str(store)]
    assert _main_interrupted(argv) == 130
    err = capsys.readouterr().err
    assert "napari-sam embed: stopped by Ctrl-C after 2 of 4 embeddings" in err
    assert f"computed so far are in {store}: run the same command again to resume" in err
    assert "Traceback" not in err
    resumed = BlockMeanEmbedder()
    monkeypatch.setattr(cli_embed, "make_embedder", lambda *a: resumed)
    assert main(argv) == 0
    assert resumed.calls == 2 and EmbeddingStore.open(store).pending(verify=True) == []


def test_ctrl_c_in_segment_says_where_and_writes_nothing(tmp_path, weights, monkeypatch,
                                                         capsys):  # fmt: skip
    data = np.random.default_rng(0).integers(0, 4000, (3, 80, 100), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", data, photometric="minisblack")
    prompts = _prompts(tmp_path, [{"id": 2, "slice": [0], "points": [[30, 40]],
                                   "propagate": {"min_score": 0.0, "min_overlap": 0.0}}])  # fmt: skip
    real, calls = Predictor.embed, []

    def embed(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "embed", embed)
    out = tmp_path / "labels.tif"
    assert _main_interrupted(["segment", str(tmp_path / "stack.tif"), "--prompts",
                              str(prompts), "-o", str(out), "--model", str(weights)]) == 130  # fmt: skip
    err = capsys.readouterr().err
    assert "stopped by Ctrl-C after 1 of 3 slices (propagating object 2)" in err
    assert "nothing was written" in err and "Traceback" not in err
    assert not out.exists()


def test_sigint_stops_embed_with_a_message(tmp_path):
    # a real Ctrl-C: SIGINT to the command while its worker thread embeds
    data = np.random.default_rng(5).integers(0, 4000, (30, 40, 40), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", data, photometric="minisblack")
    store = tmp_path / "s.zarr"
    # the handler a terminal's Python has: a shell running this suite in the background
    # (``cmd &``) starts it with SIGINT ignored, and children would inherit that
    script = textwrap.dedent(f"""
        import signal, sys, time
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from napari_sam.cli import embed, main
        from napari_sam.testing import BlockMeanEmbedder

        class Slow(BlockMeanEmbedder):
            def embed(self, image):
                time.sleep(0.2)
                return super().embed(image)

        embed.make_embedder = lambda *a: Slow()
        sys.exit(main(["embed", {str(tmp_path / "stack.tif")!r}, "--out", {str(store)!r}]))
    """)  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:  # not a terminal: one line per tenth, the first at 0/30
        lines.append(line)
        if line.startswith("embedding: ") and not line.startswith("embedding: 0/"):
            proc.send_signal(signal.SIGINT)
            break
    err = "".join(lines) + proc.stderr.read()
    assert proc.wait(timeout=60) == 130, err
    assert "napari-sam embed: stopped by Ctrl-C after" in err and "of 30 embeddings" in err
    assert "run the same command again to resume" in err and "Traceback" not in err
    done = int(EmbeddingStore.open(store).done().sum())
    assert 3 <= done < 30  # what was finished stays for the rerun

"""Batch embedding on dask: progress, resume after interruption, distributed == local."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from distributed import LocalCluster

from napari_sam.embeddings import EmbeddingStore
from napari_sam.scaleout import embed_all
from napari_sam.slice_source import SliceSource
from napari_sam.stack_embeddings import StackEmbeddings
from napari_sam.testing import BlockMeanEmbedder


@pytest.fixture
def data():
    return np.random.default_rng(4).integers(0, 4000, (5, 150, 130), dtype=np.uint16)


def _open(path, data, embedder, **kw):
    return StackEmbeddings.open(SliceSource(data), embedder, path, tile=(64, 64), halo=(8, 8),
                                **kw)  # fmt: skip


def test_local_threads_embed_every_tile_with_progress(tmp_path, data):
    embedder = BlockMeanEmbedder()
    stack = _open(tmp_path / "s.zarr", data, embedder)
    progress = list(embed_all(stack, num_workers=2))
    total = 5 * 9  # 3 x 3 tiles per slice
    assert progress[0] == (0, total) and progress[-1] == (total, total)
    assert [d for d, _ in progress] == list(range(total + 1))
    assert embedder.calls == total and stack.store.pending(verify=True) == []
    # a tile's embedding is that of its window (core + halo)
    window = stack.grid[4].window
    expected = BlockMeanEmbedder().embed(data[3][window[0]:window[2], window[1]:window[3]])
    np.testing.assert_allclose(stack.get(3, 4).features.numpy(), expected.features.numpy(),
                               atol=2e-3)  # fmt: skip
    assert stack.get(3, 4).original_size == (80, 74)  # rows 56:136, cols 56:130 (the edge)


def test_interrupted_embedding_resumes_and_skips_finished(tmp_path, data):
    path = tmp_path / "s.zarr"
    failing = BlockMeanEmbedder(fail_after=7)
    with pytest.raises(RuntimeError, match="simulated"):
        list(embed_all(_open(path, data, failing)))
    finished = int(EmbeddingStore.open(path).done().sum())
    assert finished == 7
    resumed = BlockMeanEmbedder()
    progress = list(embed_all(_open(path, data, resumed)))
    assert progress[0] == (7, 45) and progress[-1] == (45, 45)
    assert resumed.calls == 45 - 7  # finished tiles were not embedded again


def test_closing_the_progress_generator_stops_and_resumes(tmp_path, data):
    path = tmp_path / "s.zarr"
    first = BlockMeanEmbedder()
    gen = embed_all(_open(path, data, first))
    for done, _ in gen:
        if done >= 3:
            break
    gen.close()  # user pressed cancel
    stopped = int(EmbeddingStore.open(path).done().sum())
    assert 3 <= stopped < 45 and first.calls == stopped
    second = BlockMeanEmbedder()
    list(embed_all(_open(path, data, second)))
    assert second.calls == 45 - stopped


@pytest.mark.parametrize("processes", [False, True])
def test_distributed_gives_the_same_store_as_local(tmp_path, data, processes):
    local = _open(tmp_path / "local.zarr", data, BlockMeanEmbedder())
    list(embed_all(local))
    lazy = da.from_array(data, chunks=(1, 75, 65))  # a dask-backed layer, computed on workers
    remote = StackEmbeddings.open(SliceSource(lazy), BlockMeanEmbedder(),
                                  tmp_path / "remote.zarr", tile=(64, 64), halo=(8, 8))  # fmt: skip
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=processes,
                      protocol="tcp", host="127.0.0.1", dashboard_address=None) as cluster:  # fmt: skip
        progress = list(embed_all(remote, scheduler=cluster.scheduler_address))
    assert progress[-1] == (45, 45)
    assert remote.is_done().all()  # the handle that asked sees what the workers published
    a, b = EmbeddingStore.open(tmp_path / "local.zarr"), EmbeddingStore.open(tmp_path / "remote.zarr")
    assert a.signature == b.signature
    np.testing.assert_array_equal(a.group["features"][...], b.group["features"][...])
    np.testing.assert_array_equal(a.group["sizes"][...], b.group["sizes"][...])
    assert b.pending(verify=True) == []

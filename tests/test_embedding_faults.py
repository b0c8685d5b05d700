"""Embedding store faults beyond tests/test_embeddings.py: a disk that fills half way
through a write, chunks that do not decode or cannot be read, and two *processes* (not
threads) filling one store. Outcome: a clear error, or a recomputation the user is told
about; a partial write is never read back as valid."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_sam.embeddings import (
    EmbeddingStore,
    StoreLayout,
    StoreReadError,
    StoreSignature,
    StoreWarning,
)
from napari_sam.scaleout import embed_all
from napari_sam.slice_source import SliceSource
from napari_sam.stack_embeddings import StackEmbeddings
from napari_sam.testing import BlockMeanEmbedder

SIG = StoreSignature(data="full:abc", model="blockmean", weights="w1", preprocessing="p")
LAYOUT = StoreLayout(4, 1, (8, 16, 16))


def _features(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((8, 16, 16)).astype(np.float32)


class _FullDisk:
    """Wraps a zarr array: the write of ``at`` (a (slice, tile) key) fails with ENOSPC,
    as a full disk makes it, after writing half of the value (a torn chunk)."""

    def __init__(self, array, at) -> None:
        self.array, self.at = array, at

    def __getitem__(self, key):
        return self.array[key]

    def __setitem__(self, key, value):
        if key == self.at:
            value = np.array(value)
            flat = value.reshape(-1)
            if flat.size > 1:
                flat[: flat.size // 2] = 0
                self.array[key] = value
            raise OSError(errno.ENOSPC, "No space left on device")
        self.array[key] = value


@pytest.mark.parametrize("failing", ["_features", "_sizes", "_content", "_checksum"])
def test_disk_full_during_a_write_is_an_error_and_never_served(tmp_path, failing):
    path = tmp_path / "s.zarr"
    store = EmbeddingStore.create(path, SIG, LAYOUT)
    store.write(0, 0, _features(0), (96, 80), (16, 13), 7)
    setattr(store, failing, _FullDisk(getattr(store, failing), (1, 0)))
    with pytest.raises(OSError, match="No space left"):
        store.write(1, 0, _features(1), (96, 80), (16, 13), 7)
    for reader in (store, EmbeddingStore.open(path)):  # this handle, and a fresh process'
        assert reader.read(1, 0) is None
        assert (1, 0) in reader.pending(verify=True)
        np.testing.assert_array_equal(reader.read(0, 0).features, _features(0).astype(np.float16))


def test_stack_embedding_interrupted_by_a_full_disk_resumes_with_that_slice(tmp_path):
    data = np.random.default_rng(0).integers(0, 4000, (6, 96, 80), dtype=np.uint16)
    path = tmp_path / "s.zarr"
    stack = StackEmbeddings.open(SliceSource(data), BlockMeanEmbedder(), path)
    stack.store._checksum = _FullDisk(stack.store._checksum, (2, 0))
    for s in range(2):
        stack.get(s)
    with pytest.raises(OSError, match="No space left"):
        stack.get(2)
    fresh = StackEmbeddings.open(SliceSource(data), BlockMeanEmbedder(), path)
    pending = fresh.store.pending(verify=True)
    assert (2, 0) in pending and (0, 0) not in pending
    ref = BlockMeanEmbedder()
    np.testing.assert_array_equal(
        fresh.get(2).features.numpy(),
        ref.embed(data[2]).features.numpy().astype(np.float16).astype(np.float32),
    )
    assert fresh.computed == 1


def _stack(tmp_path):
    data = np.random.default_rng(4).integers(0, 4000, (4, 96, 80), dtype=np.uint16)
    path = tmp_path / "s.zarr"
    list(embed_all(StackEmbeddings.open(SliceSource(data), BlockMeanEmbedder(), path)))
    return data, path


def test_a_chunk_that_does_not_decode_is_reported_and_recomputed(tmp_path):
    data, path = _stack(tmp_path)
    chunk = path / "features" / "c" / "1" / "0" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:1000])  # truncated (a copy cut short)
    embedder = BlockMeanEmbedder()
    stack = StackEmbeddings.open(SliceSource(data), embedder, path)
    with pytest.warns(StoreWarning, match=r"slice 1, tile 0 .* is corrupted \(ValueError"):
        got = stack.get(1)
    np.testing.assert_array_equal(
        got.features.numpy(),
        BlockMeanEmbedder().embed(data[1]).features.numpy().astype(np.float16).astype(np.float32),
    )
    assert embedder.calls == 1


class _Unreadable:
    """Wraps a zarr array: reading ``at`` fails as a chunk without read permission does."""

    def __init__(self, array, at, path) -> None:
        self.array, self.at, self.path = array, at, path

    def __getitem__(self, key):
        if key == self.at:
            raise PermissionError(errno.EACCES, "Permission denied", str(self.path))
        return self.array[key]


def test_an_unreadable_chunk_is_a_clear_error_not_a_silent_recompute(tmp_path):
    # (injected: the tests may run as root, who reads a chmod 000 file)
    data, path = _stack(tmp_path)
    embedder = BlockMeanEmbedder()
    stack = StackEmbeddings.open(SliceSource(data), embedder, path)
    chunk = path / "features" / "c" / "2" / "0" / "0" / "0" / "0"
    stack.store._features = _Unreadable(stack.store._features, (2, 0), chunk)
    with pytest.raises(StoreReadError, match=r"slice 2, tile 0 .*Permission denied"):
        stack.get(2)
    assert embedder.calls == 0  # nothing recomputed behind the user's back
    assert stack.get(3) is not None  # the readable ones are still served


_WRITER = """
import sys
import numpy as np
from napari_sam.slice_source import SliceSource
from napari_sam.scaleout import embed_all
from napari_sam.stack_embeddings import StackEmbeddings
from napari_sam.testing import BlockMeanEmbedder
data = np.load(sys.argv[1])
stack = StackEmbeddings.open(SliceSource(data), BlockMeanEmbedder(), sys.argv[2])
list(embed_all(stack))
print("computed", stack.computed)
"""


def test_two_processes_writing_one_store(tmp_path: Path):
    data = np.random.default_rng(1).integers(0, 4000, (12, 96, 80), dtype=np.uint16)
    np.save(tmp_path / "data.npy", data)
    path = tmp_path / "s.zarr"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    cmd = [sys.executable, str(script), str(tmp_path / "data.npy"), str(path)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, results):
        assert p.returncode == 0, err
    computed = [int(out.split()[-1]) for out, _ in results]
    assert sum(computed) >= 12  # together they did every slice (some maybe twice)
    store = EmbeddingStore.open(path)
    assert store.pending(verify=True) == []
    ref = BlockMeanEmbedder()
    for s in range(12):
        np.testing.assert_array_equal(
            store.read(s, 0).features, ref.embed(data[s]).features.numpy().astype(np.float16)
        )
    assert not list(tmp_path.glob(".s.zarr.*"))  # no partial store left beside it

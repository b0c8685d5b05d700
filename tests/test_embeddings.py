"""The embedding store: float16 on disk, signature-checked, never serving stale or torn data."""

from __future__ import annotations

import shutil
import threading
from dataclasses import asdict, replace

import numpy as np
import pytest
import zarr

from napari_sam.embeddings import (
    EmbeddingStore,
    SignatureMismatchError,
    StoreChangedError,
    StoreFormatError,
    StoreLayout,
    StoreSignature,
    StoreWarning,
)
from napari_sam.scaleout import embed_all
from napari_sam.slice_source import SliceSource, fingerprint, sample_windows
from napari_sam.stack_embeddings import StackEmbeddings
from napari_sam.testing import BlockMeanEmbedder

SIG = StoreSignature(data="full:abc", model="blockmean", weights="w1", preprocessing="p")
LAYOUT = StoreLayout(4, 1, (8, 16, 16))


@pytest.fixture
def stack_data():
    return np.random.default_rng(0).integers(0, 4000, (6, 96, 80), dtype=np.uint16)


def _features(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((8, 16, 16)).astype(np.float32)


def test_write_read_roundtrip_float16_and_reopen(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s.zarr", SIG, LAYOUT)
    feats = _features(1)
    store.write(2, 0, feats, (96, 80), (16, 13), 7)
    assert store.read(1, 0) is None  # never written
    # a separate handle (another process, a laptop) reads what was published
    other = EmbeddingStore.open(tmp_path / "s.zarr")
    got = other.read(2, 0)
    assert got.features.dtype == np.float16
    np.testing.assert_array_equal(got.features, feats.astype(np.float16))
    assert (got.original_size, got.input_size) == ((96, 80), (16, 13))
    assert other.signature == SIG and other.layout == LAYOUT
    assert other.done()[:, 0].tolist() == [False, False, True, False]
    # about C*h*w*2 bytes per embedding on disk (uncompressed float16)
    chunk_files = [p for p in (tmp_path / "s.zarr" / "features").rglob("*") if p.is_file()
                   and p.name != "zarr.json"]  # fmt: skip
    assert [p.stat().st_size for p in chunk_files] == [8 * 16 * 16 * 2]


@pytest.mark.parametrize("field", ["data", "model", "weights", "preprocessing", "version"])
def test_signature_mismatch_is_refused_then_recomputed_on_request(tmp_path, field):
    path = tmp_path / "s.zarr"
    store = EmbeddingStore.create(path, SIG, LAYOUT)
    store.write(0, 0, _features(0), (96, 80), (16, 13), 7)
    other = replace(SIG, **{field: "something else"})
    with pytest.raises(SignatureMismatchError, match=field):
        EmbeddingStore.create(path, other, LAYOUT)
    assert EmbeddingStore.open(path).read(0, 0) is not None  # refusing changed nothing
    fresh = EmbeddingStore.create(path, other, LAYOUT, on_mismatch="recompute")
    assert fresh.signature == other
    assert not fresh.done().any()  # nothing of the old signature is served


def test_tiling_change_is_a_mismatch(tmp_path, stack_data):
    source = SliceSource(stack_data)
    StackEmbeddings.open(source, BlockMeanEmbedder(), tmp_path / "s.zarr")
    with pytest.raises(SignatureMismatchError, match="tile"):
        StackEmbeddings.open(source, BlockMeanEmbedder(), tmp_path / "s.zarr",
                             tile=(48, 40), halo=(8, 8))  # fmt: skip


def test_changed_data_is_a_mismatch(tmp_path, stack_data):
    StackEmbeddings.open(SliceSource(stack_data), BlockMeanEmbedder(), tmp_path / "s.zarr")
    edited = stack_data.copy()
    edited[3, 10, 10] += 1
    with pytest.raises(SignatureMismatchError, match="data"):
        StackEmbeddings.open(SliceSource(edited), BlockMeanEmbedder(), tmp_path / "s.zarr")


def test_displayed_slice_first_costs_one_embedding_and_is_kept(tmp_path, stack_data):
    embedder = BlockMeanEmbedder()
    stack = StackEmbeddings.open(SliceSource(stack_data), embedder, tmp_path / "s.zarr")
    emb = stack.get(4)
    assert embedder.calls == 1
    assert stack.is_done()[:, 0].tolist() == [False] * 4 + [True, False]
    expected = BlockMeanEmbedder().embed(stack_data[4]).features.numpy()
    np.testing.assert_allclose(emb.features.numpy(), expected, atol=2e-3)
    assert emb.original_size == (96, 80)
    # reopened later (new session): served from disk, nothing recomputed
    again = BlockMeanEmbedder()
    reopened = StackEmbeddings.open(SliceSource(stack_data), again, tmp_path / "s.zarr")
    np.testing.assert_array_equal(reopened.get(4).features.numpy(), emb.features.numpy())
    assert again.calls == 0


def test_cache_keeps_few_slices_and_prefetch_reads_neighbours(tmp_path, stack_data):
    stack = StackEmbeddings.open(SliceSource(stack_data), BlockMeanEmbedder(),
                                 tmp_path / "s.zarr", cache_size=3)  # fmt: skip
    list(embed_all(stack))
    assert stack.prefetch(3, radius=1) == 3
    assert sorted(stack._cache) == [(2, 0), (3, 0), (4, 0)]
    for s in range(6):
        stack.get(s)
    assert len(stack._cache) == 3


def test_corrupted_chunk_is_recomputed_not_served(tmp_path, stack_data):
    embedder = BlockMeanEmbedder()
    path = tmp_path / "s.zarr"
    stack = StackEmbeddings.open(SliceSource(stack_data), embedder, path)
    list(embed_all(stack))
    good = stack.store.read(2, 0).features.copy()
    chunk = path / "features" / "c" / "2" / "0" / "0" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[100:108] = b"\x00\x7c" * 4  # bit rot: a few values become +inf
    chunk.write_bytes(bytes(raw))
    fresh = StackEmbeddings.open(SliceSource(stack_data), BlockMeanEmbedder(), path)
    # not served, and the user hears which embedding was bad and why
    with pytest.warns(StoreWarning, match=r"slice 2, tile 0 .* does not match its checksum"):
        assert fresh.store.read(2, 0) is None
    with pytest.warns(StoreWarning, match="slice 2, tile 0"):
        assert fresh.store.pending(verify=True) == [(2, 0)]
    with pytest.warns(StoreWarning, match="slice 2, tile 0"):
        np.testing.assert_array_equal(fresh.get(2).features.numpy(), good.astype(np.float32))
    assert fresh.computed == 1
    assert EmbeddingStore.open(path).pending(verify=True) == []  # healed on disk


def test_features_without_published_checksum_count_as_missing(tmp_path):
    # a writer killed between writing features and publishing them
    store = EmbeddingStore.create(tmp_path / "s.zarr", SIG, LAYOUT)
    store.group["features"][1, 0] = _features(3).astype(np.float16)
    assert store.read(1, 0) is None
    assert (1, 0) in store.pending()


def test_writer_of_a_replaced_store_gets_a_clear_error(tmp_path):
    path = tmp_path / "s.zarr"
    old = EmbeddingStore.create(path, SIG, LAYOUT)
    old.write(0, 0, _features(0), (96, 80), (16, 13), 7)
    EmbeddingStore.create(path, replace(SIG, weights="w2"), LAYOUT, on_mismatch="recompute")
    with pytest.raises(StoreChangedError):
        old.write(1, 0, _features(1), (96, 80), (16, 13), 7)
    new = EmbeddingStore.open(path)
    assert not new.done().any()


def test_stale_generation_chunk_is_not_served(tmp_path):
    # an old writer that slipped a chunk in after the store was recreated
    path = tmp_path / "s.zarr"
    old = EmbeddingStore.create(path, SIG, LAYOUT)
    new = EmbeddingStore.create(path, replace(SIG, weights="w2"), LAYOUT,
                                on_mismatch="recompute")  # fmt: skip
    old._check_generation = lambda: None  # it missed the change
    old._features, old._sizes, old._content, old._checksum = (
        new.group[k] for k in ("features", "sizes", "content", "checksum"))  # fmt: skip
    old.write(1, 0, _features(1), (96, 80), (16, 13), 7)
    assert EmbeddingStore.open(path).done()[1, 0]  # its checksum is there...
    with pytest.warns(StoreWarning, match="older version of the store"):
        assert new.read(1, 0) is None  # ...but it does not verify


def test_concurrent_writers_fill_one_store_consistently(tmp_path, stack_data):
    path = tmp_path / "s.zarr"
    source = SliceSource(stack_data)
    stacks = [StackEmbeddings.open(source, BlockMeanEmbedder(), path) for _ in range(2)]
    threads = [threading.Thread(target=lambda s=s: list(embed_all(s))) for s in stacks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store = EmbeddingStore.open(path)
    assert store.pending(verify=True) == []
    ref = BlockMeanEmbedder()
    for s in range(6):
        np.testing.assert_array_equal(
            store.read(s, 0).features, ref.embed(stack_data[s]).features.numpy().astype(np.float16)
        )


def test_in_memory_store(stack_data):
    embedder = BlockMeanEmbedder()
    stack = StackEmbeddings.open(SliceSource(stack_data), embedder, None)
    stack.get(0)
    stack.get(0)
    assert embedder.calls == 1 and stack.store.path is None


def test_a_slice_edited_outside_the_sampled_fingerprint_is_not_served_stale(tmp_path):
    # big data is fingerprinted from a sample (full_hash_limit=0 makes this small stack
    # "big"); an edit elsewhere leaves the store's signature as it was
    data = np.random.default_rng(5).integers(1000, 4000, (40, 96, 80), dtype=np.uint16)
    source = SliceSource(data)
    sampled = fingerprint(source, full_hash_limit=0)
    path = tmp_path / "s.zarr"
    list(embed_all(StackEmbeddings.open(source, BlockMeanEmbedder(), path,
                                        data_fingerprint=sampled)))  # fmt: skip
    edited = data.copy()
    edited[3] = 0  # slice 3 is not one of the sampled slices
    edited_source = SliceSource(edited)
    assert fingerprint(edited_source, full_hash_limit=0) == sampled
    assert not any((w == 0).all() for w in sample_windows(edited_source))
    want = BlockMeanEmbedder().embed(edited[3]).features.numpy().astype(np.float16)
    for prefetch in (True, False):  # a prefetched neighbour, and a plain read from the store
        shutil.copytree(path, tmp_path / f"run{prefetch}.zarr")
        embedder = BlockMeanEmbedder()
        stack = StackEmbeddings.open(edited_source, embedder, tmp_path / f"run{prefetch}.zarr",
                                     data_fingerprint=sampled)  # fmt: skip
        if prefetch:
            assert stack.prefetch(3, radius=1) == 3
        got = stack.get(3).features.numpy()
        # the features of the empty slice, not the old slice's
        np.testing.assert_array_equal(got, want.astype(np.float32))
        assert (stack.computed, embedder.calls) == (1, 1)
        stack.get(2), stack.get(4)  # unchanged neighbours are served as stored
        assert embedder.calls == 1
        # the store was mended: a later session serves the new features without computing
        again = BlockMeanEmbedder()
        later = StackEmbeddings.open(edited_source, again, tmp_path / f"run{prefetch}.zarr",
                                     data_fingerprint=sampled)  # fmt: skip
        np.testing.assert_array_equal(later.get(3).features.numpy(), got)
        assert again.calls == 0


class _CountingReads:
    """Wraps a zarr array and counts reads of it."""

    def __init__(self, array) -> None:
        self.array, self.reads = array, 0

    def __getitem__(self, key):
        self.reads += 1
        return self.array[key]

    def __setitem__(self, key, value):
        self.array[key] = value


def test_bookkeeping_is_a_few_files_and_status_needs_no_disk_reads(tmp_path):
    data = np.random.default_rng(6).integers(0, 4000, (40, 48, 40), dtype=np.uint16)
    path = tmp_path / "s.zarr"
    stack = StackEmbeddings.open(SliceSource(data), BlockMeanEmbedder(), path)
    for s in range(0, 40, 2):
        stack.get(s)
    files = [p.relative_to(path) for p in path.rglob("*") if p.is_file()]
    bookkeeping = [p for p in files if p.parts[0] != "features" and p.name != "zarr.json"]
    # one file per embedding (20 done), and a handful for everything else
    assert len([p for p in files if p.parts[0] == "features"]) == 20 + 1
    assert len(bookkeeping) <= 4, bookkeeping
    # a status update (the widget asks on every slice change and preview) reads no disk
    counted = stack.store._checksum = _CountingReads(stack.store._checksum)
    for _ in range(50):
        done = stack.is_done()
    assert counted.reads == 0
    assert done[:, 0].tolist() == [s % 2 == 0 for s in range(40)]
    stack.get(1)  # its own writes are seen without reading back
    assert stack.is_done()[1, 0] and counted.reads <= 1
    # the status of the store reopened (a new session, another process) is the same
    reopened = StackEmbeddings.open(SliceSource(data), BlockMeanEmbedder(), path)
    assert reopened.is_done()[:, 0].tolist() == [s % 2 == 0 or s == 1 for s in range(40)]
    reopened.store.discard(0)
    assert not EmbeddingStore.open(path).done()[0, 0]


def _format_1_store(path, signature, layout):
    """A store as napari-sam wrote it before per-tile content hashes (store format 1)."""
    group = zarr.open_group(str(path), mode="w")
    n, t, (c, h, w) = layout.n_slices, layout.n_tiles, layout.feature_shape
    group.create_array("features", shape=(n, t, c, h, w), chunks=(1, 1, c, h, w),
                       dtype="float16", fill_value=0, compressors=None)  # fmt: skip
    group.create_array("sizes", shape=(n, t, 4), chunks=(1, 1, 4), dtype="int32", fill_value=0)
    group.create_array("checksum", shape=(n, t), chunks=(1, 1), dtype="uint64", fill_value=0)
    group["checksum"][0, 0] = 12345
    group.attrs["napari_sam"] = {"format": 1, "signature": signature.to_json(),
                                 "layout": asdict(layout), "generation": "ab" * 16}  # fmt: skip


def test_a_store_of_the_previous_format_is_refused_with_advice_or_replaced(tmp_path, stack_data):
    path = tmp_path / "old.zarr"
    source = SliceSource(stack_data)
    embedder = BlockMeanEmbedder()
    probe = StackEmbeddings.open(source, embedder, None, data_fingerprint=fingerprint(source))
    _format_1_store(path, probe.store.signature, probe.store.layout)
    with pytest.raises(StoreFormatError, match=r"store format 1.*delete it and embed again"):
        EmbeddingStore.open(path)
    # a SignatureMismatchError: the CLI and the widget refuse it as they refuse any other
    with pytest.raises(SignatureMismatchError, match="another napari-sam version"):
        StackEmbeddings.open(source, embedder, path)
    assert zarr.open_group(str(path), mode="r").attrs["napari_sam"]["format"] == 1  # untouched
    fresh = StackEmbeddings.open(source, embedder, path, on_mismatch="recompute")
    assert not fresh.is_done().any()
    fresh.get(1)
    assert EmbeddingStore.open(path).done()[:, 0].tolist() == [False, True] + [False] * 4

"""Lazy data: slices and tiles are read from dask / zarr without materialising the stack."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from napari_sam.scaleout import embed_all
from napari_sam.slice_source import SliceSource, fingerprint, open_image, sample_limits
from napari_sam.stack_embeddings import StackEmbeddings
from napari_sam.testing import BlockMeanEmbedder


class CountingArray:
    """A numpy array that records every region dask asks of it."""

    def __init__(self, array):
        self.array, self.reads = array, []
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, key):
        out = self.array[key]
        if out.size:  # dask probes dtype / meta with empty reads: those cost nothing
            self.reads.append(key)
        return out

    def slices_read(self) -> set[int]:
        return {k[0] if isinstance(k[0], int) else k[0].start for k in self.reads}


@pytest.fixture
def counted():
    data = np.random.default_rng(1).integers(0, 60000, (40, 128, 96), dtype=np.uint16)
    backing = CountingArray(data)
    return data, backing, da.from_array(backing, chunks=(1, 64, 48))


def test_reading_a_slice_or_tile_touches_only_its_chunks(counted):
    data, backing, lazy = counted
    source = SliceSource(lazy)
    assert (source.n_slices, source.plane_shape) == (40, (128, 96))
    np.testing.assert_array_equal(source.read(7), data[7])
    assert backing.slices_read() == {7} and len(backing.reads) == 4
    backing.reads.clear()
    np.testing.assert_array_equal(source.read(9, (0, 0, 60, 40)), data[9, :60, :40])
    assert len(backing.reads) == 1


def test_browsing_a_dask_stack_never_materialises_it(tmp_path, counted):
    _, backing, lazy = counted
    source = SliceSource(lazy)
    stack = StackEmbeddings.open(source, BlockMeanEmbedder(), tmp_path / "s.zarr",
                                 data_fingerprint=fingerprint(source, full_hash_limit=0))  # fmt: skip
    sampled = backing.slices_read()
    assert len(sampled) <= 8  # the cheap fingerprint samples a few slices
    backing.reads.clear()
    stack.get(21)  # first prompt on a never seen slice
    assert backing.slices_read() == {21}
    backing.reads.clear()
    list(embed_all(stack, num_workers=2))
    # each remaining slice read once, chunk by chunk; slice 21 not again
    assert sorted(backing.slices_read()) == [s for s in range(40) if s != 21]
    assert len(backing.reads) == 39 * 4


def test_multiscale_uses_level_zero_unless_asked():
    levels = [np.zeros((3, 400, 600), np.uint8), np.zeros((3, 200, 300), np.uint8)]
    full = SliceSource.from_layer_data(levels, multiscale=True)
    assert (full.level, full.plane_shape, full.scale) == (0, (400, 600), (1.0, 1.0))
    low = SliceSource.from_layer_data(levels, multiscale=True, level=1)
    assert (low.level, low.plane_shape, low.scale) == (1, (200, 300), (2.0, 2.0))
    with pytest.raises(ValueError, match="level"):
        SliceSource.from_layer_data(levels, multiscale=True, level=2)


def test_rgb_and_nd_slices_are_numbered_in_c_order():
    source = SliceSource(np.zeros((2, 3, 20, 30, 3), np.uint8), rgb=True)
    assert (source.leading_shape, source.plane_shape) == ((2, 3), (20, 30))
    assert source.slice_key(4) == (1, 1) and source.slice_index((1, 1)) == 4
    assert source.read(4).shape == (20, 30, 3)


def test_fingerprint_sees_edits_and_samples_big_data():
    data = np.random.default_rng(2).integers(0, 255, (10, 300, 300), dtype=np.uint8)
    source = SliceSource(data)
    full = fingerprint(source)
    assert full.startswith("full:") and fingerprint(SliceSource(data.copy())) == full
    edited = data.copy()
    edited[9, 299, 299] ^= 1
    assert fingerprint(SliceSource(edited)) != full
    sampled = fingerprint(source, full_hash_limit=1000)
    assert sampled.startswith("sampled:")
    assert fingerprint(SliceSource(edited), full_hash_limit=1000) != sampled  # a sampled corner


def test_open_image_formats_lazily(tmp_path):
    data = np.random.default_rng(3).integers(0, 1000, (4, 64, 48), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", data, photometric="minisblack")
    np.save(tmp_path / "a.npy", data)
    group = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    group.create_array("0", data=data, chunks=(1, 64, 48))
    group.create_array("1", data=data[:, ::2, ::2], chunks=(1, 32, 24))
    group.attrs["multiscales"] = [{"datasets": [{"path": "0"}, {"path": "1"}]}]
    tif, multiscale = open_image(tmp_path / "a.tif")
    assert not multiscale and not isinstance(tif, np.ndarray)
    np.testing.assert_array_equal(SliceSource(tif).read(2), data[2])
    npy, _ = open_image(tmp_path / "a.npy")
    assert isinstance(npy, np.memmap)
    levels, multiscale = open_image(tmp_path / "ome.zarr")
    assert multiscale and [lv.shape for lv in levels] == [(4, 64, 48), (4, 32, 24)]
    with pytest.raises(FileNotFoundError):
        open_image(tmp_path / "missing.tif")


def test_sample_limits_are_one_pair_for_the_stack():
    data = np.zeros((5, 300, 300), np.uint16)
    data[:, :100] = 1000
    low, high = sample_limits(SliceSource(data))
    assert low == 0 and high == 1000

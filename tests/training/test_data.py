import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_sam.image import percentile_limits
from napari_sam.training import data as training_data
from napari_sam.training.augment import AugmentConfig, augment, normalise
from napari_sam.training.data import (
    FolderPairs,
    ImagePair,
    LayerPairs,
    SliceSampler,
    SyntheticConfig,
    SyntheticSampler,
    ZarrPairs,
    sample_objects,
    stack_slice,
)


def _labels(shape=(40, 50)):
    lab = np.zeros(shape, np.int32)
    lab[5:15, 5:15] = 1
    lab[20:35, 30:45] = 2
    return lab


def test_folder_pairs_tiff_and_png(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    lab = _labels()
    tifffile.imwrite(tmp_path / "img" / "a.tif", (lab * 100).astype(np.uint16))
    tifffile.imwrite(tmp_path / "lab" / "a.tif", lab)
    Image.fromarray(np.stack([lab.astype(np.uint8) * 50] * 3, -1)).save(tmp_path / "img" / "b.png")
    Image.fromarray(lab.astype(np.uint8)).save(tmp_path / "lab" / "b.png")
    tifffile.imwrite(tmp_path / "img" / "unlabelled.tif", lab)
    pairs = FolderPairs(tmp_path / "img", tmp_path / "lab")
    assert len(pairs) == 2
    for pair in pairs:
        assert pair.image.shape == (40, 50)  # RGB averaged to one channel
        assert np.array_equal(pair.labels, lab)
    with pytest.raises(FileNotFoundError):
        FolderPairs(tmp_path / "nope", tmp_path / "lab")


def test_zarr_and_layer_pairs_and_3d_slices(tmp_path):
    import zarr

    stack = np.stack([np.zeros((40, 50), np.int32), _labels(), _labels()])  # (3, 40, 50)
    group = zarr.open_group(str(tmp_path / "d.zarr"), mode="w")
    group.create_array("images", data=(stack * 7).astype(np.uint16)[None])
    group.create_array("labels", data=stack[None])
    pairs = ZarrPairs(tmp_path / "d.zarr")
    assert len(pairs) == 1 and pairs[0].image.shape == (3, 40, 50)
    rng = np.random.default_rng(0)
    for _ in range(5):  # never the empty slice 0
        pair = SliceSampler(pairs)(rng, 0)
        assert pair.labels.any()
        # each slice carries a slice next to it: 1 has 0 (empty), 2 has 1 (equal)
        assert pair.previous is not None and (not pair.previous.any()
                                              or np.array_equal(pair.previous, pair.labels))

    class Layer:
        def __init__(self, data):
            self.data = data

    layers = LayerPairs(Layer(stack[1] * 3), Layer(stack[1]))
    assert len(layers) == 1 and np.array_equal(layers[0].labels, stack[1])


def test_pair_shapes_must_agree():
    with pytest.raises(ValueError):
        ImagePair(np.zeros((4, 4)), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match="previous"):
        ImagePair(np.zeros((4, 4)), np.zeros((4, 4), int), np.zeros((4, 5), int))


def test_stack_slices_carry_the_labels_of_a_slice_next_to_them():
    labels = np.arange(1, 6)[:, None, None] * np.ones((5, 3, 3), int)  # slice z holds id z+1
    nearby = {z: int(stack_slice(labels * 10, labels, z).previous[0, 0]) - 1 for z in range(5)}
    assert all(abs(nearby[z] - z) == 1 for z in range(5))
    assert {nearby[z] - z for z in (1, 2)} == {-1, 1}  # both ways of travel come up
    assert stack_slice(labels[:1] * 10, labels[:1], 0).previous is None  # a one-slice stack


def test_sample_objects():
    rng = np.random.default_rng(0)
    lab = _labels()
    lab[0, 0] = 3  # too small
    assert sorted(sample_objects(lab, 2, rng)) == [1, 2]
    assert set(sample_objects(lab, 6, rng)) == {1, 2} and len(sample_objects(lab, 6, rng)) == 6
    assert len(sample_objects(np.zeros((5, 5), int), 3, rng)) == 0


def test_synthetic_sampler_gives_labelled_pairs():
    sampler = SyntheticSampler(SyntheticConfig(pool_size=2, sizes=(96, 128)))
    rng = np.random.default_rng(0)
    for step in range(3):
        pair = sampler(rng, step)
        assert pair.labels.any() and 96 <= max(pair.image.shape) <= 128


def test_synthetic_sampler_mixes_in_stack_slices():
    config = SyntheticConfig(pool_size=6, sizes=(96, 128), volume_share=1.0,
                             volume_depth=(10, 10), slices_per_volume=3)  # fmt: skip
    sampler = SyntheticSampler(config)
    assert len(sampler.pool) == 6 and all(p.image.ndim == 2 for p in sampler.pool)
    # slices of one stack come in together: the first three share their shape
    assert len({sampler.pool[i].image.shape for i in range(3)}) == 1
    rng = np.random.default_rng(0)
    assert sampler(rng, 0).labels.any()
    # each slice carries the labels of the slice next to it, where the same nuclei go on
    assert all(p.previous is not None and p.previous.shape == p.labels.shape
               for p in sampler.pool)  # fmt: skip
    assert any(np.intersect1d(p.labels[p.labels > 0], p.previous[p.previous > 0]).size
               for p in sampler.pool)  # fmt: skip
    with pytest.raises(ValueError, match="volume_share"):
        SyntheticConfig(volume_share=1.5)
    with pytest.raises(ValueError, match="axial_blur"):
        SyntheticConfig(axial_blur=(2.0, 1.0))


def test_augment_keeps_image_and_labels_aligned():
    lab = _labels()
    pair = ImagePair((lab * 1000).astype(np.uint16), lab)
    rng = np.random.default_rng(0)
    config = AugmentConfig(noise_sigma=(0.0, 0.0), gamma=(1.0, 1.0), crop_prob=0.5,
                           low_percentile=(0.0, 0.0), high_percentile=(100.0, 100.0))
    shapes = set()
    for _ in range(20):
        out = augment(pair, rng, config)
        assert out.image.dtype == np.float32 and out.image.max() <= 255
        assert np.array_equal(out.image > 0, out.labels > 0)
        assert np.allclose(out.image[out.labels == 2], 255)
        shapes.add(out.image.shape)
    assert len(shapes) > 1  # rotations and crops change the shape
    shifted = np.roll(lab, 3, axis=1)  # a slice's neighbour: the geometry goes with it
    pair = ImagePair((lab * 1000).astype(np.uint16), lab, shifted)
    for _ in range(20):
        state = rng.bit_generator.state
        out = augment(pair, rng, config)
        rng.bit_generator.state = state
        alone = augment(ImagePair((shifted * 1000).astype(np.uint16), shifted), rng, config)
        assert np.array_equal(out.previous, alone.labels)


def test_normalise_contrast_limits():
    img = np.arange(1000, dtype=np.uint16).reshape(20, 50)
    out = normalise(img, 0.0, 100.0)
    assert out.min() == 0 and out.max() == 255


def test_training_sees_flat_and_nan_images_as_inference_does():
    """One contrast rule for training and inference: a NaN pixel or a flat crop gives the
    model the same input in both."""
    from napari_sam.image import to_model_image

    nan = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    nan[3, 4] = np.nan
    flat = np.full((16, 16), 7.0, np.float32)
    for image in (nan, flat):
        seen = to_model_image(image, contrast_limits=percentile_limits(image))[..., 0]
        assert np.array_equal(normalise(image), seen)


def test_broad_share_mixes_the_broad_style_into_a_wide_run(monkeypatch):
    lobed = []  # per generated image: was it drawn with lobed outlines (the wide style)?
    real = training_data.synthetic_nuclei

    def recording(shape, seed=None, style=None, **kw):
        lobed.append(max(style.lobes) > 0)
        return real(shape, seed=seed, style=style, **kw)

    monkeypatch.setattr(training_data, "synthetic_nuclei", recording)
    config = SyntheticConfig(pool_size=40, sizes=(64, 64), style="wide", curriculum_steps=0)
    SyntheticSampler(config)
    assert all(lobed)
    lobed.clear()
    SyntheticSampler(SyntheticConfig(pool_size=40, sizes=(64, 64), style="wide",
                                     curriculum_steps=0, broad_share=0.5))  # fmt: skip
    assert 8 <= sum(lobed) <= 32  # about half wide, half broad
    with pytest.raises(ValueError, match="broad_share"):
        SyntheticConfig(broad_share=1.5)

import numpy as np

from napari_sam.sample_data import nuclei_2d, nuclei_3d


def test_samples_are_uint16_nuclei_images():
    (image2d, _meta2d, kind2d), = nuclei_2d()
    (image3d, meta3d, kind3d), = nuclei_3d()
    assert kind2d == kind3d == "image"
    assert image2d.shape == (512, 512) and image2d.dtype == np.uint16
    assert image3d.ndim == 3 and image3d.dtype == np.uint16
    assert len(meta3d["scale"]) == 3
    # Bright objects on a dark background: a real dynamic range.
    assert np.percentile(image2d, 99) > 4 * np.percentile(image2d, 10)


def test_samples_are_reproducible():
    assert np.array_equal(nuclei_2d()[0][0], nuclei_2d()[0][0])

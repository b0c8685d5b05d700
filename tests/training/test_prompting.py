import torch

from napari_sam.training.prompting import (
    PointLabel,
    boxes_from_masks,
    corrective_points,
    first_points,
    interior_points,
    neighbour_negatives,
    noisy_boxes,
)


def _disc(n=32, cy=12, cx=18, r=6):
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _at(mask, coords, scale=1.0):
    """Mask values at (x, y) pixel-index coordinates (N, 2)."""
    ix = ((coords + 0.5) / scale).floor().long()
    return mask[torch.arange(len(mask)), ix[:, 1], ix[:, 0]]


def test_corrective_points_lie_in_the_error_region_with_the_right_label():
    g = torch.Generator().manual_seed(0)
    target = torch.stack([_disc(cx=10), _disc(cx=20)] * 50)  # (100, 32, 32)
    predicted = torch.stack([_disc(cx=13), _disc(cx=20, r=3)] * 50)
    for scale in (1.0, 4.0):
        coords, labels = corrective_points(predicted, target, g, scale)
        fn, fp = target & ~predicted, predicted & ~target
        in_fn, in_fp = _at(fn, coords, scale), _at(fp, coords, scale)
        assert (in_fn | in_fp).all()
        assert (labels[in_fn] == PointLabel.POSITIVE).all()
        assert (labels[in_fp] == PointLabel.NEGATIVE).all()
        assert in_fp.any() and in_fn.any()
    # The second object's prediction lies inside the target: all clicks are positive.
    assert (labels[1::2] == PointLabel.POSITIVE).all()


def test_corrective_point_without_error_is_a_positive_click_inside():
    target = torch.stack([_disc()])
    coords, labels = corrective_points(target.clone(), target, torch.Generator().manual_seed(1))
    assert _at(target, coords).all() and labels.tolist() == [PointLabel.POSITIVE]


def test_first_points_inside_and_centre_click():
    g = torch.Generator().manual_seed(0)
    masks = torch.stack([_disc(cy=8, cx=8, r=4), _disc(cy=20, cx=16, r=7)])
    p = first_points(masks, g, centre_prob=0.0)
    assert p.coords.shape == (2, 1, 2) and (p.labels == PointLabel.POSITIVE).all()
    assert _at(masks, p.coords[:, 0]).all()
    centre = interior_points(masks)
    assert centre.tolist() == [[8.0, 8.0], [16.0, 20.0]]


def test_centre_clicks_are_inside_their_objects_even_when_not_convex():
    labels = torch.zeros(20, 20, dtype=torch.int64)
    labels[2:18, 2:18] = 1
    labels[5:15, 5:18] = 0  # a C shape: its centroid lies in the gap
    labels[8:12, 8:12] = 2
    centres = interior_points(torch.stack([labels == 1, labels == 2])).long()  # (x, y)
    assert [int(labels[y, x]) for x, y in centres] == [1, 2]
    assert (centres[1] - 9.5).abs().max() == 0.5  # a pixel next to the centroid (9.5, 9.5)


def test_boxes_tight_and_noisy():
    masks = torch.stack([_disc(cy=12, cx=18, r=6)])
    assert boxes_from_masks(masks).tolist() == [[12.0, 6.0, 25.0, 19.0]]
    noisy = noisy_boxes(masks.expand(200, -1, -1), torch.Generator().manual_seed(0))
    assert (noisy[:, 2] > noisy[:, 0]).all() and (noisy[:, 3] > noisy[:, 1]).all()
    shift = (noisy - boxes_from_masks(masks)).abs()
    assert shift.max() <= 20 and shift.mean() > 0.3


def test_the_touching_neighbour_is_the_one_sharing_the_longest_border():
    import numpy as np

    from napari_sam.training.batch import touching_neighbours

    labels = torch.zeros(24, 24, dtype=torch.long)
    labels[4:12, 4:12] = 1   # object
    labels[4:12, 12:20] = 2  # shares an 8-pixel side with 1
    labels[12:14, 4:6] = 3   # shares 2 pixels with 1
    labels[20:23, 20:23] = 4  # touches nothing
    ids = np.array([1, 4])
    near = touching_neighbours(labels, torch.stack([labels == 1, labels == 4]), ids)
    assert torch.equal(near[0], labels == 2)
    assert not near[1].any()


def test_neighbour_negatives_lie_on_the_neighbour_and_pad_without_one():
    left = _disc(cx=10)
    right = _disc(cx=22)
    none = torch.zeros_like(left)
    g = torch.Generator().manual_seed(0)
    points = neighbour_negatives(torch.stack([right, right, none]), g, centre_prob=0.5)
    assert points.labels[:, 0].tolist() == [PointLabel.NEGATIVE, PointLabel.NEGATIVE,
                                            PointLabel.PAD]
    assert _at(torch.stack([right, right]), points.coords[:2, 0]).all()
    assert not _at(torch.stack([left, left]), points.coords[:2, 0]).any()

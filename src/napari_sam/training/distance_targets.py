"""Training targets of the instance decoder: foreground and per-object normalised distances.

What torch_em's ``PerObjectDistanceTransform`` computes with micro-sam's settings
(``distances=True, boundary_distances=True, foreground=True``), vectorised over objects:

- foreground: 1 inside an object, 0 elsewhere;
- centre distance: the Euclidean distance to the object's centre (its rounded centroid, or,
  when that lies outside the object, its point farthest from the boundary), divided by the
  object's largest; 0 at the centre, 1 at the farthest pixel;
- boundary distance: ``(d_max - d) / d_max`` with ``d`` the distance to the nearest inner
  boundary pixel (``skimage.segmentation.find_boundaries(mode="inner")``); 0 deepest inside,
  1 on the boundary.

Both distances are 1 in the background (torch_em's ``distance_fill_value``); the loss
masks them there.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import find_boundaries

_EPS = 1e-7


def distance_targets(labels: np.ndarray) -> np.ndarray:
    """labels (H, W) int, 0 background -> (3, H, W) float32: foreground, centre distance,
    boundary distance (:class:`~napari_sam.model.instance_decoder.Channel` order).

    Labels need not be sequential; each id is one object (not split into components).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected (H, W) labels, got shape {labels.shape}")
    out = np.ones((3, *labels.shape), np.float32)
    inside = labels > 0
    out[0] = inside
    ids = np.unique(labels[inside])
    if len(ids) == 0:
        return out
    dense = np.zeros(labels.shape, np.int64)  # ids 1..n, so per-object tables index by id
    dense[inside] = np.searchsorted(ids, labels[inside]) + 1
    index = np.arange(1, len(ids) + 1)

    to_boundary = ndimage.distance_transform_edt(~find_boundaries(dense, mode="inner"))
    deepest = np.asarray(ndimage.maximum(to_boundary, dense, index))  # (n,)
    centres = np.rint(np.asarray(ndimage.center_of_mass(inside, dense, index))).astype(int)
    outside = dense[centres[:, 0], centres[:, 1]] != index
    if outside.any():
        far = ndimage.maximum_position(to_boundary, dense, index[outside])
        centres[outside] = np.asarray(far, dtype=int).reshape(-1, 2)

    rows, cols = np.nonzero(inside)
    obj = dense[rows, cols] - 1  # (P,) 0-based object of each inside pixel
    to_centre = np.hypot(rows - centres[obj, 0], cols - centres[obj, 1])
    farthest = np.zeros(len(ids))
    np.maximum.at(farthest, obj, to_centre)
    out[1, rows, cols] = to_centre / (farthest[obj] + _EPS)
    depth = deepest[obj] - to_boundary[rows, cols]
    out[2, rows, cols] = depth / (deepest[obj] + _EPS)
    return out

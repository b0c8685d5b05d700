"""Whole images: per tile, merged across tile borders; per slice, linked through the stack.

Both are loops over the plain 2D case (:mod:`napari_sam.automatic.plane`) plus one matching
rule: two label maps that cover the same pixels (the overlap of two tile windows, or two
adjacent slices) are compared object by object, and pairs with IoU >= ``link_iou_thresh``
(greedy, best pair first, one to one) are the same object.

Tiles: each tile's window is segmented on its own. Every tile paints its core; objects that
two neighbouring tiles both see in the overlap of their windows are joined, so an object
across a border keeps one id; finally each tile fills still-empty pixels of its window halo
with its objects (an object only one tile found stays whole).
"""

from __future__ import annotations

import numpy as np

from napari_sam.tile_grid import TileGrid


def match_labels(a: np.ndarray, b: np.ndarray, iou_thresh: float) -> list[tuple[int, int]]:
    """One-to-one pairs ``(id in a, id in b)`` of objects of two same-shape label maps with
    IoU >= ``iou_thresh``, chosen greedily from the best IoU down."""
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    both = (a > 0) & (b > 0)
    if not both.any():
        return []
    pairs, inter = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
    area_a = np.bincount(a, minlength=int(pairs[0].max()) + 1)
    area_b = np.bincount(b, minlength=int(pairs[1].max()) + 1)
    iou = inter / (area_a[pairs[0]] + area_b[pairs[1]] - inter)
    order = np.argsort(-iou, kind="stable")
    used_a, used_b, out = set(), set(), []
    for k in order:
        if iou[k] < iou_thresh:
            break
        i, j = int(pairs[0, k]), int(pairs[1, k])
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        out.append((i, j))
    return out


def link_slices(planes: list[np.ndarray], iou_thresh: float) -> np.ndarray:
    """(Z, H, W) int32 labels from per-slice labels: an object matched (IoU >=
    ``iou_thresh``) to one on the slice before keeps its id; others get new ids."""
    out = np.zeros((len(planes), *planes[0].shape), dtype=np.int32)
    next_id, previous = 1, np.zeros(1, dtype=np.int32)
    for z, plane in enumerate(planes):
        ids = np.zeros(int(plane.max()) + 1, dtype=np.int32)
        if z > 0:
            for i, j in match_labels(planes[z - 1], plane, iou_thresh):
                ids[j] = previous[i]
        for j in np.unique(plane[plane > 0]):
            if ids[j] == 0:
                ids[j] = next_id
                next_id += 1
        out[z] = ids[plane]
        previous = ids
    return out


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, x, y) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)


def merge_tiles(grid: TileGrid, windows: list[np.ndarray], iou_thresh: float) -> np.ndarray:
    """(H, W) int32 labels of the plane from each tile's window labels.

    windows[t]: int labels of ``grid[t].window`` (ids local to the tile, 0 = background).
    """
    uf = _UnionFind()
    tiles = grid.tiles
    for a in tiles:
        for b in tiles[a.index + 1 :]:
            r0, c0 = max(a.window[0], b.window[0]), max(a.window[1], b.window[1])
            r1, c1 = min(a.window[2], b.window[2]), min(a.window[3], b.window[3])
            if r0 >= r1 or c0 >= c1:
                continue
            la = windows[a.index][
                r0 - a.window[0] : r1 - a.window[0], c0 - a.window[1] : c1 - a.window[1]
            ]
            lb = windows[b.index][
                r0 - b.window[0] : r1 - b.window[0], c0 - b.window[1] : c1 - b.window[1]
            ]
            for i, j in match_labels(la, lb, iou_thresh):
                uf.union((a.index, i), (b.index, j))
    # global ids: one per union-find root, numbered in tile order
    lookup, roots = [], {}
    for tile in tiles:
        local = np.zeros(int(windows[tile.index].max()) + 1, dtype=np.int32)
        for j in np.unique(windows[tile.index]):
            if j == 0:
                continue
            root = uf.find((tile.index, int(j)))
            local[j] = roots.setdefault(root, len(roots) + 1)
        lookup.append(local)
    out = np.zeros(grid.shape, dtype=np.int32)
    for tile in tiles:  # cores first
        (r0, c0, r1, c1), (wr, wc) = tile.core, tile.window[:2]
        out[r0:r1, c0:c1] = lookup[tile.index][
            windows[tile.index][r0 - wr : r1 - wr, c0 - wc : c1 - wc]
        ]
    for tile in tiles:  # then halos, into free pixels only
        r0, c0, r1, c1 = tile.window
        view = out[r0:r1, c0:c1]
        ids = lookup[tile.index][windows[tile.index]]
        free = (view == 0) & (ids > 0)
        view[free] = ids[free]
    return out

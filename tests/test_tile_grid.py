"""Tile grid with halo: coverage, defaults, prompt routing near borders, stitching across tiles."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_sam.tile_grid import TileGrid, default_grid, grow_across_tiles


def test_cores_partition_the_plane_and_windows_add_the_halo():
    grid = TileGrid((1000, 700), (300, 256), (32, 16))
    assert grid.grid_shape == (4, 3)
    cover = np.zeros((1000, 700), int)
    for tile in grid.tiles:
        r0, c0, r1, c1 = tile.core
        cover[r0:r1, c0:c1] += 1
        w = tile.window
        assert w == (max(r0 - 32, 0), max(c0 - 16, 0), min(r1 + 32, 1000), min(c1 + 16, 700))
    assert (cover == 1).all()


def test_default_grid_from_image_size():
    assert default_grid((800, 1200)).n_tiles == 1  # small: whole image, no halo
    grid = default_grid((10_000, 10_000))
    assert grid.halo == (128, 128)
    windows = [t.window_shape for t in grid.tiles]
    assert max(max(w) for w in windows) <= 1024  # a window fits the model input unresized
    cores = {t.core[2] - t.core[0] for t in grid.tiles}
    assert min(cores) >= 0.95 * max(cores)  # balanced: no sliver tiles at the end
    assert grid.n_tiles == 14 * 14


@pytest.mark.parametrize("seed", range(3))
def test_a_point_goes_to_a_tile_with_at_least_a_halo_of_context(seed):
    grid = TileGrid((2000, 1500), (400, 400), (64, 64))
    for row, col in np.random.default_rng(seed).uniform(0, [2000, 1500], (300, 2)):
        tile = grid[grid.route([[row, col]])]
        r0, c0, r1, c1 = tile.window
        margins = [row - r0 if r0 else 64, col - c0 if c0 else 64,
                   r1 - row - 1 if r1 < 2000 else 64, c1 - col - 1 if c1 < 1500 else 64]  # fmt: skip
        assert min(margins) >= 63


def test_routing_near_and_across_core_borders():
    grid = TileGrid((1600, 1600), (800, 800), (100, 100))
    assert grid.route([[10, 10]]) == 0
    assert grid.route([[790, 10]]) == 0  # near the border, still its own core
    assert grid.route([[810, 10]]) == 2
    # a box straddling the row border: routed to a tile whose window holds it whole
    box = np.array([[760, 300], [850, 400]])
    tile = grid[grid.route(box)]
    assert tile.window[0] <= 760 and tile.window[2] >= 851
    # a box across the 4-tile corner
    box = np.array([[770, 770], [830, 840]])
    tile = grid[grid.route(box)]
    assert tile.window[0] <= 770 and tile.window[1] <= 770
    assert tile.window[2] >= 831 and tile.window[3] >= 841
    with pytest.raises(ValueError, match="outside"):
        grid.route([[1600, 0]])


def test_window_local_coordinates_roundtrip():
    grid = TileGrid((1000, 1000), (400, 400), (50, 50))
    tile = grid[4]
    pts = np.array([[420.5, 430.0]])
    np.testing.assert_allclose(tile.to_local(pts), [[70.5, 80.0]])
    np.testing.assert_allclose(tile.to_global(tile.to_local(pts)), pts)


def _fake_predict(image):
    """Stand-in for SAM: the connected component of ``image > 0`` under the seed points,
    seen only inside the tile's window."""

    def predict(tile, points_rc):
        r0, c0, r1, c1 = tile.window
        labels, _ = ndimage.label(image[r0:r1, c0:c1] > 0)
        local = np.floor(tile.to_local(points_rc)).astype(int)
        ids = {labels[r, c] for r, c in local} - {0}
        return np.isin(labels, list(ids))

    return predict


def test_object_across_many_tiles_is_segmented_whole():
    image = np.zeros((1200, 1200), np.uint8)
    image[500:540, 30:1170] = 1  # a long fibre across three tile columns
    image[100:900, 1000:1030] = 1  # joined to a vertical one
    image[1100:1150, 100:150] = 1  # another object, not to be included
    grid = TileGrid(image.shape, (400, 400), (40, 40))
    predict = _fake_predict(image)
    prompt = np.array([[520.0, 60.0]])
    start = grid.route(prompt)
    stitched = grow_across_tiles(grid, start, predict(grid[start], prompt), predict)
    expected = ndimage.label(image)[0] == ndimage.label(image)[0][520, 60]
    np.testing.assert_array_equal(stitched.paste(image.shape), expected)
    assert not stitched.truncated and len(stitched.tiles) > 3


def test_object_within_the_halo_needs_one_tile_and_max_tiles_truncates():
    image = np.zeros((1200, 1200), np.uint8)
    image[380:430, 100:150] = 1  # crosses the core border at row 400, inside the halo
    grid = TileGrid(image.shape, (400, 400), (40, 40))
    predict = _fake_predict(image)
    start = grid.route([[390, 120]])
    stitched = grow_across_tiles(grid, start, predict(grid[start], [[390, 120]]), predict)
    assert stitched.tiles == (start,)
    np.testing.assert_array_equal(stitched.paste(image.shape), image > 0)

    image[:, 600:610] = 1  # a line through every tile row
    start = grid.route([[10, 605]])
    capped = grow_across_tiles(grid, start, predict(grid[start], [[10, 605]]), predict,
                               max_tiles=2)  # fmt: skip
    assert capped.truncated and len(capped.tiles) == 2


def test_a_magnified_grid_shows_the_model_each_window_about_that_much_larger():
    from napari_sam.tile_grid import magnified_grid

    grid = magnified_grid((384, 384), 512, 2.0)
    assert grid.grid_shape == (2, 2) and grid.halo == (64, 64)
    assert max(max(t.window_shape) for t in grid.tiles) == 256  # 512 / 256: twice as large
    assert magnified_grid((384, 384), 512, 1.0) == default_grid((384, 384), 512)
    assert magnified_grid((100, 200), 512, 2.0).n_tiles == 1  # fits magnified already
    narrow = magnified_grid((384, 384), 512, 2.0, halo=24)  # the same cores, less context
    assert narrow.tile == grid.tile and narrow.halo == (24, 24)
    assert max(max(t.window_shape) for t in narrow.tiles) == 216  # magnified 512 / 216

"""Exact tile grids for backends that take any shape: cores partition the image with sizes that
differ by at most a pixel, margins only towards neighbours, and the cost-model choice."""

from __future__ import annotations

import numpy as np
import pytest

from hanrt.errors import UsageError
from hanrt.tiling import (CPU_TILE_COST, TileCost, choose_grid, grid_axis, grid_for_tile, plan_auto, plan_grid,
                          plan_tiles)
from hanrt.upscaler import Upscaler

from _local_backend import LocalBackend


@pytest.mark.parametrize("length", [1, 2, 7, 64, 100, 257, 1000])
@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("margin", [0, 3, 8])
def test_grid_axis_cores_equal_and_margins_only_towards_neighbours(length, n, margin):
    if n > length:
        with pytest.raises(UsageError):
            grid_axis(length, n, margin)
        return
    wins = grid_axis(length, n, margin)
    assert len(wins) == n and wins[0][2] == 0 and wins[-1][3] == length
    cores = [c1 - c0 for _, _, c0, c1 in wins]
    assert max(cores) - min(cores) <= 1
    for i, (w0, ws, c0, c1) in enumerate(wins):
        assert 0 <= w0 <= c0 < c1 <= w0 + ws <= length
        assert c0 - w0 == (min(margin, c0) if i > 0 else 0)  # margin only where a neighbour is
        assert w0 + ws - c1 == (min(margin, length - c1) if i < n - 1 else 0)
    for (_, _, _, e), (_, _, s, _) in zip(wins, wins[1:]):
        assert e == s


def test_plan_grid_covers_every_pixel_once_without_padding():
    plan = plan_grid(301, 177, rows=3, cols=2, margin=8, scale=4)
    seen = np.zeros((301, 177), np.int32)
    for t in plan.tiles:
        seen[t.y0:t.y1, t.x0:t.x1] += 1
        h, w = plan.window(t)
        assert t.wy + h <= 301 and t.wx + w <= 177  # windows never leave the image
    assert (seen == 1).all()
    # computed pixels: the image plus only the margins towards neighbours
    assert plan.overhead == pytest.approx((301 + 2 * 8 * 2) * (177 + 2 * 8) / (301 * 177))
    assert len(plan.shapes) > 1 and (plan.tile_h, plan.tile_w) == (100 + 2 * 8, 89 + 8)  # cores 100,100,101 x 88,89


def test_fixed_square_tiles_waste_what_the_grid_does_not():
    """The issue's example: 256x256 with tile 128 and margin 8 ran 3x3 tiles (2.25x the pixels)."""
    old = plan_tiles(256, 256, tile=128, margin=8, scale=4)
    assert old.count == 9 and old.overhead == pytest.approx(2.25)
    new = plan_grid(256, 256, rows=grid_for_tile(256, 128, 8), cols=grid_for_tile(256, 128, 8), margin=8, scale=4)
    assert new.count == 9 and new.tile_h <= 128 and new.overhead < 1.3


@pytest.mark.parametrize("length,tile,margin", [(256, 128, 8), (1000, 128, 8), (129, 128, 8), (100, 128, 8),
                                                (5000, 64, 16), (30, 20, 4)])
def test_grid_for_tile_is_the_fewest_tiles_that_fit(length, tile, margin):
    n = grid_for_tile(length, tile, margin)
    assert max(ws for _, ws, _, _ in grid_axis(length, n, margin)) <= tile
    if n > 1:
        assert max(ws for _, ws, _, _ in grid_axis(length, n - 1, margin)) > tile
    with pytest.raises(UsageError, match="margin"):
        grid_for_tile(length + tile, tile, tile // 2)


def test_choose_grid_follows_the_cost_table():
    flat = TileCost(points=((32, 1.0), (4096, 1.0)), max_pixels=10**8)
    assert choose_grid(300, 400, margin=8, cost=flat) == (1, 1)  # no cache effect: margins only cost
    small = TileCost(points=((64, 1.0), (128, 3.0)), max_pixels=10**8)  # big tiles 3x dearer per pixel
    rows, cols = choose_grid(300, 400, margin=8, cost=small)
    plan = plan_grid(300, 400, rows=rows, cols=cols, margin=8, scale=4)
    assert plan.count > 1 and max(plan.tile_h, plan.tile_w) <= 128
    budget = TileCost(points=((32, 1.0), (4096, 1.0)), max_pixels=100 * 100)
    plan = plan_auto(300, 400, margin=8, scale=4, cost=budget)
    assert all(h * w <= 100 * 100 for h, w in plan.shapes)


@pytest.mark.parametrize("hw", [(128, 128), (256, 256), (384, 512), (750, 1000), (1500, 2000), (48, 64), (1, 1),
                                (3, 5000)])
def test_default_cpu_plans_stay_in_budget_and_cover_exactly(hw):
    plan = plan_auto(*hw, margin=8, scale=4, cost=CPU_TILE_COST)
    seen = np.zeros(hw, np.int32)
    for t in plan.tiles:
        seen[t.y0:t.y1, t.x0:t.x1] += 1
    assert (seen == 1).all()
    allowed = CPU_TILE_COST.window_pixels(*hw, 4)
    assert allowed >= CPU_TILE_COST.max_pixels
    assert all(h * w <= allowed for h, w in plan.shapes) or plan.shapes == ((max(hw[0], 1), max(hw[1], 1)),)
    assert plan.overhead < 1.35


def test_memory_budget_leaves_small_images_larger_windows():
    cost = TileCost(points=((32, 1.0), (4096, 1.0)), max_pixels=50 * 50, bytes_per_pixel=1000.0,
                    memory_budget=20_000_000)
    # what the budget leaves after the 8-bit RGB input and its 4x output, per 1000 bytes
    assert cost.window_pixels(100, 100, 4) == (20_000_000 - 100 * 100 * 17 * 3) // 1000
    sizes = [(64, 64), (200, 200), (400, 300), (600, 600)]
    allowed = [cost.window_pixels(h, w, 4) for h, w in sizes]
    assert allowed == sorted(allowed, reverse=True)
    assert cost.window_pixels(600, 600, 4) == 50 * 50  # the budget is spent on the images: the floor
    assert TileCost(points=((32, 1.0),), max_pixels=77).window_pixels(10, 10) == 77  # no budget: fixed
    # flat cost: the fewest pixels within what the budget allows -> whole when it fits, else few large tiles
    assert plan_auto(120, 150, margin=8, scale=4, cost=cost).whole_image
    plan = plan_auto(400, 300, margin=8, scale=4, cost=cost)
    assert not plan.whole_image and all(h * w <= cost.window_pixels(400, 300, 4) for h, w in plan.shapes)
    assert plan.overhead < plan_auto(400, 300, margin=8, scale=4,
                                     cost=TileCost(points=cost.points, max_pixels=50 * 50)).overhead


def test_cpu_table_plans_for_the_goal_sizes():
    """The shipped CPU table: small inputs whole, 256x256 in two windows, 2000x1500 held to the 136x136
    floor that measured output + 294 MB peak RSS."""
    assert plan_auto(128, 128, margin=8, scale=4, cost=CPU_TILE_COST).whole_image
    assert plan_auto(256, 256, margin=8, scale=4, cost=CPU_TILE_COST).count == 2
    big = plan_auto(1500, 2000, margin=8, scale=4, cost=CPU_TILE_COST)
    assert all(h * w <= 136 * 136 for h, w in big.shapes)


@pytest.mark.parametrize("tile", ["auto", 24, 40])
@pytest.mark.parametrize("batch", [1, 3])
def test_exact_grid_is_exact_for_a_local_operator(tile, batch):
    """Margin >= the operator's radius: tiled == whole, bit for bit, with windows of several shapes."""
    img = np.random.default_rng(0).integers(0, 256, (77, 101, 3), dtype=np.uint8)
    whole = Upscaler(LocalBackend(radius=2), tile=0).upscale(img)
    cost = TileCost(points=((16, 1.0), (32, 1.0), (48, 3.0)), max_pixels=40 * 40)
    up = Upscaler(LocalBackend(radius=2), tile=tile, margin=2, batch=batch)
    up.tile_cost = cost
    plan = up.plan(77, 101)
    assert plan.count > 1 and len(plan.shapes) > 1
    np.testing.assert_array_equal(up.upscale(img), whole)


def test_whole_image_allowance_is_capped_and_a_share_of_what_is_available():
    from hanrt import resources

    assert resources.whole_image_allowance((40_000_000_000, "test")) == resources.WHOLE_IMAGE_MAX_BYTES
    assert resources.whole_image_allowance((2_000_000_000, "test")) == int(2_000_000_000 * resources.WHOLE_IMAGE_FRACTION)
    assert resources.whole_image_allowance((0, "test")) == 0


@pytest.mark.parametrize("available, whole", [(20_000_000_000, True), (2_000_000_000, False)])
def test_auto_runs_whole_when_the_whole_image_fits_the_allowance(monkeypatch, available, whole):
    """tile="auto" on the CPU: 512x384 (about 1.75 GB estimated for the bundled model) runs whole
    where a quarter of the available memory holds it, and as an exact grid within the planner's
    budget where it does not; a size past the cap (1000x750) is always tiled."""
    from hanrt import resources

    monkeypatch.setattr(resources, "available_memory", lambda: (available, "test"))
    up = Upscaler("photo", backend="ort-cpu")
    try:
        plan = up.plan(384, 512)
        assert plan.whole_image is whole
        if not whole:
            allowed = up._cost().window_pixels(384, 512, 4)
            assert all(h * w <= allowed for h, w in plan.shapes)
        assert not up.plan(750, 1000).whole_image
        up.tile_cost = TileCost(points=((64, 1.0), (512, 1.0)), max_pixels=64 * 64)  # no host-memory budget
        assert not up.plan(384, 512).whole_image  # backends without a memory budget plan by their table
    finally:
        up.close()

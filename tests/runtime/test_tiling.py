"""The tiler: windows, margins, padding, stitching; exactness against whole-image inference for a
local operator, and the any-size promise (1x1, smaller than a tile, odd sizes, 10000 wide)."""

from __future__ import annotations

import numpy as np
import pytest

from hanrt.errors import InputError, UsageError
from hanrt.tiling import (
    Tile,
    axis_windows,
    extract_tile,
    overhead,
    place_tile,
    plan_tiles,
    tile_input_shape,
)
from hanrt.upscaler import Upscaler

from _local_backend import LocalBackend


@pytest.mark.parametrize("length", [1, 2, 5, 31, 32, 33, 47, 64, 65, 100, 257, 1000, 10000])
@pytest.mark.parametrize("tile,margin", [(32, 0), (32, 4), (32, 8), (64, 16), (128, 24), (16, 7)])
def test_axis_windows_partition_and_margins(length, tile, margin):
    wins = axis_windows(length, tile, margin)
    # cores partition 0..length in order
    assert wins[0][1] == 0 and wins[-1][2] == length
    for (_, _, e), (_, s, _) in zip(wins, wins[1:]):
        assert e == s
    for ws, cs, ce in wins:
        assert ce > cs
        if length >= tile:
            assert 0 <= ws and ws + tile <= length  # windows never leave a large-enough image
        else:
            assert ws == 0 and len(wins) == 1
        assert ws <= cs and ce <= ws + tile  # the core lies in its window
        # every interior side has at least `margin` context inside the window
        if cs > 0:
            assert cs - ws >= margin
        if ce < length:
            assert ws + tile - ce >= margin
    if length > tile:  # no more tiles than needed
        assert len(wins) == 1 + -(-(length - tile) // (tile - 2 * margin))


def test_plan_covers_every_pixel_once():
    plan = plan_tiles(301, 177, tile=64, margin=8, scale=4)
    seen = np.zeros((301, 177), np.int32)
    for t in plan.tiles:
        seen[t.y0:t.y1, t.x0:t.x1] += 1
    assert (seen == 1).all()
    assert (plan.tile_h, plan.tile_w) == (64, 64)
    assert plan.overhead > 1.0


def test_overhead_formula():
    assert overhead(64, 0) == 1.0
    assert overhead(64, 8) == pytest.approx((64 / 48) ** 2)
    assert overhead(32, 16) == float("inf")


def test_bad_plans_are_refused():
    with pytest.raises(UsageError, match="margin"):
        plan_tiles(500, 500, tile=32, margin=16, scale=4)
    with pytest.raises(InputError, match="empty"):
        plan_tiles(0, 10, tile=32, margin=4, scale=4)
    with pytest.raises(UsageError):
        plan_tiles(10, 10, tile=32, margin=-1, scale=4)
    with pytest.raises(UsageError, match="shape rules"):
        plan_tiles(100, 100, tile=30, margin=4, scale=4, fixed=True, tile_multiple=8)
    with pytest.raises(UsageError, match="fixed"):
        plan_tiles(100, 100, tile=None, margin=4, scale=4, fixed=True)


def test_small_image_dynamic_runs_at_own_size_fixed_pads():
    dyn = plan_tiles(5, 7, tile=32, margin=4, scale=4)
    assert (dyn.tile_h, dyn.tile_w, dyn.count) == (5, 7, 1)
    fixed = plan_tiles(5, 7, tile=32, margin=4, scale=4, fixed=True)
    assert (fixed.tile_h, fixed.tile_w, fixed.count) == (32, 32, 1)
    rounded = plan_tiles(5, 7, tile=None, margin=0, scale=4, tile_multiple=4, min_tile=8)
    assert (rounded.tile_h, rounded.tile_w) == (8, 8)


@pytest.mark.parametrize("h,w", [(1, 1), (1, 9), (9, 1), (3, 2), (13, 5)])
def test_extract_pads_by_reflection(h, w):
    img = np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)
    plan = plan_tiles(h, w, tile=16, margin=0, scale=4, fixed=True)
    out = np.empty(tile_input_shape(plan, 1, 3, "NCHW"), np.float32)
    extract_tile(img, plan, plan.tiles[0], out[0], layout="NCHW")

    def pad(a, axis):  # each axis on its own: a 1-pixel side replicates its edge, a longer one reflects
        widths = [(0, 0)] * a.ndim
        widths[axis] = (0, 16 - a.shape[axis])
        return np.pad(a, widths, mode="edge" if a.shape[axis] == 1 else "reflect")

    ref = pad(pad(img, 0), 1).transpose(2, 0, 1)
    assert ref.shape == (3, 16, 16)
    np.testing.assert_array_equal(out[0], ref.astype(np.float32))


def test_extract_layouts_and_uint16():
    img16 = (np.arange(4 * 6 * 3).reshape(4, 6, 3) * 1000).astype(np.uint16)
    plan = plan_tiles(4, 6, tile=None, margin=0, scale=2)
    f = np.empty((3, 4, 6), np.float32)
    extract_tile(img16, plan, plan.tiles[0], f, layout="NCHW")
    np.testing.assert_allclose(f, img16.transpose(2, 0, 1) / 257.0, rtol=1e-6)
    u = np.empty((4, 6, 3), np.uint8)
    extract_tile(img16, plan, plan.tiles[0], u, layout="NHWC")
    np.testing.assert_array_equal(u, np.rint(img16 / 257.0).astype(np.uint8))
    grey = np.arange(24, dtype=np.uint8).reshape(4, 6)
    extract_tile(grey, plan, plan.tiles[0], f, layout="NCHW")
    for c in range(3):
        np.testing.assert_array_equal(f[c], grey)


def test_place_tile_crops_clamps_and_rounds():
    plan = plan_tiles(4, 4, tile=None, margin=0, scale=1)
    t = Tile(0, 0, 0, 1, 3, 1, 4)  # core rows 1..3, cols 1..4 of a window at 0,0
    res = np.full((3, 4, 4), 300.0, np.float32)
    res[:, 1, 1] = -5.0
    res[:, 2, 2] = 127.5
    out = np.zeros((4, 4, 3), np.uint8)
    place_tile(res, plan, t, out, layout="NCHW")
    assert out[0].sum() == 0 and out[:, 0].sum() == 0  # outside the core: untouched
    assert out[1, 1, 0] == 0 and out[1, 2, 0] == 255 and out[2, 2, 0] == 128
    out16 = np.zeros((4, 4, 3), np.uint16)
    place_tile(res, plan, t, out16, layout="NCHW")
    assert out16[1, 2, 0] == 65535 and out16[2, 2, 0] == round(127.5 * 257)
    grey = np.zeros((4, 4), np.uint8)
    res[0], res[1], res[2] = 100.0, 200.0, 50.0
    place_tile(res, plan, t, grey, layout="NCHW")
    assert grey[1, 1] == round(0.299 * 100 + 0.587 * 200 + 0.114 * 50)


@pytest.mark.parametrize("shape", [(1, 1), (1, 1, 3), (2, 3, 3), (61, 47, 3), (5, 300, 3), (130, 70)])
@pytest.mark.parametrize("tile,margin,batch", [(16, 2, 1), (16, 3, 4), (32, 8, 3), (24, 5, 2)])
def test_tiled_equals_whole_for_a_local_operator(shape, tile, margin, batch):
    """With margin >= the operator's radius, tiled output is *identical* to whole-image output."""
    rng = np.random.default_rng(sum(shape) + tile)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    be = LocalBackend(radius=2)
    whole = Upscaler(be, tile=None, margin=0).upscale(img)
    tiled = Upscaler(be, tile=tile, margin=margin, batch=batch).upscale(img)
    assert tiled.shape == (shape[0] * 4, shape[1] * 4, *shape[2:])
    np.testing.assert_array_equal(tiled, whole)


def test_margin_smaller_than_radius_shows_seams():
    """The exactness test above is not vacuous: too small a margin changes pixels."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
    be = LocalBackend(radius=3)
    whole = Upscaler(be, tile=None, margin=0).upscale(img)
    seams = Upscaler(be, tile=20, margin=0).upscale(img)
    ok = Upscaler(be, tile=20, margin=3).upscale(img)
    assert (seams != whole).any()
    np.testing.assert_array_equal(ok, whole)


def test_ten_thousand_pixels_wide_in_bounded_tiles():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (9, 10000, 3), dtype=np.uint8)
    be = LocalBackend(radius=1, scale=2)
    up = Upscaler(be, tile=64, margin=4, batch=8)
    plan = up.plan(9, 10000)
    assert plan.tile_w == 64 and plan.count == 1 + -(-(10000 - 64) // 56)
    out = up.upscale(img)
    assert out.shape == (18, 20000, 3)
    np.testing.assert_array_equal(out, Upscaler(be, tile=None, margin=0).upscale(img))


def test_fixed_shape_backend_pads_small_images_and_uint8_layout():
    be = LocalBackend(radius=1, io="uint8")
    be.fixed_tile_shape = (16, 16)
    img = np.random.default_rng(3).integers(0, 256, (5, 40, 3), dtype=np.uint8)
    up = Upscaler(be, tile=999, margin=2)
    plan = up.plan(5, 40)
    assert (plan.tile_h, plan.tile_w) == (16, 16)
    out = up.upscale(img)
    # rows away from the padded bottom border see exactly what whole-image inference sees
    whole = Upscaler(LocalBackend(radius=1, io="uint8"), tile=None, margin=0).upscale(img)
    np.testing.assert_array_equal(out[: 4 * 4], whole[: 4 * 4])

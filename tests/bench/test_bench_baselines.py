"""Baselines: the quadrant chop and the naive tile loop paste exactly; eager equals the model."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from hanrt_bench.baselines import TorchChop, TorchEager, TorchNaiveTile, chop_pieces
from hanrt_bench.latency import StageTimer
from hanrt_bench.quality import psnr

torch = pytest.importorskip("torch")


class NearestX4(torch.nn.Module):
    """A purely local x4 model (nearest neighbour): any correct tiling reproduces it exactly."""

    config = SimpleNamespace(scale=4)

    def forward(self, x):
        return torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")


def test_chop_pieces_arithmetic():
    # 1000x1000: quadrants of 510x510 (>= 160,000 px) are cut again into 265x265 pieces: 16 runs.
    p = chop_pieces(1000, 1000)
    assert len(p) == 16 and {(h, w) for _, _, h, w in p} == {(265, 265)}
    assert len(chop_pieces(64, 64)) == 4  # the official code always cuts once
    assert chop_pieces(64, 64)[3] == (22, 22, 42, 42)
    # pieces that stop shrinking (side 2*shave) end the recursion
    assert all(h >= 20 for _, _, h, _ in chop_pieces(45, 37, min_size=200))


@pytest.mark.parametrize("make", [
    lambda m: TorchChop(m),
    lambda m: TorchChop(m, min_size=900),
    lambda m: TorchNaiveTile(m, tile=16, pad=3),
    lambda m: TorchNaiveTile(m, tile=7, pad=0),
    lambda m: TorchNaiveTile(m, tile=200, pad=8),
], ids=["chop", "chop-recursive", "tile16", "tile7-nopad", "tile-larger-than-image"])
def test_tiling_baselines_paste_exactly(make, photo_small):
    t = StageTimer()
    ref = TorchEager(NearestX4())(photo_small, t)
    assert ref.shape == (61 * 4, 47 * 4, 3)
    assert np.array_equal(ref, np.repeat(np.repeat(photo_small, 4, 0), 4, 1))
    got = make(NearestX4())(photo_small, t)
    assert np.array_equal(got, ref)


def test_on_tiny_han(tiny_han, photo_small):
    t = StageTimer()
    eager = TorchEager(tiny_han)(photo_small, t)
    x = torch.from_numpy(photo_small.transpose(2, 0, 1)[None].astype(np.float32))
    with torch.no_grad():
        ref = tiny_han(x)[0].clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(eager, ref)
    t.end_iteration()
    assert {"preprocess", "h2d", "compute", "d2h", "stitch"} <= set(t.means())
    # HAN has global attention: chopped output differs from whole-image, but only slightly.
    chop = TorchChop(tiny_han)(photo_small, t)
    assert 25 < psnr(chop, eager) < float("inf")


def test_naive_tile_rejects_bad_sizes(tiny_han):
    with pytest.raises(ValueError):
        TorchNaiveTile(tiny_han, tile=0)

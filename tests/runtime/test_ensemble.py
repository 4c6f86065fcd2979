"""The self-ensemble (``Upscaler(ensemble=N)``, ``--ensemble N``): the views, the sum, and the
Upscaler's result against an independent reference computed with ONNX Runtime directly."""

from __future__ import annotations

import numpy as np
import pytest

from hanrt.cli._common import MODEL_OPTIONS
from hanrt.errors import UsageError
from hanrt.tiling import ENSEMBLES, dihedral_view, place_tile, plan_tiles, store_mean
from hanrt.upscaler import Upscaler

from _local_backend import FailingBackend, LocalBackend


def _img(h=29, w=41, c=3, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    hi = 256 if dtype == np.uint8 else 65536
    shape = (h, w, c) if c else (h, w)
    return rng.integers(0, hi, shape, dtype=dtype)


# -- the views ----------------------------------------------------------------------------------

def test_the_eight_views_are_distinct_views_of_the_array():
    a = _img(5, 7)
    views = [dihedral_view(a, k) for k in range(8)]
    assert all(np.shares_memory(v, a) for v in views)  # views: no copy
    assert [v.shape for v in views] == [(5, 7, 3)] * 4 + [(7, 5, 3)] * 4
    flat = {v.tobytes() + bytes(v.shape[:2]) for v in views}
    assert len(flat) == 8
    np.testing.assert_array_equal(dihedral_view(a, 1), a[:, ::-1])
    np.testing.assert_array_equal(dihedral_view(a, 3), np.rot90(a, 2))
    np.testing.assert_array_equal(dihedral_view(a, 4), a.transpose(1, 0, 2))
    with pytest.raises(ValueError):
        dihedral_view(a, 8)


@pytest.mark.parametrize("k", range(8))
@pytest.mark.parametrize("c", [0, 3])
def test_a_view_of_the_upscaled_image_is_the_upscaled_view(k, c):
    # why the ensemble needs no inverse: upscaling moves each pixel's block with it, so writing the
    # result for view k of the image into view k of the output lands in the original orientation
    a = _img(6, 9, c)
    up = lambda x: x.repeat(4, axis=0).repeat(4, axis=1)  # noqa: E731 - nearest-neighbour x4
    np.testing.assert_array_equal(up(dihedral_view(a, k)), dihedral_view(up(a), k))


# -- the sum ------------------------------------------------------------------------------------

def test_store_mean_rounds_and_clamps_like_a_single_pass():
    total = np.array([[0.0, 3 * 254.6, 3 * 300.0, -3.0, 3 * 127.5 + 0.3]], dtype=np.float32)
    out8 = np.zeros(total.shape, np.uint8)
    store_mean(total.copy(), 3, out8)
    np.testing.assert_array_equal(out8, [[0, 255, 255, 0, 128]])
    out16 = np.zeros(total.shape, np.uint16)
    store_mean(total.copy(), 3, out16)
    np.testing.assert_array_equal(out16, np.rint(np.clip(total / 3 * 257, 0, 65535)).astype(np.uint16))


def test_place_tile_accumulates_into_float32_only():
    plan = plan_tiles(4, 4, tile=4, margin=0, scale=2)
    t = plan.tiles[0]
    res = np.full((3, 8, 8), 100.25, np.float32)
    acc = np.full((8, 8, 3), 1.0, np.float32)
    place_tile(res, plan, t, acc, layout="NCHW", accumulate=True)
    place_tile(res, plan, t, acc, layout="NCHW", accumulate=True)
    np.testing.assert_array_equal(acc, 201.5)  # added, neither clamped nor rounded
    with pytest.raises(TypeError, match="float32"):
        place_tile(res, plan, t, np.zeros((8, 8, 3), np.uint8), layout="NCHW", accumulate=True)


# -- the Upscaler -------------------------------------------------------------------------------

def _reference(onnx_path, img, n):
    """The mean of the model's float outputs for the first n views, each turned back, rounded once:
    computed with an ONNX Runtime session directly, not through hanrt's tiler."""
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    total = 0.0
    for k in range(n):
        v = np.ascontiguousarray(dihedral_view(img, k)).astype(np.float32)
        y = sess.run(None, {name: v.transpose(2, 0, 1)[None]})[0][0].transpose(1, 2, 0)
        if k & 4:  # turn back: the view flipped, then transposed; undo the transpose first
            y = y.swapaxes(0, 1)
        if k & 2:
            y = y[::-1]
        if k & 1:
            y = y[:, ::-1]
        total = total + y.astype(np.float64)
    return np.rint(np.clip(total / n, 0, 255)).astype(np.uint8)


@pytest.mark.parametrize("n", ENSEMBLES)
def test_whole_image_ensemble_equals_the_mean_of_the_turned_back_outputs(tiny_onnx, n):
    img = _img(23, 31)
    with Upscaler(tiny_onnx, backend="ort-cpu", tile=0, threads=1, ensemble=n) as up:
        got = up.upscale(img)
    ref = _reference(tiny_onnx, img, n)
    diff = np.abs(got.astype(int) - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # float32 vs float64 sums differ at .5 ties only
    if n > 1:  # the tiny model is no symmetric filter: the ensemble does change the output
        with Upscaler(tiny_onnx, backend="ort-cpu", tile=0, threads=1) as up:
            assert np.abs(up.upscale(img).astype(int) - ref).max() >= 2


@pytest.mark.parametrize("n", [2, 8])
def test_tiled_ensemble_of_a_symmetric_model_equals_one_pass_exactly(n):
    # LocalBackend is a box filter with zero padding, the same in every orientation, and tiles with
    # margin >= its radius are exact: every pass, on a non-square grid of tiles, gives the same result
    img = _img(37, 53)
    ref = Upscaler(LocalBackend(radius=1), tile=0).upscale(img)
    with Upscaler(LocalBackend(radius=1), tile=16, margin=2, ensemble=n) as up:
        assert up.plan(*img.shape[:2]).count > 1
        np.testing.assert_array_equal(up.upscale(img), ref)
        assert up.backend.calls == n * up.plan(*img.shape[:2]).count  # batch 1: a call per tile and pass


def test_tiled_ensemble_is_close_to_the_whole_image_ensemble(tiny_onnx):
    img = _img(40, 56)
    with Upscaler(tiny_onnx, backend="ort-cpu", tile=0, threads=1, ensemble=8) as up:
        whole = up.upscale(img)
    with Upscaler(tiny_onnx, backend="ort-cpu", tile=24, margin=8, threads=1, ensemble=8) as up:
        tiled = up.upscale(img)
    assert np.abs(whole.astype(int) - tiled).max() <= 1


def test_grey_alpha_and_16_bit_keep_their_form_and_alpha_is_upscaled_once():
    rgba = _img(21, 30, 4)
    grey16 = _img(21, 30, 0, dtype=np.uint16)
    plain = Upscaler(LocalBackend(radius=1), tile=0)
    with Upscaler(LocalBackend(radius=1), tile=0, ensemble=4) as up:
        out = up.upscale(rgba)
        assert out.shape == (84, 120, 4) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, plain.upscale(rgba))  # symmetric model: colour and alpha equal
        g = up.upscale(grey16)
        assert g.shape == (84, 120) and g.dtype == np.uint16
        np.testing.assert_array_equal(g, plain.upscale(grey16))


def test_submit_wait_progress_and_timings_with_an_ensemble(tiny_onnx):
    imgs = [_img(19, 27, seed=s) for s in range(3)]
    with Upscaler(tiny_onnx, backend="ort-cpu", tile=16, margin=4, threads=1, ensemble=4) as up:
        ref = [up.upscale(i) for i in imgs]
        jobs = [up.submit(i) for i in imgs]
        for j, r in zip(jobs, ref):
            np.testing.assert_array_equal(up.wait(j), r)
        seen: list[tuple[int, int]] = []
        timings: dict[str, float] = {}
        up.upscale(imgs[0], progress=lambda d, t: seen.append((d, t)), timings=timings)
    count = up.plan(19, 27).count
    assert seen[-1] == (4 * count, 4 * count)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)  # never goes back
    assert timings["finish"] > 0  # the mean is written in the finish stage


def test_a_failing_pass_fails_its_image_and_the_next_image_runs():
    img = _img(20, 20)
    with Upscaler(FailingBackend(fail_call=3), tile=0, ensemble=4) as up:
        with pytest.raises(RuntimeError, match="device lost"):
            up.upscale(img)
        np.testing.assert_array_equal(up.upscale(img), Upscaler(LocalBackend(radius=1), tile=0).upscale(img))
        job = up.submit(img)
        np.testing.assert_array_equal(up.wait(job), Upscaler(LocalBackend(radius=1), tile=0).upscale(img))


@pytest.mark.parametrize("bad", [0, 3, 16, "2"])
def test_an_ensemble_size_other_than_1_2_4_8_is_refused(bad):
    with pytest.raises(UsageError, match="ensemble must be one of 1, 2, 4, 8"):
        Upscaler(LocalBackend(radius=1), ensemble=bad)


def test_the_command_line_offers_exactly_the_upscalers_sizes():
    assert tuple(MODEL_OPTIONS["ensemble"][1]["choices"]) == ENSEMBLES


class _CountingBackend(LocalBackend):
    """LocalBackend that counts the slot sets it is asked to make (to see reallocations)."""

    def __init__(self):
        super().__init__(radius=1)
        self.made: list[tuple[int, int]] = []

    def make_slots(self, count, batch, tile_h, tile_w):
        self.made.append((tile_h, tile_w))
        return super().make_slots(count, batch, tile_h, tile_w)


def test_transposed_passes_keep_both_orientations_slots_across_frames():
    img = _img(20, 30)  # non-square: the transposed passes need 30x20 windows
    be = _CountingBackend()
    with Upscaler(be, tile=0, ensemble=8) as up:
        first = up.upscale(img)
        made = len(be.made)
        for _ in range(3):
            np.testing.assert_array_equal(up.upscale(img), first)
        jobs = [up.submit(img) for _ in range(3)]
        for j in jobs:
            np.testing.assert_array_equal(up.wait(j), first)
    assert {(20, 30), (30, 20)} <= set(be.made)
    assert len(be.made) == made  # made once (as is, then both orientations), reused by later images



def test_the_sum_is_freed_when_the_image_is_done():
    import collections
    import gc
    import weakref

    img = _img(16, 24)
    up = Upscaler(LocalBackend(radius=1), tile=0, ensemble=8)
    job = up._new_job(img, None, None, None)
    total = weakref.ref(job.total)
    todo = collections.deque(job.passes)
    gc.disable()  # what follows must free the sum by reference counting, not by a collection
    try:
        with up._lock:
            up._stream(lambda: todo.popleft() if todo else None)
        assert job.event.is_set() and job.error is None
        assert job.passes == [] and total() is None
    finally:
        gc.enable()
    np.testing.assert_array_equal(job.out, Upscaler(LocalBackend(radius=1), tile=0).upscale(img))

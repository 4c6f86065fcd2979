"""``Upscaler.submit``/``wait``: frames in flight over the slots, in order, errors per frame, and the
pipeline keeping several frames in flight (structure only: timings are measured by
``python -m hanrt_bench.overlap``, not asserted)."""

from __future__ import annotations

import numpy as np
import pytest

from hanrt.errors import InputError, UsageError
from hanrt.io.frames import Frame
from hanrt.pipeline import Pipeline
from hanrt.upscaler import Upscaler
from hanrt_bench.overlap import FixedTimeBackend, run_overlap

from _local_backend import FailingBackend, LocalBackend


def _imgs(n, h=37, w=53):
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("tile,slots", [(0, 1), (0, 2), (16, 2), (16, 3), ("auto", 2)])
def test_submit_wait_equals_upscale_in_order(tile, slots):
    imgs = _imgs(5)
    ref = [Upscaler(LocalBackend(radius=1), tile=0).upscale(i) for i in imgs]
    with Upscaler(LocalBackend(radius=1), tile=tile, margin=2, slots=slots) as up:
        jobs = [up.submit(i) for i in imgs]
        outs = [up.wait(j) for j in jobs]
        assert all(j.done() for j in jobs)
        np.testing.assert_array_equal(up.upscale(imgs[0]), ref[0])  # sync calls still work in between
        more = up.wait(up.submit(imgs[1]))
    for o, r in zip(outs, ref):
        np.testing.assert_array_equal(o, r)
    np.testing.assert_array_equal(more, ref[1])


def test_a_bad_frame_fails_only_its_own_wait():
    imgs = _imgs(3)
    with Upscaler(LocalBackend(radius=1), tile=16, margin=2) as up:
        a = up.submit(imgs[0])
        with pytest.raises(InputError):
            up.submit(np.zeros((4, 4, 3), np.float32))  # refused at submit
        b = up.submit(imgs[1])
        up.wait(a)
        np.testing.assert_array_equal(up.wait(b), up.upscale(imgs[1]))


def test_a_backend_error_is_raised_by_wait_and_the_next_frame_runs():
    imgs = _imgs(3)
    be = FailingBackend(fail_call=2)
    with Upscaler(be, tile=0, slots=2) as up:
        jobs = [up.submit(i) for i in imgs]
        up.wait(jobs[0])
        with pytest.raises(RuntimeError, match="device lost"):
            up.wait(jobs[1])
        np.testing.assert_array_equal(up.wait(jobs[2]), Upscaler(LocalBackend(radius=1), tile=0).upscale(imgs[2]))


def test_close_finishes_submitted_frames_then_refuses():
    imgs = _imgs(4)
    up = Upscaler(LocalBackend(radius=1), tile=16, margin=2)
    jobs = [up.submit(i) for i in imgs]
    up.close()
    assert all(j.done() for j in jobs)
    assert all(up.wait(j).shape == (148, 212, 3) for j in jobs)
    with pytest.raises(UsageError, match="closed"):
        up.submit(imgs[0])


def test_frames_overlap_on_an_asynchronous_backend():
    """Structure, not speed: with submit/wait the next frame reaches the device before the previous
    one was collected (two batches queued there at once); through plain upscale calls never."""
    be = FixedTimeBackend(seconds_per_pixel=0.01 / (40 * 60))
    try:
        up = Upscaler(be, tile=0, slots=2)
        frames = [Frame(image=i, index=k) for k, i in enumerate(_imgs(6, 40, 60))]
        out = list(Pipeline(iter(frames), up).frames())
        assert [f.index for f in out] == list(range(6))
        assert be.max_queued >= 2
        be.max_queued = 0
        for f in frames:
            up.upscale(f.image)
        assert be.max_queued == 1
        up.close()
    finally:
        be.close()


def test_overlap_benchmark_reports_its_figures():
    r = run_overlap(frames=4, size=(24, 32), decode_ms=1, compute_ms=2, encode_ms=1, tile=0, mode="async")
    assert r["frames"] == 4 and r["fps"] > 0 and r["slowest_stage_fps"] > 0
    assert 0 < r["share_of_slowest"] and r["max_queued_on_device"] >= 1 and set(r["stage_ms"]) == {"decode", "compute", "encode"}

"""The Upscaler API against the PyTorch model (whole image) and against itself (tiled vs whole)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from hanrt.errors import InputError, ModelError, UsageError
from hanrt.metrics import psnr
from hanrt.upscaler import DEFAULT_MARGIN, DEFAULT_TILE, STAGES, Upscaler, default_model_path

pytest.importorskip("onnxruntime")


def _reference(tiny_han, img):
    """Whole-image PyTorch output, clamped and rounded to uint8 (HxWx3)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))[None].astype(np.float32))
    with torch.no_grad():
        y = tiny_han(x)[0].numpy().transpose(1, 2, 0)
    return np.rint(np.clip(y, 0, 255)).astype(np.uint8)


@pytest.fixture(scope="module")
def up_whole(tiny_onnx):
    with Upscaler(tiny_onnx, backend="ort-cpu", tile=0, threads=1) as up:
        yield up


def test_whole_image_matches_pytorch(up_whole, tiny_han, photo_small):
    out = up_whole.upscale(photo_small)
    ref = _reference(tiny_han, photo_small)
    assert out.shape == (244, 188, 3) and out.dtype == np.uint8
    d = np.abs(out.astype(int) - ref.astype(int))
    assert d.max() <= 1 and d.mean() < 0.01
    assert up_whole.scale == 4 and up_whole.info.io == "float"


@pytest.mark.parametrize("tile,margin,batch", [(32, 8, 1), (32, 8, 4), (24, 4, 3), (48, 12, 2)])
def test_tiled_close_to_whole(tiny_onnx, up_whole, photo_small, tile, margin, batch):
    whole = up_whole.upscale(photo_small)
    with Upscaler(tiny_onnx, backend="ort-cpu", tile=tile, margin=margin, batch=batch, threads=1) as up:
        assert up.plan(61, 47).count > 1
        tiled = up.upscale(photo_small)
    assert psnr(tiled, whole) >= 45.0


def test_tile_at_least_image_is_whole_image(tiny_onnx, up_whole, photo_small):
    with Upscaler(tiny_onnx, backend="ort-cpu", tile=64, margin=8, threads=1) as up:
        assert up.plan(61, 47).count == 1
        np.testing.assert_array_equal(up.upscale(photo_small), up_whole.upscale(photo_small))


def test_uint8_graph_agrees_with_float_graph(tiny_onnx_uint8, up_whole, photo_small):
    with Upscaler(tiny_onnx_uint8, backend="ort-cpu", tile=32, margin=8, threads=1) as up:
        assert up.info.layout == "NHWC"
        got = up.upscale(photo_small)
    with Upscaler(up_whole.model_path, backend="ort-cpu", tile=32, margin=8, threads=1) as upf:
        ref = upf.upscale(photo_small)
    d = np.abs(got.astype(int) - ref.astype(int))
    assert d.max() <= 1 and d.mean() < 0.01


def test_grey_goes_through_replicated_rgb(up_whole, photo_small):
    grey = np.ascontiguousarray(photo_small[..., 1])
    out = up_whole.upscale(grey)
    assert out.shape == (244, 188) and out.dtype == np.uint8
    rgb = up_whole.upscale(np.repeat(grey[..., None], 3, axis=2)).astype(np.float64)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.abs(out - luma).max() <= 1.0  # luma of the float output vs of the rounded one
    out1 = up_whole.upscale(grey[..., None])
    assert out1.shape == (244, 188, 1)
    np.testing.assert_array_equal(out1[..., 0], out)


def test_alpha_is_upscaled_bicubic_and_reattached(up_whole, photo_small):
    from PIL import Image

    alpha = np.tile(np.linspace(0, 255, 47, dtype=np.uint8), (61, 1))
    rgba = np.dstack([photo_small, alpha])
    out = up_whole.upscale(rgba)
    assert out.shape == (244, 188, 4)
    np.testing.assert_array_equal(out[..., :3], up_whole.upscale(photo_small))
    np.testing.assert_array_equal(out[..., 3], np.asarray(Image.fromarray(alpha).resize((188, 244), Image.BICUBIC)))
    la = up_whole.upscale(np.dstack([photo_small[..., 0], alpha]))
    assert la.shape == (244, 188, 2)


def test_uint16_keeps_16_bits(up_whole, photo_small):
    img16 = photo_small.astype(np.uint16) * 257 + 100  # not representable in 8 bits
    out16 = up_whole.upscale(img16)
    assert out16.dtype == np.uint16 and out16.shape == (244, 188, 3)
    out8 = up_whole.upscale(photo_small)
    assert np.abs(out16 / 257.0 - out8).max() <= 1.5
    assert len(np.unique(out16 % 257)) > 10  # real 16-bit values, not 8-bit x 257


def test_out_buffer_is_written_in_place(up_whole, photo_small):
    buf = np.zeros((244, 188, 3), np.uint8)
    res = up_whole.upscale(photo_small, out=buf)
    assert res is buf and buf.any()
    with pytest.raises(UsageError, match="out must be"):
        up_whole.upscale(photo_small, out=np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(UsageError, match="out must be"):
        up_whole.upscale(photo_small, out=np.zeros((244, 188, 3), np.uint16))


def test_input_is_not_modified(up_whole, photo_small):
    before = photo_small.copy()
    up_whole.upscale(photo_small)
    np.testing.assert_array_equal(photo_small, before)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((0, 5, 3), np.uint8), "empty"),
    (np.zeros((5, 5, 3), np.float32), "uint8 or uint16"),
    (np.zeros((5, 5, 5), np.uint8), "HxWxC"),
    (np.zeros((5,), np.uint8), "HxWxC"),
    ("not an array", "numpy array"),
])
def test_bad_images(up_whole, bad, match):
    with pytest.raises(InputError, match=match):
        up_whole.upscale(bad)


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 7, 3), (3, 2, 3)])
def test_tiny_images(tiny_onnx, tiny_han, shape):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    with Upscaler(tiny_onnx, backend="ort-cpu", tile=16, margin=4, threads=1) as up:
        out = up.upscale(img)
    assert out.shape == (shape[0] * 4, shape[1] * 4, 3)
    assert np.abs(out.astype(int) - _reference(tiny_han, img).astype(int)).max() <= 1


def test_wide_strip_tiled_vs_whole(tiny_onnx, photo):
    img = np.ascontiguousarray(np.concatenate([photo[:6]] * 4, axis=1))  # 6 x 2048
    with Upscaler(tiny_onnx, backend="ort-cpu", tile=0, threads=1) as up:
        whole = up.upscale(img)
    with Upscaler(tiny_onnx, backend="ort-cpu", tile=64, margin=8, batch=8, threads=1) as up:
        tiled = up.upscale(img)
    assert psnr(tiled, whole) >= 45.0


def test_torch_backend_agrees_with_ort(tiny_checkpoint, tiny_onnx, photo_small):
    with Upscaler(tiny_checkpoint, backend="torch", tile=32, margin=8) as up:
        assert up.backend.name == "torch"
        a = up.upscale(photo_small)
    with Upscaler(tiny_onnx, backend="ort-cpu", tile=32, margin=8, threads=1) as up:
        b = up.upscale(photo_small)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_shared_between_threads(tiny_onnx, photo_small):
    imgs = [np.ascontiguousarray(np.rot90(photo_small, k)) for k in range(4)]
    with Upscaler(tiny_onnx, backend="ort-cpu", tile=32, margin=8, batch=2, threads=1) as up:
        expected = [up.upscale(i) for i in imgs]
        results: dict[int, np.ndarray] = {}

        def work(k):
            results[k] = up.upscale(imgs[k])

        ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    for k in range(4):
        np.testing.assert_array_equal(results[k], expected[k])


def test_progress_and_close(tiny_onnx, photo_small):
    seen = []
    up = Upscaler(tiny_onnx, backend="ort-cpu", tile=24, margin=4, batch=2, threads=1)
    up.upscale(photo_small, progress=lambda d, t: seen.append((d, t)))
    total = up.plan(61, 47).count
    assert seen[-1] == (total, total) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    up.close()
    up.close()
    with pytest.raises(UsageError, match="closed"):
        up.upscale(photo_small)


def _timed_call(up, img):
    """``(result, timings, wall seconds)`` of one ``upscale`` call with stage timings on."""
    import time

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    out = up.upscale(img, timings=timings)
    return out, timings, time.perf_counter() - t0


@pytest.mark.parametrize("kind,tile,batch", [("rgba", 24, 2), ("grey16", 24, 1), ("rgb", 0, 1)])
def test_stage_timings_add_up_and_change_nothing(tiny_onnx, photo_small, kind, tile, batch):
    img = {"rgba": np.dstack([photo_small, photo_small[..., 1]]),
           "grey16": photo_small[..., 0].astype(np.uint16) * 256 + 3,
           "rgb": photo_small}[kind]
    with Upscaler(tiny_onnx, backend="ort-cpu", tile=tile, margin=4, batch=batch, slots=2, threads=1) as up:
        assert (up.plan(61, 47).count > 1) == bool(tile)
        plain = up.upscale(img)
        out, t, wall = _timed_call(up, img)
        np.testing.assert_array_equal(out, plain)  # bit-identical with timings on
        np.testing.assert_array_equal(up.upscale(img), plain)  # ... and off again
        assert tuple(t) == STAGES
        assert all(t[k] > 0 for k in ("prepare", "gather", "compute", "stitch")) and t["finish"] >= 0
        if kind == "rgba":
            assert t["finish"] > 0  # the alpha channel's bicubic upscale
        assert 0.5 * wall <= sum(t.values()) <= wall
        before = dict(t)
        up.upscale(img, timings=t)  # one dict sums several calls
        assert all(t[k] >= before[k] for k in STAGES) and sum(t.values()) > sum(before.values())


def test_backend_instance_is_not_closed(tiny_han, photo_small):
    from hanrt_export.torch_backend import TorchBackend

    be = TorchBackend(tiny_han)
    with Upscaler(be, tile=0) as up:
        up.upscale(photo_small[:8, :8])
    assert be.run(np.zeros((1, 3, 4, 4), np.float32)).shape == (1, 3, 16, 16)


def test_bad_settings(tiny_onnx, tmp_path):
    with pytest.raises(UsageError):
        Upscaler(tiny_onnx, tile=-1)
    with pytest.raises(UsageError):
        Upscaler(tiny_onnx, batch=0)
    with pytest.raises(UsageError, match="no core"):
        Upscaler(tiny_onnx, tile=16, margin=8)
    with pytest.raises(ModelError, match="does not exist"):
        Upscaler(tmp_path / "missing.onnx")


def test_missing_bundled_model_is_a_clear_model_error():
    with pytest.raises(ModelError, match="no_such_model.onnx") as e:
        default_model_path("no_such_model.onnx")
    assert "--model" in str(e.value)


def test_defaults_are_documented_in_the_cli():
    from hanrt.cli import upscale as cli_upscale

    assert f"default {DEFAULT_TILE}" in " ".join(a.help for a in _actions(cli_upscale) if a.dest == "tile")
    margin_help = " ".join(a.help for a in _actions(cli_upscale) if a.dest == "margin")
    assert "measured for the model" in margin_help and f"else {DEFAULT_MARGIN}" in margin_help


def _actions(mod):
    import argparse

    p = argparse.ArgumentParser()
    mod.configure(p)
    return p._actions


# --- planning within an engine's profiles (a numpy stand-in: TensorRT cannot run here) -----------

from _local_backend import LocalBackend  # noqa: E402
from hanrt.backends import tensorrt as E  # noqa: E402
from hanrt.backends.tensorrt import pick_profile, plan_for_profiles  # noqa: E402


class ProfiledBackend(LocalBackend):
    """LocalBackend that, like a TensorRT engine, refuses every shape outside its profiles."""

    def __init__(self, profiles, **kw):
        super().__init__(radius=1, **kw)
        self.profiles = tuple(profiles)
        self.max_batch = max(p.max[0] for p in self.profiles)
        self.shapes: list[tuple[int, int, int]] = []
        self.slot_counts: list[int] = []

    def run(self, batch):
        nhw = (batch.shape[0], *batch.shape[2:4])
        pick_profile(self.profiles, *nhw)  # UsageError outside every profile
        self.shapes.append(nhw)
        return super().run(batch)

    def make_slots(self, count, batch, tile_h, tile_w):
        self.slot_counts.append(count)
        return super().make_slots(count, batch, tile_h, tile_w)

    def plan_tiles(self, height, width, *, tile, margin, batch):  # as the TensorRT backend plans
        return plan_for_profiles(height, width, profiles=self.profiles, tile=tile, margin=margin, batch=batch,
                                 info=self.info)


README_RANGE = E.Profile((1, 64, 64), (4, 128, 128), (4, 192, 192))  # hanrt build --min/--opt/--max


def _img(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _whole(img):
    return Upscaler(LocalBackend(radius=1), tile=None, margin=0).upscale(img)


def test_range_engine_pads_a_small_photo_up_to_its_minimum():
    be = ProfiledBackend([README_RANGE])
    up = Upscaler(be, batch=4)  # default tile 128
    plan = up.plan(50, 40)
    assert (plan.tile_h, plan.tile_w, plan.count) == (64, 64, 1)
    img = _img(50, 40)
    out = up.upscale(img)
    assert out.shape == (200, 160, 3) and be.shapes == [(1, 64, 64)]
    # away from the reflect-padded bottom/right border it is whole-image inference
    np.testing.assert_array_equal(out[:-4, :-4], _whole(img)[:-4, :-4])


def test_range_engine_whole_image_is_capped_at_its_maximum():
    be = ProfiledBackend([README_RANGE])
    up = Upscaler(be, tile=0, margin=8, batch=4)
    assert (up.plan(150, 100).tile_h, up.plan(150, 100).tile_w, up.plan(150, 100).count) == (150, 100, 1)
    plan = up.plan(300, 250)
    assert (plan.tile_h, plan.tile_w) == (192, 192) and plan.count == 4
    img = _img(300, 250, 1)
    np.testing.assert_array_equal(up.upscale(img), _whole(img))  # margin >= radius: exact
    assert be.shapes == [(4, 192, 192)]
    assert (up.plan(1000, 1000).tile_h, Upscaler(be, tile=128).plan(1000, 1000).tile_h) == (192, 128)


def test_fixed_shape_engines_pick_a_matching_profile():
    be = ProfiledBackend(E.profiles_from_tiles([(64, 64), (128, 128)], 2))
    up = Upscaler(be, tile=128, margin=8, batch=2)
    assert (up.plan(50, 40).tile_h, up.plan(50, 40).tile_w) == (64, 64)  # the cheaper padded shape
    assert up.plan(1000, 1000).tile_h == 128  # the asked tile is one the engine has
    assert Upscaler(be, tile=0).plan(30, 30).tile_h == 64
    img = _img(50, 40, 2)
    up.upscale(img)
    up.upscale(_img(300, 200, 3))
    assert set(be.shapes) <= {(1, 64, 64), (2, 64, 64), (1, 128, 128), (2, 128, 128)}


def test_short_last_batch_is_filled_up_to_the_profile_minimum():
    be = ProfiledBackend([E.Profile((2, 32, 32), (2, 32, 32), (4, 32, 32))])
    up = Upscaler(be, tile=32, margin=2, batch=1)
    img = _img(32, 80, 4)
    assert up.plan(32, 80).count == 3
    np.testing.assert_array_equal(up.upscale(img), _whole(img))
    assert be.shapes == [(2, 32, 32)] * 2  # batch 1 asked, 2 is the least the engine takes


def test_no_profile_fits_is_a_usage_error():
    be = ProfiledBackend([E.Profile((1, 8, 8), (1, 16, 16), (1, 16, 16))])
    with pytest.raises(UsageError, match="no tile"):
        Upscaler(be, tile=0, margin=8).plan(100, 100)


def test_no_profile_fits_names_each_replicated_profile_once():
    from hanrt.model_info import ModelInfo
    from hanrt.upscaler import plan_for_profiles

    small = E.Profile((1, 8, 8), (1, 16, 16), (1, 16, 16))
    other = E.Profile((1, 8, 8), (1, 12, 12), (1, 12, 12))
    profiles = [small] * 3 + [other] * 3  # an earlier hanrt's build --slots 3: each profile 3 times
    with pytest.raises(UsageError) as ei:
        plan_for_profiles(100, 100, profiles=profiles, tile=None, margin=8, batch=1, info=ModelInfo(scale=4))
    msg = str(ei.value)
    assert f"[{small.describe()}; {other.describe()}]" in msg
    assert msg.count(small.describe()) == 1 and msg.count(other.describe()) == 1


def test_slots_are_remade_when_the_slot_count_changes():
    be = ProfiledBackend(E.profiles_from_tiles([(32, 32)], 1))
    up = Upscaler(be, tile=32, margin=4, slots=2)
    up.upscale(_img(20, 20))  # one tile: one slot
    up.upscale(_img(100, 100))  # many tiles of the same shape: two slots, transfers overlap compute
    up.upscale(_img(90, 90))
    assert be.slot_counts == [1, 2]


class _ThreadedBackend(LocalBackend):
    """LocalBackend with a truly asynchronous ``submit`` (a worker thread per slot), like TensorRT's slots."""

    def submit(self, slot, n):
        slot.n, slot.pending = n, True
        slot.handle = threading.Thread(target=lambda: setattr(slot, "result", self.run(slot.input[:n])))
        slot.handle.start()

    def wait(self, slot):
        slot.handle.join()
        slot.pending = False
        return slot.result


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_stage_timings_with_asynchronous_slots(slots):
    img = _img(70, 90, 5)
    up = Upscaler(_ThreadedBackend(radius=1), tile=32, margin=2, batch=2, slots=slots)
    assert -(-up.plan(70, 90).count // 2) > slots  # every slot is reused while others are in flight
    out, t, wall = _timed_call(up, img)
    np.testing.assert_array_equal(out, _whole(img))
    np.testing.assert_array_equal(up.upscale(img), out)
    assert all(t[k] > 0 for k in ("prepare", "gather", "compute", "stitch"))
    assert sum(t.values()) <= wall  # compute: the host's waits only, never counted twice

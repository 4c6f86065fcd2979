"""TensorRT backend: the pure logic on the CPU; the real engine path under the ``trt`` marker."""

from __future__ import annotations

import dataclasses
import logging
import types
from pathlib import Path

import numpy as np
import pytest

from hanrt.backends import base
from hanrt.backends import tensorrt as E
from hanrt.backends.tensorrt import backend as T
from hanrt.backends.tensorrt import cuda as _cuda
from hanrt.errors import BackendError, InputError, MissingDependencyError, UsageError
from hanrt.model_info import ModelInfo

INFO = ModelInfo(scale=4)
INFO_U8 = ModelInfo(scale=4, io="uint8")


def test_config_is_frozen_keyword_only_and_extends_base():
    c = E.TrtConfig(device_id=1, slots=3, memory="mapped")
    assert isinstance(c, base.TrtConfig) and c.check_fingerprint
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.slots = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        E.TrtConfig(0)  # type: ignore[misc]
    with pytest.raises(UsageError):
        E.TrtConfig(memory="unified")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        E.TrtConfig(slots=0)


def test_resolve_memory():
    assert T.resolve_memory("auto", integrated=True) == "mapped"  # Jetson: one DRAM, zero-copy
    assert T.resolve_memory("auto", integrated=False) == "copy"
    assert T.resolve_memory("copy", integrated=True) == "copy"
    with pytest.raises(UsageError):
        T.resolve_memory("pinned", integrated=False)


def test_pick_profile():
    ps = (E.Profile((1, 96, 96), (4, 96, 96), (4, 96, 96)), E.Profile((1, 64, 64), (8, 128, 128), (8, 128, 128)))
    assert E.pick_profile(ps, 4, 96, 96) == 0
    assert E.pick_profile(ps, 6, 100, 120) == 1
    with pytest.raises(UsageError, match="hanrt build --tile 200x200 --batch 1"):
        E.pick_profile(ps, 1, 200, 200)


def test_pick_profile_names_each_replicated_profile_once():
    a, b = E.profiles_from_tiles([(96, 96), (64, 64)], 4)
    with pytest.raises(UsageError) as ei:
        E.pick_profile(E.replicate_profiles([a, b], 3), 1, 200, 200)  # hanrt build --slots 3
    msg = str(ei.value)
    assert f"[{a.describe()}; {b.describe()}]" in msg and msg.count(a.describe()) == 1


def test_assign_profiles_gives_distinct_profiles_per_slot():
    a, b = E.profiles_from_tiles([(96, 96), (64, 64)], 4)
    two = E.replicate_profiles([a, b], 2)  # hanrt build --tile 96 --tile 64 --batch 4 --slots 2
    assert E.assign_profiles(two, 2, 4, 96, 96) == [0, 1]
    assert E.assign_profiles(two, 2, 3, 64, 64) == [2, 3]
    assert E.assign_profiles(two, 3, 1, 64, 64) == [2, 3]  # only as many as the engine has
    assert E.assign_profiles(two, 1, 4, 64, 64) == [2]
    assert E.assign_profiles([a, b], 2, 4, 96, 96) == [0]  # --slots 1: one context at a time
    for n in (1, 2, 3, 5):
        idx = E.assign_profiles(E.replicate_profiles([a, b], n), n, 2, 64, 64)
        assert len(set(idx)) == len(idx) == n
    wide = E.Profile((1, 32, 32), (2, 96, 96), (4, 128, 128))  # a range profile also takes 96x96
    assert E.assign_profiles([wide, a, a], 3, 2, 96, 96) == [0, 1, 2]
    with pytest.raises(UsageError, match="hanrt build --tile 48x48"):
        E.assign_profiles(two, 2, 1, 48, 48)
    with pytest.raises(UsageError):
        E.assign_profiles(two, 0, 1, 96, 96)


def test_assign_profiles_skips_the_profiles_in_use():
    a, b = E.profiles_from_tiles([(96, 96), (64, 64)], 4)
    three = E.replicate_profiles([a, b], 3)  # 96x96 at 0, 1, 2; 64x64 at 3, 4, 5
    assert E.assign_profiles(three, 2, 4, 96, 96, in_use={0}) == [1, 2]
    assert E.assign_profiles(three, 3, 4, 96, 96, in_use={1, 4}) == [0, 2]  # fewer: only two free
    assert E.assign_profiles(three, 2, 4, 64, 64, in_use={0, 1, 2}) == [3, 4]  # other shapes' don't matter
    assert E.assign_profiles(three, 2, 4, 96, 96, in_use=(0, 1, 2)) == []  # none free: the caller decides
    with pytest.raises(UsageError, match="hanrt build --tile 48x48"):  # no profile at all: still UsageError
        E.assign_profiles(three, 1, 1, 48, 48, in_use={0})


def test_slot_nbytes():
    assert T.slot_nbytes(INFO, 2, 96, 64) == (2 * 3 * 96 * 64 * 4, 2 * 3 * 384 * 256 * 4)
    assert T.slot_nbytes(INFO_U8, 1, 10, 10) == (300, 4800)


def _fake_rt(codes):
    """A stand-in for cuda.bindings.runtime's error enum and cudaGetErrorName (no CUDA here)."""
    err_t = types.SimpleNamespace(cudaSuccess=0)
    return types.SimpleNamespace(cudaError_t=err_t, cudaGetErrorName=lambda e: (0, codes[int(e)].encode()))


def test_cuda_check_names_errors():
    rt = _fake_rt({0: "cudaSuccess", 2: "cudaErrorMemoryAllocation"})
    assert _cuda.check((0,), "cudaFree", rt) is None
    assert _cuda.check((0, 1234), "cudaMalloc", rt) == 1234
    assert _cuda.check((0, 1, 2), "x", rt) == (1, 2)
    with pytest.raises(BackendError, match=r"cudaMalloc\(4096 bytes\) failed: cudaErrorMemoryAllocation \(2\)"):
        _cuda.check((2, 0), "cudaMalloc(4096 bytes)", rt)


def test_backend_refuses_missing_engine_or_sidecar(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        T.TensorRTBackend(str(tmp_path / "none.plan"))


def test_cuda_python_missing_is_a_clear_error():
    try:
        import cuda.bindings.runtime  # noqa: F401
        pytest.skip("cuda-python is installed")
    except ImportError:
        pass
    _cuda._CUDART = None
    with pytest.raises(MissingDependencyError, match=r"hanrt\[trt\]"):
        _cuda.cudart()


def test_network_flags_for_tensorrt_10_and_11():
    from hanrt.backends.tensorrt.build import _network_flags

    v10 = types.SimpleNamespace(NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1))
    v11 = types.SimpleNamespace(NetworkDefinitionCreationFlag=types.SimpleNamespace())
    assert _network_flags(v10) == 2 and _network_flags(v11) == 0


@pytest.mark.trt
def test_build_and_run_tiny_engine_matches_onnxruntime(tmp_path, tiny_onnx, photo):
    """On a GPU with TensorRT: build, reuse from the cache, run through slots, compare with ORT."""
    ort = pytest.importorskip("onnxruntime")
    from hanrt.backends.tensorrt import build as _tensorrt

    target = _tensorrt.running_target(0)
    p = E.profiles_from_tiles([(32, 32)], 2)[0]  # twice: two slots in flight need two profiles
    options = E.BuildOptions(profiles=tuple(E.replicate_profiles([p], 2)), slots=2,
                             timing_cache=str(tmp_path / "timing.cache"))
    r = E.get_or_build(tiny_onnx, options, target=target, builder=_tensorrt.build_plan, cache_dir=tmp_path)
    assert r.built and (tmp_path / "timing.cache").exists()
    assert not E.get_or_build(tiny_onnx, options, target=target, builder=_tensorrt.build_plan,
                              cache_dir=tmp_path).built
    x = np.stack([photo[i * 32:(i + 1) * 32, 100:132].transpose(2, 0, 1) for i in range(2)]).astype(np.float32)
    sess = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"input": x})[0]
    for memory in ("copy", "mapped"):
        with T.TensorRTBackend(str(r.plan), config=E.TrtConfig(memory=memory)) as be:
            assert be.fixed_tile_shape == (32, 32) and be.max_batch == 2
            slots = be.make_slots(2, 2, 32, 32)
            slots[0].input[:] = x
            slots[1].input[:1] = x[1:]
            be.submit(slots[0], 2)
            be.submit(slots[1], 1)
            a, b = be.wait(slots[0]).copy(), be.wait(slots[1]).copy()
            assert np.abs(a - ref).max() < 0.05 and np.abs(b - ref[1:]).max() < 0.05
            with pytest.raises(BackendError, match="held by a live slot"):
                be.run(x)  # both profiles are held by the slots: run() may not share one
            be.release_slots(slots)
            assert np.abs(be.run(x) - ref).max() < 0.05


# --- slot lifetime, with stand-ins for cuda-python and the engine (no GPU here) ----------------

class _Res:
    """A stand-in CUDA resource that counts what is open."""

    live: set = set()

    def __init__(self, *a, **k):
        _Res.live.add(self)
        self.handle = object()
        self.ptr = self.device_ptr = 1
        self.nbytes = 16

    def synchronize(self):
        pass

    def h2d(self, *a):
        pass

    d2h = record = h2d

    def close(self):
        _Res.live.discard(self)


class _Host(_Res):
    def __init__(self, shape, dtype, *, mapped=False):
        super().__init__()
        self.array = np.zeros(shape, dtype)


class _Ctx:
    def __init__(self):
        self.profile = None

    def set_optimization_profile_async(self, i, stream):
        self.profile = i
        return True

    def set_input_shape(self, name, shape):
        return True

    def set_tensor_address(self, name, ptr):
        pass

    def execute_async_v3(self, stream):
        return True


class _Engine:
    def __init__(self, fail_at=None):
        self.made, self.fail_at = 0, fail_at

    def create_execution_context(self):
        self.made += 1
        return None if self.made == self.fail_at else _Ctx()


def _backend(profiles, engine=None, memory="copy", slots=1, plan="/engines/han.plan"):
    be = object.__new__(T.TensorRTBackend)
    be._cuda = types.SimpleNamespace(HostBuffer=_Host, DeviceBuffer=_Res, Stream=_Res, Event=_Res)
    be.info, be.profiles, be.memory = INFO, tuple(profiles), memory
    be.engine, be._runtime = engine or _Engine(), None
    be._in, be._out = "input", "output"
    be._owned, be._run_slot, be._closed, be._warned_shapes = [], None, False, set()
    fp = E.Fingerprint.make(target=E.Target("10.3.0", "Orin", (8, 7)), onnx_sha256="a" * 64, info=INFO,
                            options=E.BuildOptions(profiles=tuple(profiles), slots=slots))
    be.sidecar = E.Sidecar(fp, INFO, 4, "0" * 64, "han.onnx")
    be.plan = Path(plan)
    be.max_batch = max(p.max[0] for p in profiles)
    return be


P32 = E.Profile((1, 32, 32), (2, 32, 32), (2, 32, 32))
P16 = E.Profile((1, 16, 16), (4, 16, 16), (4, 16, 16))


@pytest.fixture
def live():
    _Res.live = set()
    yield _Res.live


@pytest.mark.parametrize("memory,per_slot", [("copy", 6), ("mapped", 4)])
def test_release_slots_frees_everything(live, memory, per_slot):
    be = _backend([P32, P32], memory=memory)
    slots = be.make_slots(2, 2, 32, 32)
    assert len(live) == 2 * per_slot and len(be._owned) == 2
    assert [s.handle["ctx"].profile for s in slots] == [0, 1]  # never two slots on one profile
    be.release_slots(slots)
    assert not live and not be._owned
    assert slots[0].input.size == 0 and slots[0].output is None  # no view of freed memory
    be.release_slots(slots)  # twice is fine
    be.close()


def test_one_profile_gives_one_slot(live):
    be = _backend([P32, E.Profile((1, 64, 64), (1, 64, 64), (1, 64, 64))])
    assert len(be.make_slots(2, 2, 32, 32)) == 1  # concurrent contexts need distinct profiles
    with pytest.raises(UsageError, match="hanrt build"):
        be.make_slots(1, 1, 48, 48)
    be.close()
    assert not live


def test_engine_built_with_slots_gives_that_many_slots(live, caplog):
    be = _backend(E.replicate_profiles([P32, P16], 2), slots=2)
    with caplog.at_level(logging.WARNING, logger="hanrt.backends.tensorrt.backend"):
        a = be.make_slots(2, 2, 32, 32)
        b = be.make_slots(2, 4, 16, 16)
    assert [s.handle["ctx"].profile for s in a] == [0, 1] and [s.handle["ctx"].profile for s in b] == [2, 3]
    assert not caplog.records
    be.close()
    assert not live


def test_too_few_profiles_warn_once_naming_the_rebuild(live, caplog):
    be = _backend([P32, P16])  # built with --slots 1
    with caplog.at_level(logging.WARNING, logger="hanrt.backends.tensorrt.backend"):
        first = be.make_slots(2, 2, 32, 32)
        assert len(first) == 1
        be.release_slots(first)
        be.release_slots(be.make_slots(2, 2, 32, 32))  # same shape: warned already
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "2 slots asked, but only 1" in msgs[0] and "no overlap" in msgs[0]
    assert msgs[0].endswith("Rebuild the engine with one profile per slot: hanrt build han.onnx "
                            "--min 1x32x32 --opt 2x32x32 --max 2x32x32 --min 1x16x16 --opt 4x16x16 --max 4x16x16 "
                            "--slots 2 --output /engines/han.plan --force")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hanrt.backends.tensorrt.backend"):
        be.make_slots(3, 2, 32, 32)
    assert "--slots 3 --output /engines/han.plan --force" in caplog.records[0].getMessage()
    be.close()
    # a cache entry is rebuilt into the cache (a new key), not over the old key's file
    cached = _backend([P32])
    cached.plan = Path(f"/c/han-fp32-{cached.sidecar.key}.plan")
    with caplog.at_level(logging.WARNING, logger="hanrt.backends.tensorrt.backend"):
        cached.make_slots(2, 1, 32, 32)
    assert caplog.records[-1].getMessage().endswith("hanrt build han.onnx --tile 32x32 --batch 2 --slots 2 --force")
    cached.close()
    assert not live


def test_upscaler_runs_two_slots_on_an_engine_built_with_two(live):
    from hanrt.upscaler import Upscaler

    be = _backend(E.replicate_profiles([P32], 2), slots=2)
    seen: list[int] = []
    submit = be.submit
    be.submit = lambda slot, n: (seen.append(slot.handle["ctx"].profile), submit(slot, n))[-1]
    with Upscaler(be, tile=32, margin=4, batch=2, slots=2) as up:
        out = up.upscale(np.zeros((96, 96, 3), np.uint8))
        assert out.shape == (384, 384, 3) and len(up._slots) == 2
    assert set(seen) == {0, 1} and seen[:2] == [0, 1]  # batches alternate between the two contexts
    be.close()
    assert not live


def test_make_slots_frees_what_it_made_on_failure(live):
    be = _backend([P32, P32], engine=_Engine(fail_at=1))  # the first context fails: nothing to run on
    with pytest.raises(BackendError, match="execution context"):
        be.make_slots(2, 2, 32, 32)
    assert not live and not be._owned

    class _Refuses(_Ctx):
        def set_optimization_profile_async(self, i, stream):
            return i == 0

    refusing = _Engine()
    refusing.create_execution_context = _Refuses
    be = _backend([P32, P32], engine=refusing)
    with pytest.raises(BackendError, match="refused optimization profile 1"):
        be.make_slots(2, 2, 32, 32)
    assert not live and not be._owned


@pytest.mark.parametrize("fail_at,kept", [(2, 1), (3, 2)])
def test_a_later_context_failing_keeps_the_slots_made(live, caplog, fail_at, kept):
    """Out of GPU memory for the 2nd or 3rd context (each has its own activation memory): run with fewer."""
    be = _backend(E.replicate_profiles([P32], 3), engine=_Engine(fail_at=fail_at), slots=3)
    with caplog.at_level(logging.WARNING, logger="hanrt.backends.tensorrt.backend"):
        slots = be.make_slots(3, 2, 32, 32)
    assert len(slots) == kept and [s.index for s in slots] == list(range(kept))
    assert [s.handle["ctx"].profile for s in slots] == list(range(kept))
    assert len(be._owned) == kept and len(live) == 6 * kept  # the failed slot's buffers are freed
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1
    assert f"could not create execution context {fail_at} of 3" in msgs[0]
    assert "out of GPU memory" in msgs[0] and "activation memory" in msgs[0]
    assert f"Running with the {kept} slot(s) made" in msgs[0] and f"slots={kept}" in msgs[0]
    assert msgs[0].endswith(f"--slots {kept} --output /engines/han.plan --force")
    assert be.run(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 3, 128, 128)  # on the profile left free
    assert be._run_slot.handle["ctx"].profile == kept
    be.release_slots(slots)
    be.close()
    assert not live and not be._owned


def test_two_upscalers_sharing_a_backend_never_share_a_profile(live, caplog):
    from hanrt.upscaler import Upscaler

    be = _backend(E.replicate_profiles([P32], 3), slots=3)
    img = np.zeros((96, 96, 3), np.uint8)
    with caplog.at_level(logging.WARNING, logger="hanrt.backends.tensorrt.backend"):
        one = Upscaler(be, tile=32, margin=4, batch=2, slots=2)
        two = Upscaler(be, tile=32, margin=4, batch=2, slots=2)
        one.upscale(img)
        two.upscale(img)  # one's two slots stay live: one profile is left for two
    a = [s.handle["ctx"].profile for s in one._slots]
    b = [s.handle["ctx"].profile for s in two._slots]
    assert a == [0, 1] and b == [2]
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "2 slots asked, but only 1" in msgs[0]
    assert "2 more held by other live slots of this backend" in msgs[0]
    assert msgs[0].endswith("--slots 4 --output /engines/han.plan --force")  # 2 held + 2 asked
    # a third Upscaler finds every profile for the shape held: a clear error, not a shared profile
    three = Upscaler(be, tile=32, margin=4, batch=2, slots=2)
    with pytest.raises(BackendError, match=r"held by a live slot of this backend .*--slots 5 "):
        three.upscale(img)
    one.close()  # frees profiles 0 and 1
    three.upscale(img)
    assert [s.handle["ctx"].profile for s in three._slots] == [0, 1]
    for up in (two, three):
        up.close()
    be.close()
    assert not live


def test_run_alongside_slots_takes_a_free_profile(live):
    be = _backend(E.replicate_profiles([P32], 2), slots=2)
    be.run(np.zeros((1, 3, 32, 32), np.float32))
    assert be._run_slot.handle["ctx"].profile == 0
    slots = be.make_slots(2, 2, 32, 32)  # run()'s context still holds profile 0
    assert [s.handle["ctx"].profile for s in slots] == [1]
    be.release_slots(slots)
    slots = be.make_slots(1, 2, 32, 32)
    assert [s.handle["ctx"].profile for s in slots] == [1]
    be.run(np.zeros((2, 3, 32, 32), np.float32))  # remade (bigger batch) on the profile slots don't hold
    assert be._run_slot.handle["ctx"].profile == 0
    with pytest.raises(BackendError, match="held by a live slot of this backend"):
        be.make_slots(1, 2, 32, 32)  # both held now
    be.release_slots(slots + [be._run_slot])
    held = be.make_slots(2, 2, 32, 32)
    with pytest.raises(BackendError, match="held by a live slot of this backend"):
        be.run(np.zeros((1, 3, 32, 32), np.float32))  # run() does not take a profile a slot holds
    be.release_slots(held)
    be.close()
    assert not live and not be._owned


def test_run_frees_the_slot_it_replaces(live):
    be = _backend([P32, E.Profile((1, 16, 16), (4, 64, 64), (4, 64, 64))])
    be.run(np.zeros((1, 3, 32, 32), np.float32))
    n = len(live)
    be.run(np.zeros((2, 3, 48, 48), np.float32))
    be.run(np.zeros((1, 3, 16, 16), np.float32))
    assert len(live) == n and len(be._owned) == 1
    be.close()
    assert not live and not be._owned

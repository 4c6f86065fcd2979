"""TensorRT backend: the pure logic on the CPU; the real engine path under the ``trt`` marker."""

from __future__ import annotations

import dataclasses
import logging
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from hanrt.backends import base
from hanrt.backends import tensorrt as E
from hanrt.backends.tensorrt import backend as T
from hanrt.errors import BackendError, InputError, UsageError
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


def test_pick_profile_names_each_profile_of_an_earlier_hanrts_slots_engine_once():
    a, b = E.profiles_from_tiles([(96, 96), (64, 64)], 4)
    with pytest.raises(UsageError) as ei:
        E.pick_profile([a, a, a, b, b, b], 1, 200, 200)  # an earlier hanrt's --slots 3
    msg = str(ei.value)
    assert f"[{a.describe()}; {b.describe()}]" in msg and msg.count(a.describe()) == 1


def test_slot_nbytes():
    assert T.slot_nbytes(INFO, 2, 96, 64) == (2 * 3 * 96 * 64 * 4, 2 * 3 * 384 * 256 * 4)
    assert T.slot_nbytes(INFO_U8, 1, 10, 10) == (300, 4800)


def test_backend_refuses_missing_engine_or_sidecar(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        T.TensorRTBackend(str(tmp_path / "none.plan"))


@pytest.mark.trt
def test_build_and_run_tiny_engine_matches_onnxruntime(tmp_path, tiny_onnx, photo):
    """On a GPU with TensorRT: build, reuse from the cache, run through slots, compare with ORT."""
    ort = pytest.importorskip("onnxruntime")
    from hanrt.backends.tensorrt import build as _tensorrt

    target = _tensorrt.running_target(0)
    options = E.BuildOptions(profiles=tuple(E.profiles_from_tiles([(32, 32)], 2)),
                             timing_cache=str(tmp_path / "timing.cache"))
    r = E.get_or_build(tiny_onnx, options, target=target, builder=_tensorrt.build_plan, cache_dir=tmp_path)
    assert r.built and E.timing_cache_file(tmp_path / "timing.cache", target).exists()
    assert not E.get_or_build(tiny_onnx, options, target=target, builder=_tensorrt.build_plan,
                              cache_dir=tmp_path).built
    x = np.stack([photo[i * 32:(i + 1) * 32, 100:132].transpose(2, 0, 1) for i in range(2)]).astype(np.float32)
    sess = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"input": x})[0]
    for memory in ("copy", "mapped"):
        with T.TensorRTBackend(str(r.plan), config=E.TrtConfig(memory=memory)) as be:
            assert be.fixed_tile_shape == (32, 32) and be.max_batch == 2
            slots = be.make_slots(2, 2, 32, 32)  # two contexts on the engine's one profile
            slots[0].input[:] = x
            slots[1].input[:1] = x[1:]
            be.submit(slots[0], 2)
            be.submit(slots[1], 1)
            a, b = be.wait(slots[0]).copy(), be.wait(slots[1]).copy()
            assert np.abs(a - ref).max() < 0.05 and np.abs(b - ref[1:]).max() < 0.05
            assert np.abs(be.run(x) - ref).max() < 0.05  # a third context beside the live slots
            be.release_slots(slots)


# --- slot lifetime, with stand-ins for cuda-python and the engine (no GPU here) ----------------

_THREAD = threading.local()  # the simulated CUDA current device of each host thread (cudaSetDevice)


def _current_device() -> int:
    return getattr(_THREAD, "device", 0)


class _Res:
    """A stand-in CUDA resource that counts what is open and records the device each call ran on."""

    live: set = set()
    devices: list = []

    def __init__(self, *a, **k):
        _Res.devices.append(_current_device())
        _Res.live.add(self)
        self.handle = object()
        self.ptr = self.device_ptr = 1
        self.nbytes = 16

    def synchronize(self):
        _Res.devices.append(_current_device())

    h2d = d2h = record = lambda self, *a: _Res.devices.append(_current_device())

    def close(self):
        _Res.devices.append(_current_device())
        _Res.live.discard(self)


class _Host(_Res):
    def __init__(self, shape, dtype, *, mapped=False):
        super().__init__()
        self.array = np.zeros(shape, dtype)


class _Ctx:
    def __init__(self, engine=None):
        self.profile = None
        self.engine = engine
        _Res.devices.append(_current_device())

    def set_optimization_profile_async(self, i, stream):
        self.profile = i
        return True

    def set_input_shape(self, name, shape):
        return True

    def set_tensor_address(self, name, ptr):
        return not (self.engine and name in self.engine.refuse_address)

    def execute_async_v3(self, stream):
        _Res.devices.append(_current_device())
        return True


class _Engine:
    def __init__(self, fail_at=None):
        self.made, self.fail_at = 0, fail_at
        self.refuse_address: set = set()

    def create_execution_context(self):
        self.made += 1
        return None if self.made == self.fail_at else _Ctx(self)


def _fake_cuda():
    def set_device(d):
        _THREAD.device = int(d)

    return types.SimpleNamespace(HostBuffer=_Host, DeviceBuffer=_Res, Stream=_Res, Event=_Res, set_device=set_device)


def _backend(profiles, engine=None, memory="copy", slots=1, plan="/engines/han.plan", device=0):
    """A TensorRTBackend on stand-ins; ``slots > 1``: an engine of an earlier hanrt's --slots N
    (``profiles`` then lists each profile N times in a row)."""
    be = object.__new__(T.TensorRTBackend)
    be._cuda = _fake_cuda()
    be.device = device
    be.info, be.profiles, be.memory = INFO, tuple(profiles), memory
    be.engine, be._runtime = engine or _Engine(), None
    be._in, be._out = "input", "output"
    be._owned, be._run_slot, be._closed = [], None, False
    fp = E.Fingerprint.make(target=E.Target("10.3.0", "Orin", (8, 7)), onnx_sha256="a" * 64, info=INFO,
                            options=E.BuildOptions(profiles=E.base_profiles(profiles, slots)))
    fp = dataclasses.replace(fp, profiles=tuple(p.to_json() for p in profiles), slots=slots)
    be.sidecar = E.Sidecar(fp, INFO, 4, "0" * 64, "han.onnx")
    be.plan = Path(plan)
    be.max_batch = max(p.max[0] for p in profiles)
    return be


P32 = E.Profile((1, 32, 32), (2, 32, 32), (2, 32, 32))
P16 = E.Profile((1, 16, 16), (4, 16, 16), (4, 16, 16))


@pytest.fixture
def live():
    _Res.live = set()
    _Res.devices = []
    _THREAD.device = 0
    yield _Res.live


def _profiles(slots):
    return [s.handle["ctx"].profile for s in slots]


@pytest.mark.parametrize("memory,per_slot", [("copy", 6), ("mapped", 4)])
def test_release_slots_frees_everything(live, memory, per_slot):
    be = _backend([P32], memory=memory)
    slots = be.make_slots(2, 2, 32, 32)
    assert len(live) == 2 * per_slot and len(be._owned) == 2
    be.release_slots(slots)
    assert not live and not be._owned
    assert slots[0].input.size == 0 and slots[0].output is None  # no view of freed memory
    be.release_slots(slots)  # twice is fine
    be.close()


def test_slots_share_one_profile_and_run_works_beside_them(live, caplog):
    """Execution contexts share optimization profiles (TensorRT >= 10, finding 4): an engine with one
    profile per tile shape runs any number of slots, and run() while they are alive."""
    be = _backend([P32, P16])
    with caplog.at_level(logging.WARNING, logger="hanrt.backends.tensorrt.backend"):
        a = be.make_slots(3, 2, 32, 32)
        b = be.make_slots(2, 4, 16, 16)
        out = be.run(np.zeros((1, 3, 32, 32), np.float32))
    assert _profiles(a) == [0, 0, 0] and _profiles(b) == [1, 1] and out.shape == (1, 3, 128, 128)
    assert len({id(s.handle["ctx"]) for s in a + b}) == 5  # one execution context per slot
    assert be._run_slot.handle["ctx"].profile == 0 and not caplog.records
    with pytest.raises(UsageError, match="hanrt build"):
        be.make_slots(1, 1, 48, 48)  # no profile takes 48x48
    be.close()
    assert not live and not be._owned


def test_an_engine_built_with_slots_by_an_earlier_hanrt_runs_on_the_first_copy(live):
    be = _backend([P32, P32, P16, P16], slots=2)
    assert _profiles(be.make_slots(2, 2, 32, 32)) == [0, 0] and _profiles(be.make_slots(3, 4, 16, 16)) == [2, 2, 2]
    be.close()
    assert not live


def test_upscaler_runs_two_slots_on_one_profile(live):
    from hanrt.upscaler import Upscaler

    be = _backend([P32])
    seen: list[int] = []
    submit = be.submit
    be.submit = lambda slot, n: (seen.append(id(slot.handle["ctx"])), submit(slot, n))[-1]
    with Upscaler(be, tile=32, margin=4, batch=2, slots=2) as up:
        out = up.upscale(np.zeros((96, 96, 3), np.uint8))
        assert out.shape == (384, 384, 3) and len(up._slots) == 2 and _profiles(up._slots) == [0, 0]
    assert len(set(seen)) == 2 and seen[0] != seen[1]  # batches alternate between the two contexts
    be.close()
    assert not live


def test_two_upscalers_sharing_a_backend_share_its_profile(live, caplog):
    from hanrt.upscaler import Upscaler

    be = _backend([P32])
    img = np.zeros((96, 96, 3), np.uint8)
    with caplog.at_level(logging.WARNING, logger="hanrt.backends.tensorrt.backend"):
        one = Upscaler(be, tile=32, margin=4, batch=2, slots=2)
        two = Upscaler(be, tile=32, margin=4, batch=2, slots=2)
        one.upscale(img)
        two.upscale(img)  # one's two slots stay live
    assert _profiles(one._slots) == [0, 0] and _profiles(two._slots) == [0, 0] and not caplog.records
    for up in (one, two):
        up.close()
    be.close()
    assert not live


def test_make_slots_frees_what_it_made_on_failure(live):
    be = _backend([P32], engine=_Engine(fail_at=1))  # the first context fails: nothing to run on
    with pytest.raises(BackendError, match="execution context"):
        be.make_slots(2, 2, 32, 32)
    assert not live and not be._owned

    class _Refuses(_Ctx):
        made = 0

        def set_optimization_profile_async(self, i, stream):
            _Refuses.made += 1
            return _Refuses.made == 1  # the second context is refused

    refusing = _Engine()
    refusing.create_execution_context = _Refuses
    be = _backend([P32], engine=refusing)
    with pytest.raises(BackendError, match=r"refused optimization profile 0 \(min 1x32x32"):
        be.make_slots(2, 2, 32, 32)
    assert not live and not be._owned


@pytest.mark.parametrize("fail_at,kept", [(2, 1), (3, 2)])
def test_a_later_context_failing_keeps_the_slots_made(live, caplog, fail_at, kept):
    """Out of GPU memory for the 2nd or 3rd context (each has its own activation memory): run with fewer."""
    be = _backend([P32], engine=_Engine(fail_at=fail_at))
    with caplog.at_level(logging.WARNING, logger="hanrt.backends.tensorrt.backend"):
        slots = be.make_slots(3, 2, 32, 32)
    assert len(slots) == kept and [s.index for s in slots] == list(range(kept)) and _profiles(slots) == [0] * kept
    assert len(be._owned) == kept and len(live) == 6 * kept  # the failed slot's buffers are freed
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1
    assert f"could not create execution context {fail_at} of 3" in msgs[0]
    assert "out of GPU memory" in msgs[0] and "activation memory" in msgs[0]
    assert f"Running with the {kept} slot(s) made" in msgs[0] and f"slots={kept}" in msgs[0]
    be.engine.fail_at = None
    assert be.run(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 3, 128, 128)
    be.release_slots(slots)
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


def test_a_refused_tensor_address_is_an_error(live):
    """set_tensor_address returns False when TensorRT refuses an address (finding 8)."""
    engine = _Engine()
    be = _backend([P32], engine=engine)
    slot = be.make_slots(1, 2, 32, 32)[0]
    engine.refuse_address.add("output")
    with pytest.raises(BackendError, match="refused the address of tensor 'output'"):
        be.submit(slot, 2)
    assert not slot.pending
    be.close()
    assert not live


def test_every_entry_point_makes_the_device_current_on_its_thread(live):
    """--device 1: the CUDA current device is per host thread, and the pipeline makes slots,
    submits, waits and closes from its own thread (finding 3)."""
    be = _backend([P32, P32], slots=2, device=1)  # made (and the device set) on the main thread
    done: list = []

    def worker():
        slots = be.make_slots(2, 2, 32, 32)
        be.submit(slots[0], 2)
        be.submit(slots[1], 1)
        be.wait(slots[0])
        be.wait(slots[1])
        be.release_slots(slots)
        be.run(np.zeros((1, 3, 32, 32), np.float32))
        be.close()
        done.append(True)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert done and _Res.devices and not live
    assert set(_Res.devices) == {1}, f"CUDA calls on device {sorted(set(_Res.devices))}, not 1"

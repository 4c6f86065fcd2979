"""TensorRT backend: the pure logic on the CPU; the real engine path under the ``trt`` marker."""

from __future__ import annotations

import dataclasses
import logging
import threading
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


# --- slot lifetime, on the fakes generated from the real TensorRT / cuda-bindings (trt_fakes) ----

def _plan(fx, onnx: Path, profiles) -> bytes:
    """A plan with exactly ``profiles`` (in order, repeats kept: an earlier hanrt's --slots N engine
    had each profile N times), built through the fake TensorRT's real API as hanrt's build does."""
    from hanrt.backends.tensorrt import build as B

    t, lg = fx.trt, B.logger()
    builder = t.Builder(lg)
    network = builder.create_network(B._network_flags(t))
    assert t.OnnxParser(network, lg).parse_from_file(str(onnx))
    config = builder.create_builder_config()
    for prof in profiles:
        op = builder.create_optimization_profile()
        s = prof.input_shapes(INFO)
        op.set_shape("input", s["min"], s["opt"], s["max"])
        assert config.add_optimization_profile(op) >= 0
    return bytes(memoryview(builder.build_serialized_network(network, config)))


@pytest.fixture
def fx(trt_fakes):
    return trt_fakes()


@pytest.fixture
def make_backend(fx, tmp_path):
    """``make(profiles, memory="copy", slots=1, device=0)``: a TensorRTBackend on a plan of the fake
    TensorRT (graph: nearest x4); ``slots > 1``: an engine of an earlier hanrt's --slots N
    (``profiles`` then lists each profile N times in a row)."""
    import hashlib

    pytest.importorskip("onnx", reason="the graph and the fake TensorRT's parser need onnx ('hanrt[export]')")
    from conformance.scenario import make_onnx
    from hanrt.backends.tensorrt import build as B

    onnx = make_onnx(tmp_path / "han.onnx", "float")
    n = [0]

    def make(profiles, memory="copy", slots=1, device=0):
        from conformance.scenario import in_thread

        # built in a thread whose current device is ``device``, as hanrt build --device does
        data = in_thread(lambda: (B._cuda.set_device(device), _plan(fx, onnx, profiles))[1], "build")
        fp = E.Fingerprint.make(target=B.running_target(device), onnx_sha256="a" * 64, info=INFO,
                                options=E.BuildOptions(profiles=E.base_profiles(profiles, slots)))
        fp = dataclasses.replace(fp, profiles=tuple(p.to_json() for p in profiles), slots=slots)
        n[0] += 1
        plan = tmp_path / f"han-{n[0]}.plan"
        E.write_engine(plan, data, E.Sidecar(fp, INFO, len(data), hashlib.sha256(data).hexdigest(), str(onnx)))
        return T.TensorRTBackend(str(plan), config=E.TrtConfig(memory=memory, device_id=device))

    return make


def _nearest(x: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(x, 4, axis=-2), 4, axis=-1)


def _fail_context_at(fx, k: int | None) -> None:
    """The ``k``-th create_execution_context returns None (out of GPU memory), as TensorRT's does."""
    from trtfakes import PROCEED

    made = []
    fx.trt._fake.api.fail["ICudaEngine.create_execution_context"] = \
        lambda *a, **kw: (made.append(1), None if len(made) == k else PROCEED)[1]


P32 = E.Profile((1, 32, 32), (2, 32, 32), (2, 32, 32))
P16 = E.Profile((1, 16, 16), (4, 16, 16), (4, 16, 16))


@pytest.fixture
def live(fx):
    """What is allocated in the simulated CUDA (buffers, streams, events): a list, read when called."""
    return fx.sim.live


def _profiles(slots):
    return [s.handle["ctx"].active_optimization_profile for s in slots]


@pytest.mark.parametrize("memory,per_slot", [("copy", 6), ("mapped", 4)])
def test_release_slots_frees_everything(make_backend, fx, live, memory, per_slot):
    be = make_backend([P32], memory=memory)
    slots = be.make_slots(2, 2, 32, 32)
    assert len(live()) == 2 * per_slot and len(be._owned) == 2
    be.release_slots(slots)
    assert not live() and not be._owned
    assert slots[0].input.size == 0 and slots[0].output is None  # no view of freed memory
    be.release_slots(slots)  # twice is fine
    be.close()


def test_slots_share_one_profile_and_run_works_beside_them(make_backend, fx, live, caplog):
    """Execution contexts share optimization profiles (TensorRT >= 10, finding 4): an engine with one
    profile per tile shape runs any number of slots, and run() while they are alive."""
    be = make_backend([P32, P16])
    with caplog.at_level(logging.WARNING, logger="hanrt.backends.tensorrt.backend"):
        a = be.make_slots(3, 2, 32, 32)
        b = be.make_slots(2, 4, 16, 16)
        x = np.random.default_rng(0).integers(0, 256, (1, 3, 32, 32)).astype(np.float32)
        out = be.run(x)
    assert _profiles(a) == [0, 0, 0] and _profiles(b) == [1, 1] and np.array_equal(out, _nearest(x))
    assert len({id(s.handle["ctx"]) for s in a + b}) == 5  # one execution context per slot
    assert be._run_slot.handle["ctx"].active_optimization_profile == 0 and not caplog.records
    with pytest.raises(UsageError, match="hanrt build"):
        be.make_slots(1, 1, 48, 48)  # no profile takes 48x48
    be.close()
    assert not live() and not be._owned


def test_an_engine_built_with_slots_by_an_earlier_hanrt_runs_on_the_first_copy(make_backend, fx, live):
    be = make_backend([P32, P32, P16, P16], slots=2)
    assert _profiles(be.make_slots(2, 2, 32, 32)) == [0, 0] and _profiles(be.make_slots(3, 4, 16, 16)) == [2, 2, 2]
    be.close()
    assert not live()


def test_upscaler_runs_two_slots_on_one_profile(make_backend, fx, live):
    from hanrt.upscaler import Upscaler

    be = make_backend([P32])
    seen: list[int] = []
    submit = be.submit
    be.submit = lambda slot, n: (seen.append(id(slot.handle["ctx"])), submit(slot, n))[-1]
    with Upscaler(be, tile=32, margin=4, batch=2, slots=2) as up:
        img = np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)
        out = up.upscale(img)
        assert np.array_equal(out, np.repeat(np.repeat(img, 4, 0), 4, 1)) and len(up._slots) == 2 and _profiles(up._slots) == [0, 0]
    assert len(set(seen)) == 2 and seen[0] != seen[1]  # batches alternate between the two contexts
    be.close()
    assert not live()


def test_two_upscalers_sharing_a_backend_share_its_profile(make_backend, fx, live, caplog):
    from hanrt.upscaler import Upscaler

    be = make_backend([P32])
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
    assert not live()


def test_make_slots_frees_what_it_made_on_failure(make_backend, fx, live):
    _fail_context_at(fx, 1)  # the first context fails: nothing to run on
    be = make_backend([P32])
    with pytest.raises(BackendError, match="execution context"):
        be.make_slots(2, 2, 32, 32)
    assert not live() and not be._owned
    be.close()
    from trtfakes import PROCEED

    fx.trt._fake.api.fail.clear()
    asked = []  # the second context's profile is refused
    fx.trt._fake.api.fail["IExecutionContext.set_optimization_profile_async"] = \
        lambda *a, **k: (asked.append(1), PROCEED if len(asked) == 1 else False)[1]
    be = make_backend([P32])
    with pytest.raises(BackendError, match=r"refused optimization profile 0 \(min 1x32x32"):
        be.make_slots(2, 2, 32, 32)
    be.close()
    assert not live() and not be._owned


@pytest.mark.parametrize("fail_at,kept", [(2, 1), (3, 2)])
def test_a_later_context_failing_keeps_the_slots_made(make_backend, fx, live, caplog, fail_at, kept):
    """Out of GPU memory for the 2nd or 3rd context (each has its own activation memory): run with fewer."""
    _fail_context_at(fx, fail_at)
    be = make_backend([P32])
    with caplog.at_level(logging.WARNING, logger="hanrt.backends.tensorrt.backend"):
        slots = be.make_slots(3, 2, 32, 32)
    assert len(slots) == kept and [s.index for s in slots] == list(range(kept)) and _profiles(slots) == [0] * kept
    assert len(be._owned) == kept and len(live()) == 6 * kept  # the failed slot's buffers are freed
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1
    assert f"could not create execution context {fail_at} of 3" in msgs[0]
    assert "out of GPU memory" in msgs[0] and "activation memory" in msgs[0]
    assert f"Running with the {kept} slot(s) made" in msgs[0] and f"slots={kept}" in msgs[0]
    fx.trt._fake.api.fail.clear()
    x = np.random.default_rng(2).integers(0, 256, (1, 3, 32, 32)).astype(np.float32)
    assert np.array_equal(be.run(x), _nearest(x))
    be.release_slots(slots)
    be.close()
    assert not live() and not be._owned


def test_run_frees_the_slot_it_replaces(make_backend, fx, live):
    be = make_backend([P32, E.Profile((1, 16, 16), (4, 64, 64), (4, 64, 64))])
    be.run(np.zeros((1, 3, 32, 32), np.float32))
    n = len(live())
    be.run(np.zeros((2, 3, 48, 48), np.float32))
    be.run(np.zeros((1, 3, 16, 16), np.float32))
    assert len(live()) == n and len(be._owned) == 1
    be.close()
    assert not live() and not be._owned


def test_a_refused_tensor_address_is_an_error(make_backend, fx, live):
    """set_tensor_address returns False when TensorRT refuses an address (finding 8)."""
    from trtfakes import PROCEED

    be = make_backend([P32])
    slot = be.make_slots(1, 2, 32, 32)[0]
    fx.trt._fake.api.fail["IExecutionContext.set_tensor_address"] = \
        lambda name, memory: False if name == "output" else PROCEED
    with pytest.raises(BackendError, match="refused the address of tensor 'output'"):
        be.submit(slot, 2)
    assert not slot.pending
    be.close()
    assert not live()


def test_every_entry_point_makes_the_device_current_on_its_thread(make_backend, fx, live):
    """--device 1: the CUDA current device is per host thread, and the pipeline makes slots,
    submits, waits and closes from its own thread (finding 3)."""
    be = make_backend([P32, P32], slots=2, device=1)  # made (and the device set) on the main thread
    done: list = []
    x = np.random.default_rng(3).integers(0, 256, (2, 3, 32, 32)).astype(np.float32)

    def worker():
        slots = be.make_slots(2, 2, 32, 32)
        for s in slots:
            s.input[:] = x
        be.submit(slots[0], 2)
        be.submit(slots[1], 1)
        done.append(np.array(be.wait(slots[0])))
        done.append(np.array(be.wait(slots[1])))
        be.release_slots(slots)
        done.append(np.array(be.run(x[:1])))
        be.close()

    n0 = len(fx.sim.calls)
    t = threading.Thread(target=worker, name="pipeline")
    t.start()
    t.join()
    assert len(done) == 3 and not live()
    assert np.array_equal(done[0], _nearest(x)) and np.array_equal(done[1], _nearest(x[:1]))
    assert np.array_equal(done[2], _nearest(x[:1]))
    devices = {d for th, fn, d in fx.sim.calls[n0:] if th == "pipeline" and fn != "cudaSetDevice"}
    assert devices == {1}, f"CUDA calls on device {sorted(devices)}, not 1"

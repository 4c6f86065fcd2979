"""hanrt.backends.tensorrt.build: the calls into ``tensorrt``, driven through a stand-in module.

No machine here has TensorRT. ``_FakeTrt`` below models the parts of the TensorRT 10.x/11.x Python
API that build_plan and load_engine use (names and return conventions as documented: ``-1`` from
``add_optimization_profile`` on failure, ``False`` from ``set_timing_cache``, ...); the conformance
suite checks the same calls against the real bindings' signatures.
"""

from __future__ import annotations

import logging
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from hanrt.backends import tensorrt as E
from hanrt.backends.tensorrt import build as B
from hanrt.backends.tensorrt import cuda as _cuda
from hanrt.errors import BackendError

from _trt_common import INFO, ORIN, opts


class _Stop(Exception):
    pass


# --- a stand-in tensorrt module --------------------------------------------------------------

class _Memory(bytes):
    """IHostMemory: a buffer (``memoryview`` works on it)."""


class _TimingCache:
    """ITimingCache: entries tagged with the TensorRT version and GPU it was made for."""

    def __init__(self, tag: str, entries=()):
        self.tag, self.entries = tag, set(entries)

    def serialize(self):
        return _Memory(("TC|" + self.tag + "|" + ",".join(sorted(self.entries))).encode())

    def combine(self, other, ignore_mismatch):
        if other.tag != self.tag and not ignore_mismatch:
            return False
        self.entries |= other.entries
        return True


class _Tensor:
    def __init__(self, name, dtype, shape):
        self.name, self.dtype, self.shape = name, dtype, shape


class _Network:
    def __init__(self, trt, flags):
        self.flags = flags
        self.inputs = [_Tensor("input", trt.DataType.FLOAT, (-1, 3, -1, -1))]
        self.outputs = [_Tensor("output", trt.DataType.FLOAT, (-1, 3, -1, -1))]

    num_inputs = property(lambda self: len(self.inputs))
    num_outputs = property(lambda self: len(self.outputs))

    def get_input(self, i):
        return self.inputs[i]

    def get_output(self, i):
        return self.outputs[i]


class _Profile:
    def set_shape(self, name, lo, opt, hi):
        self.shape = (name, lo, opt, hi)


class _Config:
    def __init__(self, trt):
        self.trt, self.profiles, self.cache, self.set_calls = trt, [], None, []

    def set_memory_pool_limit(self, pool, size):
        self.workspace = size

    def add_optimization_profile(self, p):
        if self.trt.refuse_profiles:
            return -1
        self.profiles.append(p.shape)
        return len(self.profiles) - 1

    def create_timing_cache(self, blob):
        blob = bytes(blob)
        if not blob:
            return _TimingCache(self.trt.tag)
        _, tag, entries = blob.decode().split("|")
        return _TimingCache(tag, [e for e in entries.split(",") if e])

    def set_timing_cache(self, cache, ignore_mismatch):
        self.set_calls.append(ignore_mismatch)
        if cache.tag != self.trt.tag and not ignore_mismatch:
            return False
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache


class _FakeTrt(types.SimpleNamespace):
    """The ``tensorrt`` module as build_plan and load_engine see it; records what they did."""

    def __init__(self, version="10.3.0", *, gpu="Orin", strongly_typed=1):
        trt = self

        class ILogger:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

            def __init__(self):
                pass

        class Builder:
            def __init__(self, logger):
                trt.loggers.append(("Builder", logger))
                trt.alive.add("builder")

            def __del__(self):
                trt.alive.discard("builder")

            def create_network(self, flags):
                trt.network = _Network(trt, flags)
                return trt.network

            def create_builder_config(self):
                trt.config = _Config(trt)
                return trt.config

            def create_optimization_profile(self):
                return _Profile()

            def build_serialized_network(self, network, config):
                trt.during_build()
                if config.cache is not None:
                    config.cache.entries |= {f"tactic{i}" for i in range(len(config.profiles))}
                return _Memory(b"PLAN:" + repr(config.profiles).encode())

        class OnnxParser:
            def __init__(self, network, logger):
                trt.loggers.append(("OnnxParser", logger))

            def parse_from_file(self, path):
                return True

        class Runtime:
            def __init__(self, logger):
                trt.loggers.append(("Runtime", logger))
                if "builder" in trt.alive:
                    trt.runtime_while_building = True

            def deserialize_cuda_engine(self, data):
                return types.SimpleNamespace(plan=bytes(data))

        flag_ns = types.SimpleNamespace(STRONGLY_TYPED=strongly_typed)
        super().__init__(
            __version__=version, ILogger=ILogger, Builder=Builder, OnnxParser=OnnxParser, Runtime=Runtime,
            NetworkDefinitionCreationFlag=flag_ns, MemoryPoolType=types.SimpleNamespace(WORKSPACE=0),
            DataType=types.SimpleNamespace(FLOAT="FLOAT", HALF="HALF", UINT8="UINT8"),
            TensorIOMode=types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT"),
        )
        self.tag = f"{version}/{gpu}"
        self.loggers: list = []
        self.alive: set = set()
        self.refuse_profiles = False
        self.runtime_while_building = False
        self.during_build = lambda: None

    @staticmethod
    def nptype(dtype):
        return {"FLOAT": np.float32, "HALF": np.float16, "UINT8": np.uint8}[dtype]


def _fake_cudart(calls=None):
    calls = [] if calls is None else calls
    return types.SimpleNamespace(cudaError_t=types.SimpleNamespace(cudaSuccess=0),
                                 cudaSetDevice=lambda d: (calls.append(d), (0,))[1],
                                 cudaGetDevice=lambda: (0, 0))


@pytest.fixture
def fake(monkeypatch):
    t = _FakeTrt()
    monkeypatch.setattr(B, "trt", lambda: t)
    monkeypatch.setattr(B, "_LOGGER", None, raising=False)
    monkeypatch.setattr(B, "running_target", lambda device=0: ORIN)
    monkeypatch.setattr(_cuda, "_CUDART", _fake_cudart())
    return t


# --- the device a build runs on (hanrt build --device N) -----------------------------------------

def test_build_plan_makes_the_device_current_first(monkeypatch, fake, tmp_path):
    calls: list = []
    monkeypatch.setattr(_cuda, "_CUDART", _fake_cudart(calls))

    def builder(logger):  # the first TensorRT object: the device must already be current
        calls.append("Builder")
        raise _Stop

    monkeypatch.setattr(fake, "Builder", builder)
    with pytest.raises(_Stop):
        B.build_plan(tmp_path / "x.onnx", INFO, opts(), device=1)
    assert calls == [1, "Builder"]
    calls.clear()
    with pytest.raises(_Stop):
        B.build_plan(tmp_path / "x.onnx", INFO, opts())  # None: leave the current device
    assert calls == ["Builder"]


def test_build_plan_adds_each_profile_once(fake, tmp_path):
    o = E.BuildOptions(profiles=tuple(E.profiles_from_tiles([(96, 96), (64, 64)], 4)))
    built = B.build_plan(tmp_path / "x.onnx", INFO, o)
    want = [("input", *(p.input_shapes(INFO)[k] for k in ("min", "opt", "max"))) for p in o.profiles]
    assert fake.config.profiles == want and built.data == b"PLAN:" + repr(want).encode()


def test_a_refused_optimization_profile_is_an_error(fake, tmp_path):
    """add_optimization_profile returns -1 when TensorRT refuses a profile (finding 8)."""
    fake.refuse_profiles = True
    with pytest.raises(BackendError, match=r"refused optimization profile 1x96x96"):
        B.build_plan(tmp_path / "x.onnx", INFO, opts((96, 96), batch=1))


def test_build_plan_reads_io_from_the_network_and_never_deserializes(fake, tmp_path):
    """No engine is deserialized at build time (finding 8: twice the peak memory on an 8 GB Jetson
    while the Builder is alive); the sidecar's I/O comes from the parsed network."""
    built = B.build_plan(tmp_path / "x.onnx", INFO, opts())
    assert not any(who == "Runtime" for who, _ in fake.loggers) and not fake.runtime_while_building
    assert built.io == ({"name": "input", "mode": "input", "dtype": "float32", "layout": "NCHW",
                         "shape": [-1, 3, -1, -1]},
                        {"name": "output", "mode": "output", "dtype": "float32", "layout": "NCHW",
                         "shape": [-1, 3, -1, -1]})


# --- one logger (finding 5) ------------------------------------------------------------------

def test_one_logger_for_every_builder_parser_and_runtime(fake, tmp_path):
    """TensorRT keeps one process-wide logger; every Builder, parser and Runtime gets the same one."""
    B.build_plan(tmp_path / "x.onnx", INFO, opts())
    B.load_engine(b"PLAN")
    results: list = []
    t = threading.Thread(target=lambda: results.append(B.load_engine(b"PLAN")))
    t.start()
    t.join()
    assert [who for who, _ in fake.loggers] == ["Builder", "OnnxParser", "Runtime", "Runtime"]
    assert len({id(lg) for _, lg in fake.loggers}) == 1 and isinstance(fake.loggers[0][1], fake.ILogger)


def test_the_logger_forwards_to_logging(fake, caplog):
    lg = B.logger()
    with caplog.at_level(logging.DEBUG, logger=B.__name__):
        lg.log(fake.ILogger.ERROR, "bad thing")
        lg.log(fake.ILogger.INFO, "detail")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "TensorRT: bad thing"), (logging.DEBUG, "TensorRT: detail")]


# --- network flags (finding 8) -----------------------------------------------------------------

def test_network_flags_for_tensorrt_10_and_11():
    """10.x: STRONGLY_TYPED (value 1) must be asked for. 11.x: the flag is present but deprecated
    (value 0) and strong typing is always on, so no flag is passed."""
    v10 = _FakeTrt("10.3.0", strongly_typed=1)
    v11 = _FakeTrt("11.4.0.106", strongly_typed=0)
    assert B._network_flags(v10) == 1 << 1
    assert B._network_flags(v11) == 0


# --- the timing cache (finding 6) ------------------------------------------------------------

def test_timing_cache_file_is_keyed_by_tensorrt_gpu_and_compute_capability(tmp_path):
    base = tmp_path / "timing.cache"
    assert E.timing_cache_file(base, ORIN) == tmp_path / "timing-10.3.0-Orin-sm87.cache"
    h100 = E.Target("10.7.0", "NVIDIA H100 80GB HBM3", (9, 0))
    assert E.timing_cache_file(base, h100) == tmp_path / "timing-10.7.0-NVIDIA_H100_80GB_HBM3-sm90.cache"
    assert E.timing_cache_file(tmp_path / "t", ORIN).name == "t-10.3.0-Orin-sm87"


def test_timing_cache_is_loaded_strictly_and_written_to_the_keyed_file(monkeypatch, fake, tmp_path):
    o = opts(timing_cache=str(tmp_path / "timing.cache"))
    B.build_plan(tmp_path / "x.onnx", INFO, o)
    keyed = tmp_path / "timing-10.3.0-Orin-sm87.cache"
    assert fake.config.set_calls == [False]  # strict: never ignore_mismatch=True
    assert not (tmp_path / "timing.cache").exists() and keyed.read_bytes() == b"TC|10.3.0/Orin|tactic0"
    fake2 = _FakeTrt()
    monkeypatch.setattr(B, "trt", lambda: fake2)
    B.build_plan(tmp_path / "x.onnx", INFO, opts((64, 64), (96, 96), timing_cache=str(tmp_path / "timing.cache")))
    assert fake2.config.set_calls == [False] and keyed.read_bytes() == b"TC|10.3.0/Orin|tactic0,tactic1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["timing-10.3.0-Orin-sm87.cache",
                                                         "timing-10.3.0-Orin-sm87.cache.lock"]


def test_a_mismatched_timing_cache_is_replaced_with_a_warning(fake, tmp_path, caplog):
    keyed = tmp_path / "timing-10.3.0-Orin-sm87.cache"
    keyed.write_bytes(b"TC|10.2.0/Orin|old")  # e.g. written by another TensorRT under the same name
    with caplog.at_level(logging.WARNING, logger=B.__name__):
        B.build_plan(tmp_path / "x.onnx", INFO, opts(timing_cache=str(tmp_path / "timing.cache")))
    assert fake.config.set_calls == [False, False]  # the file's cache refused, then a fresh one set
    assert "does not match" in caplog.text and str(keyed) in caplog.text
    assert keyed.read_bytes() == b"TC|10.3.0/Orin|tactic0"


def test_timing_cache_written_meanwhile_by_another_build_is_merged(fake, tmp_path):
    keyed = tmp_path / "timing-10.3.0-Orin-sm87.cache"
    keyed.write_bytes(b"TC|10.3.0/Orin|first")
    # another process finishes its build while ours runs, and writes the file
    fake.during_build = lambda: keyed.write_bytes(b"TC|10.3.0/Orin|first,other")
    B.build_plan(tmp_path / "x.onnx", INFO, opts(timing_cache=str(tmp_path / "timing.cache")))
    assert keyed.read_bytes() == b"TC|10.3.0/Orin|first,other,tactic0"


# --- the CLI --------------------------------------------------------------------------------

def test_cli_build_passes_the_device_and_target_to_the_builder(monkeypatch, tmp_path, tiny_onnx, capsys):
    from hanrt.cli import main

    seen: dict[str, object] = {}

    def build_plan(onnx_path, info, options, *, progress=None, device=None, target=None):
        seen.update(device=device, target=target, profiles=len(options.profiles))
        return E.BuiltPlan(b"PLAN", ({"name": "input", "mode": "input"},))

    monkeypatch.setattr(B, "running_target", lambda device=0: seen.setdefault("asked", device) and ORIN)
    monkeypatch.setattr(B, "build_plan", build_plan)
    rc = main(["build", str(tiny_onnx), "--tile", "32x32", "--device", "1", "--cache-dir", str(tmp_path)])
    assert rc == 0 and seen == {"asked": 1, "device": 1, "target": ORIN, "profiles": 1}
    out = capsys.readouterr().out
    assert "slot" not in out and "1x32x32" in out

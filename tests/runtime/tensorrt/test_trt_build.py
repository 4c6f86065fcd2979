"""hanrt.backends.tensorrt.build: the calls into ``tensorrt``, with stand-ins (no TensorRT here)."""

from __future__ import annotations

import pytest

from hanrt.backends import tensorrt as E

from _trt_common import INFO, ORIN, opts

# --- the device a build runs on (hanrt build --device N) -----------------------------------------

class _Stop(Exception):
    pass


def _fake_cudart(calls):
    import types

    return types.SimpleNamespace(cudaError_t=types.SimpleNamespace(cudaSuccess=0),
                                 cudaSetDevice=lambda d: (calls.append(d), (0,))[1])


def test_build_plan_makes_the_device_current_first(monkeypatch, tmp_path):
    import types

    from hanrt.backends.tensorrt import build as _tensorrt
    from hanrt.backends.tensorrt import cuda as _cuda

    calls: list[int] = []

    def builder(logger):  # the first TensorRT object: the device must already be current
        calls.append("Builder")
        raise _Stop

    monkeypatch.setattr(_tensorrt, "trt", lambda: types.SimpleNamespace(Builder=builder, ILogger=object))
    monkeypatch.setattr(_tensorrt._Logger, "make", staticmethod(lambda: None))
    monkeypatch.setattr(_cuda, "_CUDART", _fake_cudart(calls))
    with pytest.raises(_Stop):
        _tensorrt.build_plan(tmp_path / "x.onnx", INFO, opts(), device=1)
    assert calls == [1, "Builder"]
    calls.clear()
    with pytest.raises(_Stop):
        _tensorrt.build_plan(tmp_path / "x.onnx", INFO, opts())  # None: leave the current device
    assert calls == ["Builder"]


def test_build_plan_adds_every_profile_of_the_options(monkeypatch, tmp_path):
    """Replication at the options level is enough: build_plan adds each profile, duplicates too."""
    import types

    from hanrt.backends.tensorrt import build as _tensorrt

    added: list[tuple] = []

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shape = (name, lo, opt, hi)

    class Config:
        def set_memory_pool_limit(self, pool, size):
            pass

        def add_optimization_profile(self, p):
            added.append(p.shape)
            return len(added) - 1

        def create_timing_cache(self, blob):
            return None

        def set_timing_cache(self, cache, ignore_mismatch):
            pass

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return types.SimpleNamespace(get_input=lambda i: types.SimpleNamespace(name="input"))

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            raise _Stop

    fake = types.SimpleNamespace(
        Builder=Builder, MemoryPoolType=types.SimpleNamespace(WORKSPACE=0),
        OnnxParser=lambda network, logger: types.SimpleNamespace(parse_from_file=lambda path: True))
    monkeypatch.setattr(_tensorrt, "trt", lambda: fake)
    monkeypatch.setattr(_tensorrt._Logger, "make", staticmethod(lambda: None))
    o = opts((96, 96), (64, 64), slots=2)
    with pytest.raises(_Stop):
        _tensorrt.build_plan(tmp_path / "x.onnx", INFO, o)
    want = [("input", *(p.input_shapes(INFO)[k] for k in ("min", "opt", "max"))) for p in o.profiles]
    assert added == want and len(added) == 4 and added[0] == added[1] != added[2] == added[3]


def test_cli_build_passes_the_device_to_the_builder(monkeypatch, tmp_path, tiny_onnx, capsys):
    from hanrt.backends.tensorrt import build as _tensorrt
    from hanrt.cli import main

    seen: dict[str, object] = {}

    def build_plan(onnx_path, info, options, *, progress=None, device=None):
        seen["device"] = device
        return E.BuiltPlan(b"PLAN", ({"name": "input", "mode": "input"},))

    monkeypatch.setattr(_tensorrt, "running_target", lambda device=0: seen.setdefault("target", device) and ORIN)
    monkeypatch.setattr(_tensorrt, "build_plan", build_plan)
    rc = main(["build", str(tiny_onnx), "--tile", "32x32", "--device", "1", "--cache-dir", str(tmp_path)])
    assert rc == 0 and seen == {"target": 1, "device": 1}

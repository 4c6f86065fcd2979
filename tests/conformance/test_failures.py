"""Failures the real TensorRT and CUDA can return, injected into the fakes: hanrt must turn each into
a clear hanrt error (or a warning) and leak nothing. In process, on the specs of TensorRT 11.4 /
10.3 and cuda-bindings 12.9 (the real modules' behaviour per call is covered by test_conformance)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from trtfakes import PROCEED


def test_legacy_cuda_python_without_a_driver_is_a_backend_error(real_modules, tmp_path, capsys):
    """cuda-python <= 12.2 (module cuda.cudart) raises RuntimeError where newer ones return error tuples."""
    from conformance.scenario import make_onnx
    from trtfakes import install

    from hanrt.cli import main
    from hanrt.errors import BackendError

    onnx = make_onnx(tmp_path / "m.onnx", "float")
    with install("10.3.0", "12.9.10", legacy=True) as fx:
        fx.sim.driver = False
        rc = main(["build", str(onnx), "--tile", "16x16", "--cache-dir", str(tmp_path / "c")])
    assert rc == BackendError.exit_code
    assert "libcuda" in capsys.readouterr().err


def test_legacy_cuda_python_with_a_driver_works(real_modules, tmp_path):
    from conformance.scenario import Runner
    from trtfakes import install

    with install("10.3.0", "12.9.10", legacy=True) as fx:
        r = Runner(fx, tmp_path)
        r.step_build_and_cache()
        r.step_slots()
        assert fx.sim.live() == []


def test_a_failing_device_pointer_frees_the_pinned_memory(runner):
    """cudaHostGetDevicePointer failing after cudaHostAlloc: the pinned buffer must not leak."""
    from hanrt.backends import open_backend
    from hanrt.errors import BackendError

    r = runner()
    r.step_build_and_cache()
    r.fx.sim.fail["cudaHostGetDevicePointer"] = "cudaErrorInvalidValue"
    b = open_backend(r.plan, "trt", device_id=0, slots=1)
    be = type(b)(str(r.plan), config=dataclasses.replace(b.config, memory="mapped"))
    b.close()
    with pytest.raises(BackendError, match="cudaHostGetDevicePointer"):
        be.make_slots(1, 1, 16, 16)
    be.close()
    assert r.fx.sim.live() == []


def _second_call_fails(value):
    calls = []
    return lambda *a, **k: (calls.append(1), value if len(calls) == 2 else PROCEED)[1]


@pytest.mark.parametrize("member,inject", [
    ("IBuilderConfig.add_optimization_profile", _second_call_fails(-1)),  # one of two profiles refused
    ("IBuilderConfig.set_timing_cache", lambda *a, **k: False),
])
def test_a_refused_build_setting_is_not_ignored(runner, caplog, capsys, member, inject):
    """TensorRT reports these failures only by the return value: hanrt must check it and say which
    (a refused profile fails the build naming it; a refused timing cache at least warns)."""
    from hanrt.cli import main

    r = runner("10.3.0")
    r.fx.trt._fake.api.fail[member] = inject
    with caplog.at_level(logging.WARNING, logger="hanrt"):
        rc = main(["build", str(r.onnx["float"]), "--tile", "16x16", "--tile", "24x24", "--cache-dir", str(r.work / "e"),
                   "--timing-cache", str(r.work / "t.cache")])
    said = "\n".join(ln for ln in capsys.readouterr().err.splitlines() if "TensorRT: " not in ln) + "\n".join(
        rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING and "TensorRT: " not in rec.getMessage())
    if member.endswith("add_optimization_profile"):
        assert rc != 0 and "profile" in said, (rc, said)
    else:
        assert "timing cache" in said.lower(), (rc, said)


def test_a_refused_tensor_address_is_a_backend_error(runner):
    from hanrt.backends import open_backend
    from hanrt.errors import BackendError

    r = runner()
    r.step_build_and_cache()
    r.fx.trt._fake.api.fail["IExecutionContext.set_tensor_address"] = lambda *a, **k: False
    b = open_backend(r.plan, "trt", device_id=0, slots=1)
    try:
        with pytest.raises(BackendError, match="address"):
            b.run(np.zeros((1, 3, 16, 16), np.float32))
    finally:
        b.close()
    assert r.fx.sim.live() == []


def test_a_failing_second_context_keeps_the_first(runner):
    """Out of GPU memory for the second context: hanrt runs on the slots it made, leaks nothing."""
    from hanrt import Upscaler
    from hanrt.backends import open_backend

    r = runner()
    r.step_build_and_cache()
    made = []
    r.fx.trt._fake.api.fail["ICudaEngine.create_execution_context"] = \
        lambda *a, **k: (made.append(1), None if len(made) == 2 else PROCEED)[1]
    b = open_backend(r.plan, "trt", device_id=0, slots=2)
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    with Upscaler(b, tile=16, margin=2, batch=2, slots=2) as up:
        out = up.upscale(img)
        assert len(up._slots) == 1
    b.close()
    assert np.array_equal(out, np.repeat(np.repeat(img, 4, 0), 4, 1))
    assert r.fx.sim.live() == []

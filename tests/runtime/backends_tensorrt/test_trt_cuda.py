"""hanrt.backends.tensorrt.cuda: error handling and ownership, on a ``cuda.bindings.runtime`` fake
generated from the real cuda-bindings (``trt_fakes``: real enums and signatures, two simulated GPUs
on host memory, failures injected as the real calls return them)."""

from __future__ import annotations

import numpy as np
import pytest

from hanrt.backends.tensorrt import cuda as _cuda
from hanrt.errors import BackendError, MissingDependencyError


@pytest.mark.parametrize("cuda_version", ["12.9.10", "13.5.0"])
def test_cuda_check_names_errors(trt_fakes, cuda_version):
    rt = trt_fakes(cuda_version=cuda_version).cudart
    e = rt.cudaError_t
    assert _cuda.check((e.cudaSuccess,), "cudaFree", rt) is None
    assert _cuda.check((e.cudaSuccess, 1234), "cudaMalloc", rt) == 1234
    assert _cuda.check((e.cudaSuccess, 1, 2), "x", rt) == (1, 2)
    with pytest.raises(BackendError, match=r"cudaMalloc\(4096 bytes\) failed: cudaErrorMemoryAllocation \(2\)"):
        _cuda.check((e.cudaErrorMemoryAllocation, None), "cudaMalloc(4096 bytes)", rt)


def test_cuda_python_missing_is_a_clear_error(monkeypatch):
    try:
        import cuda.bindings.runtime  # noqa: F401
        pytest.skip("cuda-python is installed")
    except ImportError:
        pass
    monkeypatch.setattr(_cuda, "_CUDART", None)
    with pytest.raises(MissingDependencyError, match=r"hanrt\[trt-cu12\].*hanrt\[trt-cu13\].*JetPack 6"):
        _cuda.cudart()


def test_legacy_cuda_python_runtime_error_becomes_a_backend_error(trt_fakes):
    """cuda.cudart of cuda-python 12.2 and older raises RuntimeError (e.g. no driver) instead of
    returning an error tuple: a BackendError naming the call, not a traceback (finding 8)."""
    fx = trt_fakes(legacy=True)
    fx.sim.driver = False
    with pytest.raises(BackendError, match=r"CUDA call cudaMalloc\(4096 bytes\) failed: .*libcuda.* "
                                           r"\(is the NVIDIA driver installed"):
        _cuda.DeviceBuffer(4096)


@pytest.mark.parametrize("cuda_version", ["12.9.10", "13.5.0"])
def test_error_tuples_of_the_insufficient_driver_kind_name_the_call(trt_fakes, cuda_version):
    """cuda-bindings 12.x/13.x without a (new enough) driver return error tuples from every call."""
    fx = trt_fakes(cuda_version=cuda_version)
    fx.sim.driver = False
    with pytest.raises(BackendError, match=r"cudaSetDevice\(1\) failed: cudaErrorInsufficientDriver \(35\)"):
        _cuda.set_device(1)


def test_pinned_memory_is_freed_when_the_device_pointer_fails(trt_fakes):
    """cudaHostAlloc succeeded, cudaHostGetDevicePointer failed: the pinned memory must not leak (finding 8)."""
    fx = trt_fakes()
    fx.sim.fail["cudaHostGetDevicePointer"] = "cudaErrorMemoryAllocation"
    with pytest.raises(BackendError, match="cudaHostGetDevicePointer failed: cudaErrorMemoryAllocation"):
        _cuda.HostBuffer((4, 4), np.float32, mapped=True)
    assert fx.sim.live() == []
    # the copy mode never asks for a device pointer; close() frees once
    hb = _cuda.HostBuffer((4, 4), np.float32)
    assert hb.array.shape == (4, 4) and hb.device_ptr == 0 and len(fx.sim.live()) == 1
    hb.array[:] = 7  # the pinned memory is the simulator's, written through hanrt's numpy view
    assert fx.sim.allocs[hb.ptr].buf.view(np.float32).tolist() == [7.0] * 16
    hb.close()
    hb.close()
    assert fx.sim.live() == []

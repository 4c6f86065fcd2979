"""hanrt.backends.tensorrt.cuda: error handling and ownership, with a stand-in for cuda-python's
runtime module (no CUDA here; the conformance suite checks the calls against the real bindings)."""

from __future__ import annotations

import types

import numpy as np
import pytest

from hanrt.backends.tensorrt import cuda as _cuda
from hanrt.errors import BackendError, MissingDependencyError


def _fake_rt(codes=None, **calls):
    """cuda.bindings.runtime's error enum, cudaGetErrorName and the given calls (no CUDA here)."""
    codes = codes or {0: "cudaSuccess", 2: "cudaErrorMemoryAllocation", 35: "cudaErrorInsufficientDriver"}
    return types.SimpleNamespace(cudaError_t=types.SimpleNamespace(cudaSuccess=0),
                                 cudaGetErrorName=lambda e: (0, codes[int(e)].encode()),
                                 cudaHostAllocDefault=0, cudaHostAllocMapped=2, **calls)


def test_cuda_check_names_errors():
    rt = _fake_rt()
    assert _cuda.check((0,), "cudaFree", rt) is None
    assert _cuda.check((0, 1234), "cudaMalloc", rt) == 1234
    assert _cuda.check((0, 1, 2), "x", rt) == (1, 2)
    with pytest.raises(BackendError, match=r"cudaMalloc\(4096 bytes\) failed: cudaErrorMemoryAllocation \(2\)"):
        _cuda.check((2, 0), "cudaMalloc(4096 bytes)", rt)


def test_cuda_python_missing_is_a_clear_error(monkeypatch):
    try:
        import cuda.bindings.runtime  # noqa: F401
        pytest.skip("cuda-python is installed")
    except ImportError:
        pass
    monkeypatch.setattr(_cuda, "_CUDART", None)
    with pytest.raises(MissingDependencyError, match=r"hanrt\[trt-cu12\].*hanrt\[trt-cu13\].*JetPack 6"):
        _cuda.cudart()


def test_legacy_cuda_python_runtime_error_becomes_a_backend_error(monkeypatch):
    """cuda.cudart of cuda-python 12.2 and older raises RuntimeError (e.g. no driver) instead of
    returning an error tuple: a BackendError naming the call, not a traceback (finding 8)."""
    def malloc(n):
        raise RuntimeError('Function "cuMemAlloc_v2" not found')

    monkeypatch.setattr(_cuda, "_CUDART", _fake_rt(cudaMalloc=malloc))
    with pytest.raises(BackendError, match=r"CUDA call cudaMalloc\(4096 bytes\) failed: Function .cuMemAlloc_v2. "
                                           r"not found \(is the NVIDIA driver installed"):
        _cuda.DeviceBuffer(4096)


def test_error_tuples_of_the_insufficient_driver_kind_name_the_call(monkeypatch):
    """cuda-bindings 12.x/13.x without a (new enough) driver return error tuples from every call."""
    monkeypatch.setattr(_cuda, "_CUDART", _fake_rt(cudaSetDevice=lambda d: (35,)))
    with pytest.raises(BackendError, match=r"cudaSetDevice\(1\) failed: cudaErrorInsufficientDriver \(35\)"):
        _cuda.set_device(1)


def test_pinned_memory_is_freed_when_the_device_pointer_fails(monkeypatch):
    """cudaHostAlloc succeeded, cudaHostGetDevicePointer failed: the pinned memory must not leak (finding 8)."""
    backing = np.zeros(64, np.uint8)
    freed: list[int] = []
    rt = _fake_rt(cudaHostAlloc=lambda n, flags: (0, backing.ctypes.data),
                  cudaHostGetDevicePointer=lambda ptr, flags: (2, 0),
                  cudaFreeHost=lambda ptr: (freed.append(ptr), (0,))[1])
    monkeypatch.setattr(_cuda, "_CUDART", rt)
    with pytest.raises(BackendError, match="cudaHostGetDevicePointer failed: cudaErrorMemoryAllocation"):
        _cuda.HostBuffer((4, 4), np.float32, mapped=True)
    assert freed == [backing.ctypes.data]
    # the copy mode never asks for a device pointer; close() frees once
    hb = _cuda.HostBuffer((4, 4), np.float32)
    assert hb.array.shape == (4, 4) and hb.device_ptr == 0
    hb.close()
    hb.close()
    assert freed == [backing.ctypes.data] * 2

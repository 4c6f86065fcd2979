"""A thin wrapper over cuda-python's runtime API: pinned and device buffers, streams, events.

cuda-python returns ``(err, *values)`` from every call; :func:`check` turns a non-success code
into :class:`~hanrt.errors.BackendError` naming the CUDA error by its *name*
(``cudaErrorMemoryAllocation``), as ``cudaGetErrorName`` gives it, and the call that failed.

Ownership: every object here owns its allocation and frees it in ``close()`` (idempotent);
host buffers expose numpy views that are valid until ``close()``.

**Not run on a GPU yet** (no machine available to this project has one with TensorRT); written
against the documented ``cuda.bindings.runtime`` API (cuda-python >= 12.6; older releases name
the module ``cuda.cudart``, also accepted).
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

import numpy as np

from ...errors import BackendError, MissingDependencyError

log = logging.getLogger(__name__)

__all__ = ["cudart", "check", "HostBuffer", "DeviceBuffer", "Stream", "Event", "device_properties",
           "is_integrated"]

_CUDART: Any = None


def cudart() -> Any:
    """The ``cuda.bindings.runtime`` module (or legacy ``cuda.cudart``); MissingDependencyError if absent."""
    global _CUDART
    if _CUDART is None:
        try:
            from cuda.bindings import runtime as rt  # cuda-python >= 12.6
        except ImportError:
            try:
                from cuda import cudart as rt  # older cuda-python
            except ImportError as exc:
                raise MissingDependencyError(
                    "the TensorRT backend needs cuda-python: pip install 'hanrt[trt]' "
                    "(on Jetson: pip install cuda-python matching the JetPack CUDA version).") from exc
        _CUDART = rt
    return _CUDART


def error_name(err: Any, rt: Any = None) -> str:
    """``cudaGetErrorName(err)`` as text (falls back to the enum's name or number)."""
    rt = rt or cudart()
    try:
        _, name = rt.cudaGetErrorName(err)
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - naming an error must not raise another
        return getattr(err, "name", str(err))


def check(ret: Any, what: str, rt: Any = None) -> Any:
    """Unpack a cuda-python result ``(err, *values)``; raise BackendError on failure.

    Returns ``None`` (no values), the single value, or a tuple of values.
    """
    rt = rt or cudart()
    if isinstance(ret, tuple):
        err, vals = ret[0], ret[1:]
    else:
        err, vals = ret, ()
    if int(err) != int(rt.cudaError_t.cudaSuccess):
        raise BackendError(f"CUDA call {what} failed: {error_name(err, rt)} ({int(err)}).")
    if not vals:
        return None
    return vals[0] if len(vals) == 1 else vals


def device_properties(device: int = 0) -> tuple[str, tuple[int, int], bool]:
    """(GPU name, compute capability (major, minor), integrated) of CUDA device ``device``."""
    rt = cudart()
    props = check(rt.cudaGetDeviceProperties(device), f"cudaGetDeviceProperties({device})", rt)
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return name.split("\x00")[0].strip(), (int(props.major), int(props.minor)), bool(props.integrated)


def is_integrated(device: int = 0) -> bool:
    """True on GPUs that share memory with the CPU (Jetson): zero-copy mapped memory pays off there."""
    return device_properties(device)[2]


class HostBuffer:
    """Page-locked host memory of ``shape`` x ``dtype`` (C order), viewed as ``self.array``.

    ``mapped=True`` allocates with ``cudaHostAllocMapped`` and exposes ``device_ptr`` (zero-copy:
    the GPU reads/writes it directly; right on Jetson's integrated GPU, slow over PCIe).
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | str, *, mapped: bool = False) -> None:
        rt = cudart()
        self._rt = rt
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        self.nbytes = max(1, int(np.prod(self.shape)) * self.dtype.itemsize)
        flags = rt.cudaHostAllocMapped if mapped else rt.cudaHostAllocDefault
        self.ptr = int(check(rt.cudaHostAlloc(self.nbytes, flags), f"cudaHostAlloc({self.nbytes} bytes)", rt))
        self.device_ptr = int(check(rt.cudaHostGetDevicePointer(self.ptr, 0), "cudaHostGetDevicePointer", rt)) \
            if mapped else 0
        raw = (ctypes.c_uint8 * self.nbytes).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=np.uint8, count=self.nbytes)[: int(np.prod(self.shape)) * self.dtype.itemsize] \
            .view(self.dtype).reshape(self.shape)

    def close(self) -> None:
        if self.ptr:
            self.array = np.empty(0, self.dtype)
            check(self._rt.cudaFreeHost(self.ptr), "cudaFreeHost", self._rt)
            self.ptr = 0


class DeviceBuffer:
    """``nbytes`` of device memory (``cudaMalloc``); ``ptr`` is the device address."""

    def __init__(self, nbytes: int) -> None:
        rt = cudart()
        self._rt = rt
        self.nbytes = max(1, int(nbytes))
        self.ptr = int(check(rt.cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes} bytes)", rt))

    def close(self) -> None:
        if self.ptr:
            check(self._rt.cudaFree(self.ptr), "cudaFree", self._rt)
            self.ptr = 0


class Stream:
    """A non-blocking CUDA stream with async host<->device copies."""

    def __init__(self) -> None:
        rt = cudart()
        self._rt = rt
        self.handle = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags", rt)

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def h2d(self, dst: int, src: int, nbytes: int) -> None:
        rt = self._rt
        check(rt.cudaMemcpyAsync(dst, src, nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.handle),
              "cudaMemcpyAsync(host to device)", rt)

    def d2h(self, dst: int, src: int, nbytes: int) -> None:
        rt = self._rt
        check(rt.cudaMemcpyAsync(dst, src, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.handle),
              "cudaMemcpyAsync(device to host)", rt)

    def synchronize(self) -> None:
        check(self._rt.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize", self._rt)

    def close(self) -> None:
        if self.handle is not None:
            check(self._rt.cudaStreamDestroy(self.handle), "cudaStreamDestroy", self._rt)
            self.handle = None


class Event:
    """A CUDA event (timing disabled) to mark and wait for a point in a stream."""

    def __init__(self) -> None:
        rt = cudart()
        self._rt = rt
        self.handle = check(rt.cudaEventCreateWithFlags(rt.cudaEventDisableTiming), "cudaEventCreateWithFlags", rt)

    def record(self, stream: Stream) -> None:
        check(self._rt.cudaEventRecord(self.handle, stream.handle), "cudaEventRecord", self._rt)

    def synchronize(self) -> None:
        check(self._rt.cudaEventSynchronize(self.handle), "cudaEventSynchronize", self._rt)

    def close(self) -> None:
        if self.handle is not None:
            check(self._rt.cudaEventDestroy(self.handle), "cudaEventDestroy", self._rt)
            self.handle = None

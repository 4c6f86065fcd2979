"""A thin wrapper over cuda-python's runtime API: pinned and device buffers, streams, events.

cuda-python returns ``(err, *values)`` from every call; :func:`call` makes one and turns a
non-success code (:func:`check`) into :class:`~hanrt.errors.BackendError` naming the CUDA error by
its *name* (``cudaErrorMemoryAllocation``), as ``cudaGetErrorName`` gives it, and the call that
failed. Legacy cuda-python (the ``cuda.cudart`` module of 12.2 and older) raises ``RuntimeError``
from some calls instead (e.g. when the driver cannot be loaded); :func:`call` turns that into a
BackendError naming the call too.

The CUDA current device is per host thread: :func:`set_device` makes a device current on the
calling thread (the TensorRT backend calls it at every entry point).

Ownership: every object here owns its allocation and frees it in ``close()`` (idempotent);
host buffers expose numpy views that are valid until ``close()``.

**Not run on a GPU yet** (no machine available to this project has one with TensorRT); written
against the ``cuda.bindings.runtime`` API (the cuda-bindings package 12.8+ and 13.x, cuda-python
12.6.2.post1; cuda-python 12.6.0 and older have only ``cuda.cudart``, also accepted).
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

import numpy as np

from ...errors import BackendError, MissingDependencyError

log = logging.getLogger(__name__)

__all__ = ["cudart", "check", "call", "set_device", "current_device", "HostBuffer", "DeviceBuffer", "Stream",
           "Event", "device_properties", "is_integrated", "device_pointer"]

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
                    "the TensorRT backend needs cuda-python's cuda.bindings: pip install 'hanrt[trt-cu12]' "
                    "(CUDA 12 driver) or 'hanrt[trt-cu13]' (CUDA 13 driver, R580+); on Jetson with "
                    "JetPack 6: pip install 'cuda-python==12.6.2.post1'.") from exc
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


def call(name: str, *args: Any, what: str | None = None) -> Any:
    """Call ``cudart().<name>(*args)`` and unpack its result with :func:`check`; ``what`` names the
    call in errors (default ``name``). A ``RuntimeError`` raised by legacy cuda-python becomes a
    BackendError naming the call."""
    rt = cudart()
    label = what or name
    try:
        ret = getattr(rt, name)(*args)
    except RuntimeError as exc:
        raise BackendError(f"CUDA call {label} failed: {exc} (is the NVIDIA driver installed and new "
                           f"enough for this cuda-python?).") from exc
    return check(ret, label, rt)


def set_device(device: int) -> None:
    """Make CUDA device ``device`` current on the calling host thread (``cudaSetDevice``)."""
    call("cudaSetDevice", int(device), what=f"cudaSetDevice({int(device)})")


def current_device() -> int:
    """The CUDA device current on the calling host thread (``cudaGetDevice``)."""
    return int(call("cudaGetDevice"))


def device_properties(device: int = 0) -> tuple[str, tuple[int, int], bool]:
    """(GPU name, compute capability (major, minor), integrated) of CUDA device ``device``."""
    props = call("cudaGetDeviceProperties", device, what=f"cudaGetDeviceProperties({device})")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return name.split("\x00")[0].strip(), (int(props.major), int(props.minor)), bool(props.integrated)


def is_integrated(device: int = 0) -> bool:
    """True on GPUs that share memory with the CPU (Jetson): zero-copy mapped memory pays off there."""
    return device_properties(device)[2]


def device_pointer(host_ptr: int) -> int:
    """The device address of mapped pinned host memory (``cudaHostGetDevicePointer``): the one helper
    for the TensorRT slots and the PyTorch stream processor. BackendError names the CUDA error."""
    return int(call("cudaHostGetDevicePointer", host_ptr, 0))


class HostBuffer:
    """Page-locked host memory of ``shape`` x ``dtype`` (C order), viewed as ``self.array``.

    ``mapped=True`` allocates with ``cudaHostAllocMapped`` and exposes ``device_ptr`` (zero-copy:
    the GPU reads/writes it directly; right on Jetson's integrated GPU, slow over PCIe).
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | str, *, mapped: bool = False) -> None:
        rt = cudart()
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        self.nbytes = max(1, int(np.prod(self.shape)) * self.dtype.itemsize)
        flags = rt.cudaHostAllocMapped if mapped else rt.cudaHostAllocDefault
        self.ptr = int(call("cudaHostAlloc", self.nbytes, flags, what=f"cudaHostAlloc({self.nbytes} bytes)"))
        self.device_ptr = 0
        if mapped:
            try:
                self.device_ptr = device_pointer(self.ptr)
            except BaseException:
                self.close()  # the pinned memory would leak otherwise
                raise
        raw = (ctypes.c_uint8 * self.nbytes).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=np.uint8, count=self.nbytes)[: int(np.prod(self.shape)) * self.dtype.itemsize] \
            .view(self.dtype).reshape(self.shape)

    def close(self) -> None:
        if self.ptr:
            self.array = np.empty(0, self.dtype)
            ptr, self.ptr = self.ptr, 0
            call("cudaFreeHost", ptr)


class DeviceBuffer:
    """``nbytes`` of device memory (``cudaMalloc``); ``ptr`` is the device address."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = max(1, int(nbytes))
        self.ptr = int(call("cudaMalloc", self.nbytes, what=f"cudaMalloc({self.nbytes} bytes)"))

    def close(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            call("cudaFree", ptr)


class Stream:
    """A non-blocking CUDA stream with async host<->device copies."""

    def __init__(self) -> None:
        rt = cudart()
        self._kind = rt.cudaMemcpyKind
        self.handle = call("cudaStreamCreateWithFlags", rt.cudaStreamNonBlocking)

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def h2d(self, dst: int, src: int, nbytes: int) -> None:
        call("cudaMemcpyAsync", dst, src, nbytes, self._kind.cudaMemcpyHostToDevice, self.handle,
             what="cudaMemcpyAsync(host to device)")

    def d2h(self, dst: int, src: int, nbytes: int) -> None:
        call("cudaMemcpyAsync", dst, src, nbytes, self._kind.cudaMemcpyDeviceToHost, self.handle,
             what="cudaMemcpyAsync(device to host)")

    def synchronize(self) -> None:
        call("cudaStreamSynchronize", self.handle)

    def close(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            call("cudaStreamDestroy", handle)


class Event:
    """A CUDA event (timing disabled) to mark and wait for a point in a stream."""

    def __init__(self) -> None:
        self.handle = call("cudaEventCreateWithFlags", cudart().cudaEventDisableTiming)

    def record(self, stream: Stream) -> None:
        call("cudaEventRecord", self.handle, stream.handle)

    def synchronize(self) -> None:
        call("cudaEventSynchronize", self.handle)

    def close(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            call("cudaEventDestroy", handle)

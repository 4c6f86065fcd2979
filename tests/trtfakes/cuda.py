"""A fake ``cuda.bindings.runtime``: each call hanrt makes goes to the **real** cuda-bindings
function first when it is importable (its Cython signature checks the arguments; without a driver
it returns ``(cudaErrorInsufficientDriver, ...)`` with the real tuple length), then is simulated:
host memory stands in for device memory, two simulated GPUs, the current device per host thread,
copies and tensor addresses range-checked against live allocations, a leak check at the end.

Without the real module (in-process tests), the version's spec stands in: arity and keywords from
the docstring signature, return tuple lengths from what the real call returned when the spec was
dumped (``probes``).
"""

from __future__ import annotations

import threading
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .spec import LOG, Api, FakeEnumMember, Log, _direct_access

__all__ = ["CudaSim", "make_cudart", "DEVICES"]

#: the simulated GPUs: device 0 a discrete Ampere card, device 1 an integrated Orin (Jetson)
DEVICES = (
    {"name": "NVIDIA Fake A2000", "cc": (8, 6), "integrated": False},
    {"name": "Orin (nvgpu) fake", "cc": (8, 7), "integrated": True},
)

_DEV_BASE = 0x1000_0000_0000  # simulated device addresses: far from any host mapping
_DEV_SPAN = 0x0100_0000_0000


@dataclass
class Alloc:
    kind: str  # "device", "pinned" or "mapped" (the device alias of a mapped pinned allocation)
    addr: int
    size: int
    device: int
    buf: np.ndarray  # uint8 backing store
    host: "Alloc | None" = None  # for "mapped": the pinned allocation it aliases
    alias: "Alloc | None" = None  # for "pinned" + mapped: the device alias
    flags: int = 0


@dataclass
class CudaSim:
    """Simulated CUDA state; every misuse is recorded in ``log.violations``."""

    log: Log = field(default_factory=lambda: LOG)
    devices: tuple = DEVICES
    allocs: dict = field(default_factory=dict)  # addr -> Alloc (device, pinned, mapped)
    streams: dict = field(default_factory=dict)  # handle -> device
    events: dict = field(default_factory=dict)
    calls: list = field(default_factory=list)  # (thread name, function, current device)
    _next: list = field(default_factory=lambda: [0, 0])
    _local: threading.local = field(default_factory=threading.local)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _handles: int = 0x5000
    #: False: no usable driver, every call fails as on a machine without one (the real module's
    #: result in live mode; legacy cuda.cudart raises RuntimeError as cuda-python <= 12.2 did)
    driver: bool = True
    legacy: bool = False
    #: failure injection: function name -> cudaError_t member name it returns instead of simulating
    fail: dict = field(default_factory=dict)
    #: work enqueued on each stream, run only when the host synchronizes (event or stream), a
    #: free or a stream destroy: a result read without waiting is stale, as on a GPU at worst
    queues: dict = field(default_factory=dict)  # stream handle -> [(seq, fn)]
    marks: dict = field(default_factory=dict)  # event handle -> (stream handle, seq)
    _seq: int = 0

    def violation(self, msg: str) -> None:
        self.log.violation(msg)

    # devices -----------------------------------------------------------------------------------
    def current_device(self) -> int:
        return getattr(self._local, "device", 0)

    def set_device(self, d: int) -> bool:
        if not 0 <= d < len(self.devices):
            return False
        self._local.device = d
        return True

    def properties(self, d: int) -> dict:
        return self.devices[d]

    # memory ------------------------------------------------------------------------------------
    def malloc(self, size: int) -> int:
        d = self.current_device()
        with self._lock:
            addr = _DEV_BASE + d * _DEV_SPAN + self._next[d]
            self._next[d] += (size + 255) // 256 * 256 + 256  # a gap: an overrun never lands in the next one
            self.allocs[addr] = Alloc("device", addr, size, d, np.zeros(size, np.uint8))
        return addr

    def host_alloc(self, size: int, flags: int, mapped_flag: int) -> int:
        buf = np.zeros(size, np.uint8)
        addr = int(buf.ctypes.data)
        a = Alloc("pinned", addr, size, self.current_device(), buf, flags=flags)
        with self._lock:
            self.allocs[addr] = a
            if flags & mapped_flag:
                d = self.current_device()
                dev = _DEV_BASE + d * _DEV_SPAN + self._next[d]
                self._next[d] += (size + 255) // 256 * 256 + 256
                a.alias = Alloc("mapped", dev, size, d, buf, host=a)
                self.allocs[dev] = a.alias
        return addr

    def free(self, addr: int, kind: str, what: str) -> bool:
        with self._lock:
            a = self.allocs.get(addr)
            if a is None or a.kind != kind:
                self.violation(f"{what}({addr:#x}): not a live {kind} allocation"
                               + (f" (it is {a.kind} memory)" if a else ""))
                return False
            del self.allocs[addr]
            if a.alias is not None:
                self.allocs.pop(a.alias.addr, None)
        return True

    def find(self, addr: int, nbytes: int) -> tuple[Alloc | None, int]:
        for a in list(self.allocs.values()):
            if a.addr <= addr < a.addr + a.size:
                return a, addr - a.addr
        return None, 0

    def _range(self, addr: int, nbytes: int, what: str, kinds: tuple[str, ...], device: int | None) -> np.ndarray | None:
        a, off = self.find(addr, nbytes)
        if a is None:
            self.violation(f"{what}: address {addr:#x} is in no live allocation")
            return None
        if a.kind not in kinds:
            self.violation(f"{what}: address {addr:#x} is {a.kind} memory, expected {' or '.join(kinds)}")
            return None
        if nbytes < 0 or off + nbytes > a.size:
            self.violation(f"{what}: {nbytes} bytes at offset {off} overrun the {a.size}-byte {a.kind} allocation")
            return None
        if device is not None and a.kind == "device" and a.device != device:
            self.violation(f"{what}: address {addr:#x} is memory of device {a.device}, used on device {device}")
        return a.buf[off:off + nbytes]

    def device_view(self, addr: int, nbytes: int, what: str, device: int | None = None) -> np.ndarray:
        """The simulated device bytes at ``addr`` (device memory or a mapped host alias); a
        violation and a scratch buffer if the range is not in one live allocation."""
        v = self._range(addr, nbytes, what, ("device", "mapped"), device)
        return v if v is not None else np.zeros(max(0, nbytes), np.uint8)

    def memcpy(self, dst: int, src: int, count: int, kind: str, stream: int, what: str) -> bool:
        dev = self.check_stream(stream, what)
        kinds = {"HostToDevice": (("device",), ("pinned",)), "DeviceToHost": (("pinned",), ("device",)),
                 "DeviceToDevice": (("device",), ("device",)), "HostToHost": (("pinned",), ("pinned",)),
                 "Default": (("device", "pinned"), ("device", "pinned"))}.get(kind)
        if kinds is None:
            self.violation(f"{what}: copy kind {kind!r}")
            return False
        d = self._range(dst, count, f"{what} destination", kinds[0], dev)
        s = self._range(src, count, f"{what} source", kinds[1], dev)
        if d is None or s is None:
            return False
        self.enqueue(stream, lambda: d.__setitem__(slice(None), s))  # reads the source when it runs
        return True

    # stream order ------------------------------------------------------------------------------
    def enqueue(self, stream: int, fn) -> None:
        if stream == 0:
            fn()  # the legacy default stream: treated as synchronous
            return
        with self._lock:
            self._seq += 1
            self.queues.setdefault(stream, []).append((self._seq, fn))

    def flush(self, stream: int, upto: int | None = None) -> None:
        while True:
            with self._lock:
                q = self.queues.get(stream) or []
                if not q or (upto is not None and q[0][0] > upto):
                    return
                _, fn = q.pop(0)
            fn()

    def flush_all(self) -> None:
        for h in list(self.queues):
            self.flush(h)

    def record(self, event: int, stream: int) -> None:
        with self._lock:
            self.marks[event] = (stream, self._seq)

    def wait_event(self, event: int) -> None:
        mark = self.marks.get(event)
        if mark is not None:
            self.flush(*mark)

    # streams and events ------------------------------------------------------------------------
    def new_handle(self, table: dict) -> int:
        with self._lock:
            self._handles += 0x10
            table[self._handles] = self.current_device()
            return self._handles

    def check_stream(self, handle: int, what: str, device: int | None = None) -> int | None:
        if handle == 0:
            return self.current_device()  # the legacy default stream
        dev = self.streams.get(handle)
        if dev is None:
            self.violation(f"{what}: stream {handle:#x} is not a live stream")
        elif device is not None and dev != device:
            self.violation(f"{what}: stream {handle:#x} belongs to device {dev}, used for device {device}")
        return dev

    def live(self) -> list[str]:
        out = [f"{a.kind} {a.size} bytes at {a.addr:#x} (device {a.device})" for a in self.allocs.values()
               if a.kind != "mapped"]
        out += [f"stream {h:#x}" for h in self.streams] + [f"event {h:#x}" for h in self.events]
        return out


def make_cudart(spec: dict, sim: CudaSim, real: Any = None, *, log: Log = LOG) -> types.ModuleType:
    """The fake ``cuda.bindings.runtime`` of ``spec``; ``real``: the real module (live mode) or None."""
    label = f"cuda-bindings {spec['version']}"
    api = Api(spec, label, log)
    mod = _CudartModule("cuda.bindings.runtime", api, real)
    E = api.enums if real is None else None

    def enum(q: str) -> Any:
        return getattr(real, q) if real is not None else E[q]

    err_t = enum("cudaError_t")
    ok = err_t.cudaSuccess
    const = {n: c["value"] for n, c in spec["constants"].items() if c["kind"] == "value"}

    def handle_type(q: str):
        if real is not None:
            return getattr(real, q)
        return _Handle

    def props(d: int):
        p = sim.properties(d)
        if real is not None:
            o = real.cudaDeviceProp()
            o.name = p["name"].encode().ljust(256, b"\0")
        else:
            o = types.SimpleNamespace(**{k: 0 for k, m in spec["classes"]["cudaDeviceProp"]["members"].items()
                                         if m["kind"] == "property"})
            o.name = p["name"].encode().ljust(256, b"\0")
        o.major, o.minor = p["cc"]
        o.integrated = int(p["integrated"])
        o.canMapHostMemory = 1
        o.unifiedAddressing = 1
        return o

    def kind_name(kind) -> str:
        name = getattr(kind, "name", None)
        typed = isinstance(kind, enum("cudaMemcpyKind")) if real is not None else \
            isinstance(kind, FakeEnumMember) and kind._enum is E["cudaMemcpyKind"]
        if name is None or not typed:
            return f"not a cudaMemcpyKind: {kind!r}"
        return name.removeprefix("cudaMemcpy")

    def s_setdevice(device):
        return (ok,) if sim.set_device(int(device)) else (err_t.cudaErrorInvalidDevice,)

    def s_getdevice():
        return ok, sim.current_device()

    def s_count():
        return ok, len(sim.devices)

    def s_props(device):
        if not 0 <= int(device) < len(sim.devices):
            return err_t.cudaErrorInvalidDevice, None
        return ok, props(int(device))

    def s_malloc(size):
        return ok, sim.malloc(int(size))

    def s_free(devPtr):
        sim.flush_all()  # cudaFree synchronizes the device
        return (ok,) if sim.free(int(devPtr), "device", "cudaFree") else (err_t.cudaErrorInvalidValue,)

    def s_hostalloc(size, flags):
        return ok, sim.host_alloc(int(size), int(flags), const["cudaHostAllocMapped"])

    def s_hostdevptr(pHost, flags):
        a = sim.allocs.get(int(pHost))
        if a is None or a.kind != "pinned":
            sim.violation(f"cudaHostGetDevicePointer({int(pHost):#x}): not a pinned allocation")
            return err_t.cudaErrorInvalidValue, None
        if int(flags) != 0:
            sim.violation(f"cudaHostGetDevicePointer: flags must be 0, got {flags}")
            return err_t.cudaErrorInvalidValue, None
        if a.alias is None:
            return err_t.cudaErrorInvalidValue, None  # allocated without cudaHostAllocMapped
        return ok, a.alias.addr

    def s_freehost(ptr):
        sim.flush_all()
        return (ok,) if sim.free(int(ptr), "pinned", "cudaFreeHost") else (err_t.cudaErrorInvalidValue,)

    def s_stream_create(flags):
        return ok, handle_type("cudaStream_t")(init_value=sim.new_handle(sim.streams))

    def _live(table, h, what):
        if int(h) not in table:
            sim.violation(f"{what}: {int(h):#x} is not live")
            return False
        return True

    def s_stream_sync(stream):
        if not _live(sim.streams, stream, "cudaStreamSynchronize"):
            return (err_t.cudaErrorInvalidResourceHandle,)
        sim.flush(int(stream))
        return (ok,)

    def s_stream_destroy(stream):
        if not _live(sim.streams, stream, "cudaStreamDestroy"):
            return (err_t.cudaErrorInvalidResourceHandle,)
        sim.flush(int(stream))  # work already enqueued still completes
        del sim.streams[int(stream)]
        sim.queues.pop(int(stream), None)
        return (ok,)

    def s_memcpy(dst, src, count, kind, stream):
        k = kind_name(kind)
        good = sim.memcpy(int(dst), int(src), int(count), k, int(stream), f"cudaMemcpyAsync({k})")
        return (ok,) if good else (err_t.cudaErrorInvalidValue,)

    def s_event_create(flags):
        return ok, handle_type("cudaEvent_t")(init_value=sim.new_handle(sim.events))

    def s_event_record(event, stream):
        good = _live(sim.events, event, "cudaEventRecord") and sim.check_stream(int(stream), "cudaEventRecord") is not None
        if good:
            sim.record(int(event), int(stream))
        return (ok,) if good else (err_t.cudaErrorInvalidResourceHandle,)

    def s_event_sync(event):
        if not _live(sim.events, event, "cudaEventSynchronize"):
            return (err_t.cudaErrorInvalidResourceHandle,)
        sim.wait_event(int(event))
        return (ok,)

    def s_event_destroy(event):
        if not _live(sim.events, event, "cudaEventDestroy"):
            return (err_t.cudaErrorInvalidResourceHandle,)
        del sim.events[int(event)]
        sim.marks.pop(int(event), None)
        return (ok,)

    def s_error_name(error):
        return ok, getattr(error, "name", str(error)).encode()

    sims = {"cudaSetDevice": s_setdevice, "cudaGetDevice": s_getdevice, "cudaGetDeviceCount": s_count,
            "cudaGetDeviceProperties": s_props, "cudaMalloc": s_malloc, "cudaFree": s_free,
            "cudaHostAlloc": s_hostalloc, "cudaHostGetDevicePointer": s_hostdevptr, "cudaFreeHost": s_freehost,
            "cudaStreamCreateWithFlags": s_stream_create, "cudaStreamSynchronize": s_stream_sync,
            "cudaStreamDestroy": s_stream_destroy, "cudaMemcpyAsync": s_memcpy,
            "cudaEventCreateWithFlags": s_event_create, "cudaEventRecord": s_event_record,
            "cudaEventSynchronize": s_event_sync, "cudaEventDestroy": s_event_destroy,
            "cudaGetErrorName": s_error_name}

    for name, fn in sims.items():
        if name in spec["functions"]:
            mod.__dict__[name] = _checked(name, fn, api, sim, real, spec["probes"].get(name, {}), err_t)
    return mod


def _checked(name: str, fn, api: Api, sim: CudaSim, real: Any, probe: dict, err_t: Any):
    """``name`` as hanrt sees it: argument check (real call or spec), then the simulation (or the
    failure a missing driver or an injected error gives)."""

    def call(*args, **kwargs):
        api.log.touch(f"cudart.{name}")
        sim.calls.append((threading.current_thread().name, name, sim.current_device()))
        want = probe.get("len")
        if real is not None:
            try:
                ret = getattr(real, name)(*args, **kwargs)
                want = len(ret) if isinstance(ret, tuple) else 1
            except (TypeError, ValueError, OverflowError) as exc:
                api.log.violation(f"{name}{args!r:.120}: the real {api.label} refused the arguments: {exc}")
                raise
            except RuntimeError:  # legacy cuda.cudart: no driver (the arguments were converted first)
                if not sim.driver:
                    raise
                ret = None
        else:
            api.check_call("", name, args, kwargs)
            ret = None
        if not sim.driver and name != "cudaGetErrorName":
            if sim.legacy:
                raise RuntimeError("Failed to dlopen libcuda.so.1")
            return ret if ret is not None else (err_t.cudaErrorInsufficientDriver,) + (None,) * ((want or 1) - 1)
        if name in sim.fail:
            return (getattr(err_t, sim.fail[name]),) + (None,) * ((want or 1) - 1)
        out = fn(*args, **kwargs)
        if want is not None and len(out) != want:
            raise AssertionError(f"fake {name} returns {len(out)} values, the real one {want}: fix tests/trtfakes")
        return out

    call.__name__ = name
    return call


class _Handle(int):
    """cudaStream_t / cudaEvent_t stand-in when the real module is absent (``int()`` gives the handle)."""

    def __new__(cls, init_value: int = 0, _ptr: int = 0):
        return int.__new__(cls, init_value)

    def getPtr(self) -> int:
        return int(self)


class _CudartModule(types.ModuleType):
    def __init__(self, name: str, api: Api, real: Any) -> None:
        super().__init__(name)
        self.__dict__["_api"] = api
        self.__dict__["_real"] = real

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        api, real = self.__dict__["_api"], self.__dict__["_real"]
        spec = api.spec
        if name in spec["functions"]:
            api.log.violation(f"cudart.{name}: called by hanrt but not simulated by tests/trtfakes/cuda.py")
            raise AttributeError(f"the fake cudart does not simulate {name}")
        if name in spec["classes"] or name in spec["constants"]:
            api.log.touch(f"cudart.{name}")
            if real is not None:
                return getattr(real, name)
            if name in api.enums:
                return api.enums[name]
            c = spec["constants"].get(name)
            if c is not None and c["kind"] == "value":
                return c["value"]
            if c is not None and c["kind"] == "enumval":
                return api.enums[c["enum"]](c["value"])
            return _Handle
        api.missing(f"cuda.bindings.runtime.{name}", direct=_direct_access())
        raise AttributeError(f"module 'cuda.bindings.runtime' has no attribute '{name}' ({api.label})")

"""TensorRT backend: a built engine (``.plan`` + ``.plan.json`` sidecar) on a CUDA device.

Per slot (see :mod:`hanrt.backends.base`): an execution context, a CUDA stream, an event, a
pinned host input and output buffer, and — in ``copy`` memory mode — device buffers with
``cudaMemcpyAsync`` copies around ``execute_async_v3``; in ``mapped`` mode the engine reads and
writes the pinned host buffers directly (zero-copy), which suits Jetson's integrated GPU whose
"device" memory is the same DRAM. ``memory="auto"`` picks ``mapped`` on integrated GPUs and
``copy`` on discrete ones.

Ownership: ``wait``/``run`` return a view of the slot's pinned output buffer, valid until the
slot is submitted again or the backend is closed; copy to keep. Not thread-safe.

**Not yet run on a GPU**: written against the documented TensorRT 10.x/11.x named-tensor API
(``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) and cuda-python; the pure
parts (profile choice, memory mode, buffer sizes, engine refusal) are tested on the CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..engine import Profile, Sidecar, check_compatible, read_sidecar
from ..errors import BackendError, InputError, UsageError
from ..model_info import ModelInfo
from .base import Backend, Slot, TrtConfig as _BaseTrtConfig, batch_shape, check_batch

log = logging.getLogger(__name__)

__all__ = ["TrtConfig", "TensorRTBackend", "pick_profile", "resolve_memory", "slot_nbytes"]

MemoryMode = Literal["auto", "copy", "mapped"]


@dataclass(frozen=True, kw_only=True)
class TrtConfig(_BaseTrtConfig):
    """:class:`hanrt.backends.base.TrtConfig` plus ``memory``: ``auto`` (mapped on integrated
    GPUs such as Jetson, copy elsewhere), ``copy`` (pinned host + device buffers, async copies)
    or ``mapped`` (zero-copy pinned host memory the GPU accesses directly)."""

    memory: MemoryMode = "auto"

    def __post_init__(self) -> None:
        if self.memory not in ("auto", "copy", "mapped"):
            raise UsageError(f"TensorRT memory mode must be auto, copy or mapped, got {self.memory!r}.")
        if self.slots < 1:
            raise UsageError(f"TensorRT slots must be >= 1, got {self.slots}.")


def pick_profile(profiles: tuple[Profile, ...] | list[Profile], batch: int, h: int, w: int) -> int:
    """Index of the first profile accepting ``batch`` tiles of ``h x w``; UsageError naming the
    shapes the engine was built for otherwise."""
    for i, p in enumerate(profiles):
        if p.accepts((batch, h, w)):
            return i
    built = "; ".join(p.describe() for p in profiles)
    raise UsageError(f"this engine takes batch x height x width in [{built}], not {batch}x{h}x{w}: "
                     f"use a matching --tile/--batch or rebuild with hanrt build --tile {h}x{w} --batch {batch}.")


def resolve_memory(mode: str, integrated: bool) -> str:
    """``copy`` or ``mapped`` for a configured mode on a GPU that is (not) integrated."""
    if mode == "auto":
        return "mapped" if integrated else "copy"
    if mode not in ("copy", "mapped"):
        raise UsageError(f"memory mode must be auto, copy or mapped, got {mode!r}.")
    return mode


def slot_nbytes(info: ModelInfo, batch: int, h: int, w: int) -> tuple[int, int]:
    """Bytes of one slot's input and output buffers (dtype and layout per ``info``)."""
    item = np.dtype(info.input_dtype).itemsize
    i = int(np.prod(batch_shape(info, batch, h, w))) * item
    o = int(np.prod(batch_shape(info, batch, h, w, output=True))) * item
    return i, o


class TensorRTBackend(Backend):
    """Run a hanrt-built TensorRT engine. ``plan_path``: the ``.plan`` (its sidecar beside it)."""

    name = "trt"

    def __init__(self, plan_path: str, *, config: _BaseTrtConfig = TrtConfig()) -> None:
        from .. import _tensorrt
        from . import _cuda

        self._cuda = _cuda
        self.config = config
        self.plan = Path(plan_path)
        if not self.plan.is_file():
            raise InputError(f"engine {str(self.plan)!r} does not exist.")
        self.sidecar: Sidecar = read_sidecar(self.plan)
        self.info = self.sidecar.model_info
        self.profiles = self.sidecar.profiles
        rt = _cuda.cudart()
        _cuda.check(rt.cudaSetDevice(int(config.device_id)), f"cudaSetDevice({config.device_id})", rt)
        if getattr(config, "check_fingerprint", True):
            check_compatible(self.sidecar, _tensorrt.running_target(config.device_id), plan=self.plan)
        _, _, integrated = _cuda.device_properties(config.device_id)
        self.memory = resolve_memory(getattr(config, "memory", "auto"), integrated)
        self._runtime, self.engine = _tensorrt.load_engine(self.plan.read_bytes())
        t = _tensorrt.trt()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._in = next(n for n in names if self.engine.get_tensor_mode(n) == t.TensorIOMode.INPUT)
        self._out = next(n for n in names if self.engine.get_tensor_mode(n) == t.TensorIOMode.OUTPUT)
        p0 = self.profiles[0]
        if len(self.profiles) == 1 and p0.min[1:] == p0.max[1:]:
            self.fixed_tile_shape = (p0.opt[1], p0.opt[2])
        self.max_batch = max(p.max[0] for p in self.profiles)
        self._owned: list[Any] = []
        self._run_slot: Slot | None = None
        self._closed = False

    def describe(self) -> str:
        fp = self.sidecar.fingerprint
        return f"trt ({fp.gpu}, TensorRT {fp.tensorrt}, {self.info.precision}, memory {self.memory})"

    # -- slots ------------------------------------------------------------------------------
    def make_slots(self, count: int, batch: int, tile_h: int, tile_w: int) -> list[Slot]:
        if count < 1 or batch < 1:
            raise UsageError(f"need >= 1 slot of >= 1 tile, got {count} slot(s) of {batch}.")
        prof = pick_profile(self.profiles, batch, tile_h, tile_w)
        cu = self._cuda
        mapped = self.memory == "mapped"
        slots = []
        for i in range(count):
            hin = cu.HostBuffer(batch_shape(self.info, batch, tile_h, tile_w), self.info.input_dtype, mapped=mapped)
            hout = cu.HostBuffer(batch_shape(self.info, batch, tile_h, tile_w, output=True), self.info.input_dtype,
                                 mapped=mapped)
            stream, event = cu.Stream(), cu.Event()
            din = dout = None
            if not mapped:
                din, dout = cu.DeviceBuffer(hin.nbytes), cu.DeviceBuffer(hout.nbytes)
            ctx = self.engine.create_execution_context()
            if ctx is None:
                raise BackendError("TensorRT could not create an execution context (out of GPU memory?).")
            if not ctx.set_optimization_profile_async(prof, stream.ptr):
                raise BackendError(f"TensorRT refused optimization profile {prof}.")
            handle = {"ctx": ctx, "stream": stream, "event": event, "hin": hin, "hout": hout,
                      "din": din, "dout": dout, "tile": (tile_h, tile_w)}
            self._owned.append(handle)
            slots.append(Slot(i, hin.array, hout.array, handle=handle))
        return slots

    def submit(self, slot: Slot, n: int) -> None:
        if slot.pending:
            raise UsageError(f"slot {slot.index} was submitted twice without wait().")
        if not 1 <= n <= slot.input.shape[0]:
            raise UsageError(f"slot {slot.index}: n must be 1..{slot.input.shape[0]}, got {n}.")
        h = slot.handle
        th, tw = h["tile"]
        in_bytes, out_bytes = slot_nbytes(self.info, n, th, tw)
        ctx, stream = h["ctx"], h["stream"]
        if not ctx.set_input_shape(self._in, batch_shape(self.info, n, th, tw)):
            raise BackendError(f"TensorRT refused input shape {batch_shape(self.info, n, th, tw)}.")
        if self.memory == "mapped":
            din, dout = h["hin"].device_ptr, h["hout"].device_ptr
        else:
            din, dout = h["din"].ptr, h["dout"].ptr
            stream.h2d(din, h["hin"].ptr, in_bytes)
        ctx.set_tensor_address(self._in, din)
        ctx.set_tensor_address(self._out, dout)
        if not ctx.execute_async_v3(stream.ptr):
            raise BackendError("TensorRT execute_async_v3 failed (see the log with -vv).")
        if self.memory != "mapped":
            stream.d2h(h["hout"].ptr, dout, out_bytes)
        h["event"].record(stream)
        slot.n = n
        slot.pending = True

    def wait(self, slot: Slot) -> np.ndarray:
        if not slot.pending:
            raise UsageError(f"slot {slot.index}: wait() without submit().")
        slot.handle["event"].synchronize()
        slot.pending = False
        assert slot.output is not None
        return slot.output[: slot.n]

    def run(self, batch: np.ndarray) -> np.ndarray:
        check_batch(self.info, batch, source="trt")
        n = batch.shape[0]
        h, w = (batch.shape[2], batch.shape[3]) if self.info.layout == "NCHW" else batch.shape[1:3]
        s = self._run_slot
        if s is None or s.handle["tile"] != (h, w) or s.input.shape[0] < n:
            s = self._run_slot = self.make_slots(1, n, h, w)[0]
        s.input[:n] = batch
        self.submit(s, n)
        return self.wait(s)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for h in self._owned:
            for k in ("event", "stream", "din", "dout", "hin", "hout"):
                if h.get(k) is not None:
                    h[k].close()
            h["ctx"] = None
        self._owned.clear()
        self.engine = None
        self._runtime = None

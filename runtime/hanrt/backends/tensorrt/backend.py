"""TensorRT backend: a built engine (``.plan`` + ``.plan.json`` sidecar) on a CUDA device.

Per slot (see :mod:`hanrt.backends.base`): an execution context, a CUDA stream, an event, a
pinned host input and output buffer, and — in ``copy`` memory mode — device buffers with
``cudaMemcpyAsync`` copies around ``execute_async_v3``; in ``mapped`` mode the engine reads and
writes the pinned host buffers directly (zero-copy), which suits Jetson's integrated GPU whose
"device" memory is the same DRAM. ``memory="auto"`` picks ``mapped`` on integrated GPUs and
``copy`` on discrete ones.

Every slot's context runs on the same optimization profile (the first that accepts the tile
shape): execution contexts share profiles since TensorRT 10.0 (see
:mod:`hanrt.backends.tensorrt.profiles`), so any number of slots -- and ``run()`` beside them --
use an engine built with one profile per tile shape.

Devices: the CUDA current device is per host thread, and the pipeline calls slots from its own
inference thread; every entry point (``make_slots``, ``submit``, ``wait``, ``run``,
``release_slots``, ``close``) therefore makes ``config.device_id`` current on the calling thread
first (one ``cudaSetDevice``, which only sets the thread's device).

Ownership: ``wait``/``run`` return a view of the slot's pinned output buffer, valid until the
slot is submitted again or the backend is closed; copy to keep. Not thread-safe: one thread at a
time per backend (which thread may change).

**Not yet run on a GPU**: written against the documented TensorRT 10.x/11.x named-tensor API
(``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) and cuda-python; the pure
parts (profile choice, memory mode, buffer sizes, engine refusal) are tested on the CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import BackendError, InputError, UsageError
from ...model_info import ModelInfo
from ..base import Backend, Slot, TrtConfig, batch_shape, check_batch
from . import build as _build
from . import cuda as _cuda
from .cache import Sidecar, check_compatible, read_sidecar
from .profiles import pick_profile, plan_for_profiles

log = logging.getLogger(__name__)

__all__ = ["TensorRTBackend", "resolve_memory", "slot_nbytes"]


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
    """Run a hanrt-built TensorRT engine. ``plan_path``: the ``.plan`` (its sidecar beside it).

    ``profiles``: the engine's optimization profiles (:class:`~hanrt.backends.tensorrt.profiles.Profile`, min/opt/max
    ``(N, H, W)`` in input pixels) -- the only tile shapes and batches it accepts; the
    :class:`~hanrt.upscaler.Upscaler` plans its tiles within them.
    """

    name = "trt"

    def __init__(self, plan_path: str, *, config: TrtConfig = TrtConfig()) -> None:
        self._cuda = _cuda
        self.config = config
        self.plan = Path(plan_path)
        if not self.plan.is_file():
            raise InputError(f"engine {str(self.plan)!r} does not exist.")
        self.sidecar: Sidecar = read_sidecar(self.plan)
        self.info = self.sidecar.model_info
        self.profiles = self.sidecar.profiles  # TensorRT's order (an earlier hanrt's --slots N: N copies each)
        self.device = int(config.device_id)
        _cuda.set_device(self.device)
        if config.check_fingerprint:
            check_compatible(self.sidecar, _build.running_target(config.device_id), plan=self.plan)
        _, _, integrated = _cuda.device_properties(config.device_id)
        self.memory = resolve_memory(config.memory, integrated)
        self._runtime, self.engine = _build.load_engine(self.plan.read_bytes())
        t = _build.trt()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._in = next(n for n in names if self.engine.get_tensor_mode(n) == t.TensorIOMode.INPUT)
        self._out = next(n for n in names if self.engine.get_tensor_mode(n) == t.TensorIOMode.OUTPUT)
        p0 = self.profiles[0]
        if p0.min[1:] == p0.max[1:] and all(p.min[1:] == p.max[1:] == p0.min[1:] for p in self.profiles):
            self.fixed_tile_shape = (p0.opt[1], p0.opt[2])  # every profile runs this one H x W
        self.max_batch = max(p.max[0] for p in self.profiles)
        self._owned: list[Any] = []
        self._run_slot: Slot | None = None
        self._closed = False

    def describe(self) -> str:
        fp = self.sidecar.fingerprint
        return f"trt ({fp.gpu}, TensorRT {fp.tensorrt}, {self.info.precision}, memory {self.memory})"

    def plan_tiles(self, height: int, width: int, *, tile: int | None, margin: int, batch: int):
        """Tiles within the engine's optimization profiles (:func:`~.profiles.plan_for_profiles`)."""
        return plan_for_profiles(height, width, profiles=self.profiles, tile=tile, margin=margin, batch=batch,
                                 info=self.info)

    # -- slots ------------------------------------------------------------------------------
    def make_slots(self, count: int, batch: int, tile_h: int, tile_w: int) -> list[Slot]:
        """``count`` slots, each with its own execution context, stream and buffers, all on the
        first optimization profile that accepts ``batch`` tiles of ``tile_h x tile_w``.

        Contexts share the profile (TensorRT >= 10, see :mod:`hanrt.backends.tensorrt.profiles`),
        also with other live slots of this backend (another Upscaler sharing it, ``run()``'s).
        UsageError naming the engine's shapes if no profile accepts the shape. If TensorRT cannot
        create a second or later context (typically out of GPU memory: each context allocates its
        own activation memory), the slots made so far are kept, with a warning; the first one
        failing is a BackendError.
        """
        if count < 1 or batch < 1:
            raise UsageError(f"need >= 1 slot of >= 1 tile, got {count} slot(s) of {batch}.")
        prof = pick_profile(self.profiles, batch, tile_h, tile_w)  # UsageError naming the built shapes
        cu = self._cuda
        cu.set_device(self.device)
        mapped = self.memory == "mapped"
        slots: list[Slot] = []
        made: list[dict[str, Any]] = []
        try:
            for i in range(count):
                h: dict[str, Any] = {"tile": (tile_h, tile_w), "profile": prof}
                made.append(h)  # freed below if anything later fails
                h["hin"] = cu.HostBuffer(batch_shape(self.info, batch, tile_h, tile_w), self.info.input_dtype,
                                         mapped=mapped)
                h["hout"] = cu.HostBuffer(batch_shape(self.info, batch, tile_h, tile_w, output=True),
                                          self.info.input_dtype, mapped=mapped)
                h["stream"], h["event"] = cu.Stream(), cu.Event()
                if not mapped:
                    h["din"], h["dout"] = cu.DeviceBuffer(h["hin"].nbytes), cu.DeviceBuffer(h["hout"].nbytes)
                ctx = h["ctx"] = self.engine.create_execution_context()
                if ctx is None:
                    if not slots:
                        raise BackendError("TensorRT could not create an execution context (out of GPU memory?).")
                    # a later context failing is most likely the activation memory each context
                    # allocates: run with the slots made so far rather than not at all
                    made.pop()
                    _free_handle(h)
                    log.warning("trt: TensorRT could not create execution context %d of %d for %dx%dx%d, "
                                "most likely out of GPU memory: every execution context allocates its own "
                                "activation memory. Running with the %d slot(s) made; to avoid this, ask for "
                                "fewer slots (Upscaler(slots=%d) / TrtConfig(slots=%d)) or smaller tiles "
                                "or batches.", i + 1, count, batch, tile_h, tile_w, len(slots), len(slots),
                                len(slots))
                    break
                if not ctx.set_optimization_profile_async(prof, h["stream"].ptr):
                    raise BackendError(f"TensorRT refused optimization profile {prof} "
                                       f"({self.profiles[prof].describe()}) for a new execution context.")
                slots.append(Slot(i, h["hin"].array, h["hout"].array, handle=h))
        except BaseException:
            for h in made:
                try:
                    _free_handle(h)
                except Exception:  # noqa: BLE001 - the original error matters more
                    log.debug("trt: freeing a half-made slot failed", exc_info=True)
            raise
        self._owned.extend(made)
        return slots

    def release_slots(self, slots: list[Slot]) -> None:
        """Free the slots' contexts, streams, events and buffers (waiting for work in flight first)."""
        if any(s.handle is not None for s in slots):
            self._cuda.set_device(self.device)
        for s in slots:
            h = s.handle
            s.result = None
            s.pending = False
            if h is None or not any(h is o for o in self._owned):
                continue  # already released (or closed)
            self._owned = [o for o in self._owned if o is not h]
            _free_handle(h)
            s.handle = None
            s.input = np.empty((0,) + s.input.shape[1:], s.input.dtype)  # no view of freed pinned memory
            s.output = None
            if self._run_slot is s:
                self._run_slot = None

    def submit(self, slot: Slot, n: int) -> None:
        if slot.pending:
            raise UsageError(f"slot {slot.index} was submitted twice without wait().")
        if not 1 <= n <= slot.input.shape[0]:
            raise UsageError(f"slot {slot.index}: n must be 1..{slot.input.shape[0]}, got {n}.")
        h = slot.handle
        th, tw = h["tile"]
        in_bytes, out_bytes = slot_nbytes(self.info, n, th, tw)
        ctx, stream = h["ctx"], h["stream"]
        self._cuda.set_device(self.device)
        if not ctx.set_input_shape(self._in, batch_shape(self.info, n, th, tw)):
            raise BackendError(f"TensorRT refused input shape {batch_shape(self.info, n, th, tw)}.")
        if self.memory == "mapped":
            din, dout = h["hin"].device_ptr, h["hout"].device_ptr
        else:
            din, dout = h["din"].ptr, h["dout"].ptr
            stream.h2d(din, h["hin"].ptr, in_bytes)
        for name, ptr in ((self._in, din), (self._out, dout)):
            if not ctx.set_tensor_address(name, ptr):
                raise BackendError(f"TensorRT refused the address of tensor {name!r} (see the log with -vv).")
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
        self._cuda.set_device(self.device)
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
            if s is not None:
                self.release_slots([s])
            s = self._run_slot = self.make_slots(1, n, h, w)[0]
        s.input[:n] = batch
        self.submit(s, n)
        return self.wait(s)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        owned, self._owned, self._run_slot = self._owned, [], None
        self._cuda.set_device(self.device)  # contexts and the engine free device memory on this thread
        for h in owned:
            _free_handle(h)
        self.engine = None
        self._runtime = None


def _free_handle(h: dict[str, Any]) -> None:
    """Free one slot's resources: wait for its stream, drop the context, close event, stream and
    buffers (each at most once; missing entries -- a half-made slot -- are skipped)."""
    stream = h.get("stream")
    if stream is not None and getattr(stream, "handle", None) is not None:
        stream.synchronize()  # no copy or kernel may still use the buffers
    h["ctx"] = None  # the IExecutionContext is destroyed with its last reference (before the engine)
    for k in ("event", "stream", "din", "dout", "hin", "hout"):
        obj = h.pop(k, None)
        if obj is not None:
            obj.close()

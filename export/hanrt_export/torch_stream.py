"""PyTorch CUDA frame processor with pinned host slots and per-slot CUDA streams, for the pipeline.

This is the pinned-memory/stream path of :mod:`hanrt.pipeline` on GPUs that have PyTorch but no
TensorRT. It implements the pipeline's *async* processor protocol (``submit(image) -> slot``,
``wait(slot) -> image``, ``in_flight``) on whole frames:

- ``slots`` (N >= 2) sets of buffers: a pinned (page-locked) host input ``H x W x 3`` uint8, a
  pinned host output ``sH x sW x 3`` uint8, a CUDA stream and an event. Only uint8 bytes cross the
  bus; the uint8 -> float conversion, NHWC -> NCHW, clamp and rounding run on the GPU.
- ``submit`` copies the frame into its slot's pinned input (host memcpy), then enqueues on the
  slot's stream: H2D copy, the network, D2H copy into the pinned output, and records the event.
  It returns at once, so the pipeline submits frame k+1 (its H2D copy overlaps frame k's compute
  on another stream) before waiting for frame k.
- ``wait`` synchronizes the slot's event and returns a **copy** of the pinned output (the caller
  owns it; the slot is reused N submits later).

Memory strategy (``memory=``): ``"copy"`` (default; discrete GPUs) as above. ``"mapped"``
(zero-copy; the right choice on Jetson, whose GPU shares DRAM with the CPU): the kernels read the
pinned input and write the pinned output in place through their device mapping (with unified
virtual addressing a pinned allocation is mapped, and its device address is obtained through
``cudaHostGetDevicePointer`` when cuda-python is installed, else assumed equal to the host address,
which holds for ``cudaHostAlloc`` memory under UVA). No copies are enqueued; on a discrete GPU every
access crosses PCIe, so ``copy`` is faster there.

**Unverified on hardware in the development session** (no GPU): see benchmarks/gpu_check.sh, which
runs the ``gpu`` tests and a throughput run on a CUDA machine.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from hanrt.errors import BackendError, InputError, UsageError

from .han import HAN

__all__ = ["TorchStreamProcessor"]

log = logging.getLogger(__name__)


class _CudaArray:
    """Expose a raw device pointer through ``__cuda_array_interface__`` (for ``torch.as_tensor``)."""

    def __init__(self, ptr: int, shape: tuple[int, ...]) -> None:
        self.__cuda_array_interface__ = {"shape": shape, "typestr": "|u1", "data": (ptr, False),
                                         "version": 3, "strides": None}


def _device_pointer(host_ptr: int) -> int:
    """Device address of torch's pinned memory: cudaHostGetDevicePointer through hanrt's CUDA helper,
    or the host address itself without cuda-python (UVA: cudaHostAlloc memory has the same address
    on the device)."""
    from hanrt.backends.tensorrt.cuda import device_pointer
    from hanrt.errors import MissingDependencyError

    try:
        return device_pointer(host_ptr)
    except MissingDependencyError:
        return host_ptr


@dataclass(eq=False)
class _Slot:
    index: int
    stream: Any
    event: Any
    shape: tuple[int, int] | None = None
    host_in: Any = None  # pinned torch uint8 (H, W, 3)
    host_out: Any = None  # pinned torch uint8 (sH, sW, 3)
    in_np: np.ndarray | None = None  # numpy view of host_in
    out_np: np.ndarray | None = None
    dev_in: Any = None  # device tensor: a copy target, or the mapped view of host_in
    dev_out: Any = None  # mapped view of host_out (memory="mapped")
    busy: bool = False


class TorchStreamProcessor:
    """Whole-frame HAN on CUDA with ``slots`` pinned buffer sets and streams (see the module doc).

    ``model``: a :class:`~hanrt_export.han.HAN` or a checkpoint path. ``fp16``: half precision
    (the model keeps its layer attention's energy in FP32 where it matters). ``memory``: ``"copy"``
    or ``"mapped"``. ``device``: ``"cuda"`` or ``"cuda:N"`` (``"cpu"`` runs the same slot logic without
    streams or pinned memory, FP32 only: a test mode for machines without a GPU). Images: HxWx3 uint8 RGB in, sH x sW x 3
    uint8 out (a new array owned by the caller). Not thread-safe: one pipeline worker drives it.
    """

    def __init__(self, model: HAN | str | os.PathLike, *, device: str = "cuda", fp16: bool = False,
                 slots: int = 2, memory: Literal["copy", "mapped"] = "copy") -> None:
        dev = torch.device(device)
        self._cuda = dev.type == "cuda"
        if self._cuda and not torch.cuda.is_available():
            raise UsageError("TorchStreamProcessor needs CUDA, and PyTorch sees no CUDA GPU.")
        if not self._cuda and (fp16 or memory != "copy"):
            raise UsageError("on the CPU (a test mode) TorchStreamProcessor runs FP32 with memory='copy' only.")
        if slots < 1:
            raise UsageError(f"slots must be >= 1, got {slots}.")
        if memory not in ("copy", "mapped"):
            raise UsageError(f"memory must be 'copy' or 'mapped', got {memory!r}.")
        if isinstance(model, (str, os.PathLike)):
            from .checkpoint import load_checkpoint

            model = load_checkpoint(model).model
        if not isinstance(model, HAN):
            raise UsageError(f"TorchStreamProcessor needs a HAN or a checkpoint path, got {type(model).__name__}.")
        self.device = dev
        self.dtype = torch.float16 if fp16 else torch.float32
        self.memory = memory
        self.scale = int(model.config.scale)
        # a copy: converting in place would change the caller's module (device, dtype)
        self._model = copy.deepcopy(model).eval().to(self.device, self.dtype)
        if self._cuda:
            torch.cuda.synchronize(self.device)
        self._slots = [_Slot(i, torch.cuda.Stream(self.device) if self._cuda else None,
                             torch.cuda.Event() if self._cuda else None) for i in range(slots)]
        self._next = 0
        self.in_flight = slots
        self._closed = False

    # -- buffers ------------------------------------------------------------------------------

    def _prepare(self, slot: _Slot, h: int, w: int) -> None:
        if slot.shape == (h, w):
            return
        s = self.scale
        slot.host_in = torch.empty((h, w, 3), dtype=torch.uint8, pin_memory=self._cuda)
        slot.host_out = torch.empty((h * s, w * s, 3), dtype=torch.uint8, pin_memory=self._cuda)
        slot.in_np = slot.host_in.numpy()
        slot.out_np = slot.host_out.numpy()
        if self.memory == "mapped":
            slot.dev_in = torch.as_tensor(_CudaArray(_device_pointer(slot.host_in.data_ptr()), (h, w, 3)),
                                          device=self.device)
            slot.dev_out = torch.as_tensor(_CudaArray(_device_pointer(slot.host_out.data_ptr()),
                                                      (h * s, w * s, 3)), device=self.device)
        else:
            slot.dev_in = torch.empty((h, w, 3), dtype=torch.uint8, device=self.device)
            slot.dev_out = None
        slot.shape = (h, w)

    # -- protocol -----------------------------------------------------------------------------

    def submit(self, image: np.ndarray) -> _Slot:
        """Start upscaling ``image`` (HxWx3 uint8); returns the slot to :meth:`wait` on, in order."""
        if self._closed:
            raise UsageError("this TorchStreamProcessor was closed.")
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"expected an HxWx3 uint8 frame, got {getattr(image, 'shape', type(image))}.")
        slot = self._slots[self._next]
        if slot.busy:
            raise UsageError(f"slot {slot.index} is still in flight: call wait() in submission order.")
        self._next = (self._next + 1) % len(self._slots)
        h, w = image.shape[:2]
        self._prepare(slot, h, w)
        np.copyto(slot.in_np, image)  # host memcpy into pinned memory
        try:
            ctx = torch.cuda.stream(slot.stream) if self._cuda else contextlib.nullcontext()
            with ctx, torch.inference_mode():
                if self.memory == "copy":
                    slot.dev_in.copy_(slot.host_in, non_blocking=True)  # H2D on this slot's stream
                x = slot.dev_in.permute(2, 0, 1).unsqueeze(0).to(self.dtype)
                y = self._model(x)
                y = torch.clamp(y.float(), 0.0, 255.0).round_().to(torch.uint8)[0].permute(1, 2, 0)
                if self.memory == "copy":
                    slot.host_out.copy_(y, non_blocking=True)  # D2H into pinned memory
                else:
                    slot.dev_out.copy_(y)  # written in place through the mapping
                if self._cuda:
                    slot.event.record(slot.stream)
        except RuntimeError as exc:
            raise BackendError(f"PyTorch CUDA failed on a {h}x{w} frame: {exc}") from exc
        slot.busy = True
        return slot

    def wait(self, slot: _Slot) -> np.ndarray:
        """Block until ``slot`` is done; return its output (a new HxWx3 uint8 array)."""
        if not slot.busy:
            raise UsageError(f"slot {slot.index}: wait() without submit().")
        try:
            if self._cuda:
                slot.event.synchronize()
        except RuntimeError as exc:
            raise BackendError(f"PyTorch CUDA failed: {exc}") from exc
        slot.busy = False
        assert slot.out_np is not None
        return slot.out_np.copy()

    def upscale(self, image: np.ndarray) -> np.ndarray:
        """Synchronous convenience: ``wait(submit(image))``."""
        return self.wait(self.submit(image))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._slots = []
        self._model = None  # type: ignore[assignment]
        if self._cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()

    def __enter__(self) -> "TorchStreamProcessor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

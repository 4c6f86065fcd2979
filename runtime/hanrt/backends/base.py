"""The backend protocol, its frozen settings, and the async slot protocol with a synchronous default.

A **backend** runs one HAN graph (or engine, or PyTorch module) on host batches:

- ``run(batch) -> batch``: the one work method. Input: float32 **NCHW** ``(B, C, h, w)`` with
  values 0..255 when ``info.io == "float"``, or uint8 **NHWC** ``(B, h, w, C)`` when
  ``info.io == "uint8"`` (the graph casts, transposes, clamps and rounds inside). Output: the same
  layout and dtype with ``h*scale x w*scale`` pixels (float output is *not* clamped).
- ``info``: the :class:`~hanrt.model_info.ModelInfo` of the graph (scale, I/O kind, shape rules).
- ``fixed_tile_shape``: ``(h, w)`` when only one input shape runs (a TensorRT engine built for a
  tile), else ``None``. ``max_batch``: the largest batch it accepts (``None``: any).
- A context manager; ``close()`` releases sessions, streams and device memory; closing twice is fine.

**Buffer ownership.** ``run`` never keeps or modifies the caller's input. The returned array may
be a view of a buffer the backend owns and reuses (pinned host memory, I/O binding): it is valid
until the next ``run``/``submit`` on the same backend (or the same slot) or ``close``. Copy it to
keep it. Backends are not thread-safe: one thread per backend (the :class:`~hanrt.upscaler.Upscaler`
serializes its calls).

**Async slot protocol** (DESIGN.md). ``make_slots(count, batch, tile_h, tile_w)`` returns ``count``
:class:`Slot` s, each holding a host input buffer of ``batch`` tiles (pinned memory on GPU
backends) that the tiler writes straight into. ``submit(slot, n)`` starts work on the first ``n``
tiles of the slot (TensorRT: H2D copy, execute, D2H copy enqueued on the slot's stream) and returns
at once; ``wait(slot)`` blocks until it is done and returns the output batch (a view of the slot's
output buffer, owned by the slot: valid until that slot is submitted again). With two or more
slots, the caller fills slot k+1 while slot k computes. :class:`Backend` gives every backend a
synchronous default (``submit`` runs ``run`` at once), so callers always use slots.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

import numpy as np

from ..errors import ModelError, UsageError
from ..model_info import ModelInfo

if TYPE_CHECKING:  # pragma: no cover
    from ..tiling import TilePlan

__all__ = [
    "Backend",
    "BackendSpec",
    "FileKind",
    "Probe",
    "OpenOptions",
    "ONNX",
    "ENGINE",
    "CHECKPOINT",
    "REMOTE",
    "FILE_KINDS",
    "installed",
    "model_suffixes",
    "Slot",
    "OrtConfig",
    "TorchConfig",
    "TrtConfig",
    "batch_shape",
    "check_batch",
]


# --- settings: frozen, keyword-only, separate from the objects that own resources -------------

@dataclass(frozen=True, kw_only=True)
class OrtConfig:
    """ONNX Runtime settings.

    ``provider``: ``"cpu"`` (CPUExecutionProvider), ``"cuda"`` (CUDAExecutionProvider, I/O binding)
    or ``"tensorrt"`` (TensorrtExecutionProvider, falling back to CUDA then CPU; needs
    onnxruntime-gpu built with TensorRT). ``intra_op_threads``: CPU threads per operator (0: the
    physical cores this process may use, :func:`hanrt.backends.onnxrt.available_cores`).
    ``spinning``: let idle intra-op threads spin-wait (``None``: hanrt's measured choice for the
    provider, see :func:`hanrt.backends.onnxrt.session_options`). ``memory_arena``: ONNX Runtime's
    CPU memory arena (``None``: hanrt's measured choice). ``io_binding``: on GPU providers, bind the output on the device and copy it
    back once per batch. ``trt_fp16``/``trt_cache_dir``: TensorRT EP options.
    """

    provider: Literal["cpu", "cuda", "tensorrt"] = "cpu"
    device_id: int = 0
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    spinning: bool | None = None
    memory_arena: bool | None = None
    io_binding: bool = True
    trt_fp16: bool = False
    trt_cache_dir: str = ""
    log_severity: int = 3


@dataclass(frozen=True, kw_only=True)
class TorchConfig:
    """PyTorch backend settings. ``device``: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. ``fp16``: run the
    network in half precision (CUDA only; the layer attention's energy is kept in FP32 by the model
    code where it matters). ``threads``: ``torch.set_num_threads`` for CPU (0: leave as is)."""

    device: str = "cpu"
    fp16: bool = False
    threads: int = 0


@dataclass(frozen=True, kw_only=True)
class TrtConfig:
    """TensorRT backend settings (:class:`hanrt.backends.tensorrt.TensorRTBackend`).

    ``device_id``: CUDA device (made current on every thread that calls the backend). ``slots``:
    pinned in/out buffer sets, each with its own execution context (two or more overlap copies with
    compute); all contexts share the engine's optimization profile for the tile shape (TensorRT >= 10),
    so any engine runs any number of slots, each costing one context's activation memory.
    ``check_fingerprint``: refuse an engine whose sidecar does not match this GPU/TensorRT
    (:class:`~hanrt.errors.EngineMismatchError`). ``memory``: ``auto`` (mapped on integrated GPUs
    such as Jetson, copy elsewhere), ``copy`` (pinned host + device buffers, async copies) or
    ``mapped`` (zero-copy pinned host memory the GPU accesses directly).
    """

    device_id: int = 0
    slots: int = 2
    check_fingerprint: bool = True
    memory: Literal["auto", "copy", "mapped"] = "auto"

    def __post_init__(self) -> None:
        if self.memory not in ("auto", "copy", "mapped"):
            raise UsageError(f"TensorRT memory mode must be auto, copy or mapped, got {self.memory!r}.")
        if self.slots < 1:
            raise UsageError(f"TensorRT slots must be >= 1, got {self.slots}.")
        if self.device_id < 0:
            raise UsageError(f"CUDA device must be >= 0, got {self.device_id}.")


# --- registration: one spec per backend (hanrt.plugins, entry-point group hanrt.backends) ---------

@dataclass(frozen=True)
class FileKind:
    """A kind of model file: ``name`` (``"onnx"``), ``label`` for messages (``"an ONNX graph"``), the
    file ``suffixes`` (lower case, with the dot) and, optionally, ``make``: how to make such a file
    from another kind's, ``{"torch": "export it first (hanrt export --checkpoint {file} ...)"}``."""

    name: str
    label: str
    suffixes: tuple[str, ...]
    make: tuple[tuple[str, str], ...] = ()


ONNX = FileKind("onnx", "an ONNX graph", (".onnx",),
                make=(("torch", "export it first (hanrt export --checkpoint {file} --output model.onnx)"),))
ENGINE = FileKind("engine", "a TensorRT engine", (".plan", ".engine", ".trt"),
                  make=(("onnx", "build an engine on this GPU first (hanrt build {file} --tile HxW --batch N) and "
                                 "pass the .plan"),))
CHECKPOINT = FileKind("torch", "a PyTorch checkpoint", (".pt", ".pth"))
#: Not a file: the model is a name on servers (``--server``); a file's stem stands for it.
REMOTE = FileKind("remote", "a model on servers", ())
#: The file kinds hanrt itself knows (a plugin's spec may bring more).
FILE_KINDS = (ONNX, ENGINE, CHECKPOINT)


def model_suffixes(kinds: tuple[FileKind, ...] = FILE_KINDS) -> tuple[str, ...]:
    """Every model file suffix of ``kinds`` (lower case, with the dot)."""
    return tuple(s for k in kinds for s in k.suffixes)


def installed(module: str) -> bool:
    """Whether ``module`` could be imported (without importing it): for probes."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that is not a package; a blocked import
        return False


@dataclass(frozen=True)
class Probe:
    """A backend's answer to "could you run here?": ``ok`` and, either way, ``why`` in words
    (the reason ``auto`` states when it picks it, or what is missing and how to install it)."""

    ok: bool
    why: str


@dataclass(frozen=True, kw_only=True)
class OpenOptions:
    """What a caller may ask of any backend; each backend reads the fields it has a use for.
    ``device_id``: GPU; ``threads``: CPU threads (0: the backend's default); ``fp16``: half precision
    where the backend chooses it at run time; ``slots``: buffer sets in flight; ``servers``: for
    remote backends (``HOST:PORT``)."""

    device_id: int = 0
    threads: int = 0
    fp16: bool = False
    slots: int = 2
    servers: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class BackendSpec:
    """One backend, registered as an entry point of group ``hanrt.backends`` (DESIGN.md).

    ``name``: the ``--backend`` value. ``extra``: the pip extra that installs what it needs.
    ``kinds``: the model files it runs (:class:`FileKind`; :data:`REMOTE` for a model on servers).
    ``probe()``: cheap, loads no model: can it run here, and why (not)? ``open(model, options)``:
    the opened :class:`Backend`. ``auto``: whether ``--backend auto`` may pick it (walked in
    ``priority`` order, lower first; the first whose probe answers yes wins). ``summary``: one line
    for the documentation. The module holding a spec must import only the standard library, numpy
    and hanrt at module level (its heavy packages inside ``open``/``probe``): ``auto`` loads every
    spec to see which run a file.
    """

    name: str
    extra: str
    kinds: tuple[FileKind, ...]
    probe: Callable[[], Probe]
    open: Callable[[str | os.PathLike, OpenOptions], "Backend"]
    auto: bool = True
    priority: int = 50
    summary: str = ""

    def runs(self, kind: FileKind) -> bool:
        return any(k.name == kind.name for k in self.kinds)

    @property
    def remote(self) -> bool:
        return any(k.name == REMOTE.name for k in self.kinds)


# --- helpers --------------------------------------------------------------------------------

def batch_shape(info: ModelInfo, batch: int, h: int, w: int, *, output: bool = False) -> tuple[int, int, int, int]:
    """Shape of an input (or, with ``output=True``, output) batch of ``h x w`` tiles."""
    if output:
        h, w = h * info.scale, w * info.scale
    if info.layout == "NCHW":
        return (batch, info.n_colors, h, w)
    return (batch, h, w, info.n_colors)


def check_batch(info: ModelInfo, batch: np.ndarray, *, source: str = "backend") -> None:
    """Raise :class:`UsageError` unless ``batch`` has the dtype and layout ``info`` asks for."""
    want = np.dtype(info.input_dtype)
    if not isinstance(batch, np.ndarray):
        raise UsageError(f"{source}: input must be a numpy array, got {type(batch).__name__}.")
    if batch.dtype != want:
        raise UsageError(f"{source}: input dtype must be {want} ({info.layout}), got {batch.dtype}.")
    if batch.ndim != 4:
        raise UsageError(f"{source}: input must be a 4-D {info.layout} batch, got shape {batch.shape}.")
    c = batch.shape[1] if info.layout == "NCHW" else batch.shape[3]
    if c != info.n_colors:
        raise UsageError(
            f"{source}: input must have {info.n_colors} channels in {info.layout} layout, got shape {batch.shape}."
        )
    h, w = (batch.shape[2], batch.shape[3]) if info.layout == "NCHW" else (batch.shape[1], batch.shape[2])
    if batch.shape[0] < 1 or h < info.min_tile or w < info.min_tile or h % info.tile_multiple or w % info.tile_multiple:
        raise ModelError(
            f"{source}: the model accepts sides >= {info.min_tile} in multiples of {info.tile_multiple} "
            f"and batches >= 1, got shape {batch.shape}."
        )


# --- protocol -------------------------------------------------------------------------------

@dataclass(eq=False)
class Slot:
    """One set of host buffers for the async protocol (mutable; owned by the backend that made it).

    ``input``: ``batch_shape(info, batch, tile_h, tile_w)`` host buffer the caller writes tiles
    into (pinned memory on GPU backends). ``output``: the backend's output buffer or ``None`` (the
    synchronous default keeps ``run``'s result in ``result``). ``n``: tiles submitted. ``handle``:
    backend-specific (stream, device buffers, events).
    """

    index: int
    input: np.ndarray
    output: np.ndarray | None = None
    n: int = 0
    pending: bool = False
    result: np.ndarray | None = None
    handle: Any = None


class Backend(abc.ABC):
    """Base class of every backend (see the module docstring for the contract)."""

    #: The name used by ``--backend``: its :class:`BackendSpec`'s name.
    name: str = "backend"
    info: ModelInfo
    fixed_tile_shape: tuple[int, int] | None = None
    max_batch: int | None = None
    #: Batches in flight the caller should keep at least (a remote backend asks for more).
    min_slots: int = 1
    #: Measured seconds per tile size (:class:`hanrt.tiling.TileCost`) that ``tile="auto"`` plans
    #: with on backends that take any shape; ``None``: the CPU table.
    tile_cost: Any = None

    @abc.abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Upscale one host batch (layout per ``info``); see the module docstring for ownership."""

    def close(self) -> None:
        """Release resources (idempotent)."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        """One line for logs: backend name and what it runs on."""
        return self.name

    def plan_tiles(self, height: int, width: int, *, tile: int | None, margin: int,
                   batch: int) -> "tuple[TilePlan, int, int] | None":
        """Tiles for a ``height x width`` input (pixels) when this backend runs fixed shapes only:
        ``(plan, tiles per slot, smallest batch it accepts)``; ``None`` when any shape runs (the
        caller plans). Default: one fixed tile shape (``fixed_tile_shape``, else the graph's static
        ``info.fixed_tile``) or none; a backend with several shapes (the TensorRT engine's profiles)
        plans within them."""
        info = self.info
        fixed = self.fixed_tile_shape
        if fixed is None and info.fixed_tile:  # a graph with static height and width (ModelInfo.fixed_tile)
            fixed = (info.fixed_tile, info.fixed_tile)
        if fixed is None:
            return None
        from ..tiling import plan_tiles  # not at import: `hanrt --help` needs no tiling

        plan = plan_tiles(height, width, tile=fixed, margin=margin, scale=info.scale, fixed=True,
                          min_tile=info.min_tile, tile_multiple=info.tile_multiple)
        return plan, min(batch, plan.count), 1

    # -- async slots: synchronous default --------------------------------------------------
    def make_slots(self, count: int, batch: int, tile_h: int, tile_w: int) -> list[Slot]:
        """Allocate ``count`` slots of ``batch`` tiles of ``tile_h x tile_w`` input pixels."""
        if count < 1 or batch < 1:
            raise UsageError(f"need >= 1 slot of >= 1 tile, got {count} slot(s) of {batch}.")
        if self.max_batch is not None and batch > self.max_batch:
            raise UsageError(f"{self.name}: batch {batch} exceeds this backend's maximum {self.max_batch}.")
        shape = batch_shape(self.info, batch, tile_h, tile_w)
        return [Slot(i, np.empty(shape, dtype=self.info.input_dtype)) for i in range(count)]

    def submit(self, slot: Slot, n: int) -> None:
        """Start work on the first ``n`` tiles of ``slot`` (default: run now, synchronously)."""
        if slot.pending:
            raise UsageError(f"slot {slot.index} was submitted twice without wait().")
        if not 1 <= n <= slot.input.shape[0]:
            raise UsageError(f"slot {slot.index}: n must be 1..{slot.input.shape[0]}, got {n}.")
        slot.n = n
        slot.result = self.run(slot.input[:n])
        slot.pending = True

    def wait(self, slot: Slot) -> np.ndarray:
        """Block until ``slot``'s work is done; return its output batch (owned by the slot)."""
        if not slot.pending:
            raise UsageError(f"slot {slot.index}: wait() without submit().")
        slot.pending = False
        assert slot.result is not None
        return slot.result

    def release_slots(self, slots: list[Slot]) -> None:
        """Free the slots' buffers (default: drop references)."""
        for s in slots:
            s.result = None
            s.pending = False

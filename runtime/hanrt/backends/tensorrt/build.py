"""Every call into the ``tensorrt`` Python package: target query, engine build, engine load.

Small on purpose: the logic around it (shapes, fingerprint, cache, lock, sidecar, refusal) is in
:mod:`.cache` and :mod:`.profiles` and tested on the CPU. **This module has not yet run on a GPU** (no machine
available to the project has TensorRT); it follows the documented TensorRT 10.x and 11.x Python
APIs: a strongly typed network (``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` on 10.x, where
it must be asked for; on 11.x strong typing is always on and the flag is deprecated), the
ONNX parser, one optimization profile per tile shape (shared by every execution context),
``builder_optimization_level``, a workspace memory-pool cap, a persistent timing cache per
TensorRT version and GPU, one process-wide logger and an ``IProgressMonitor``.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import BackendError, ModelError
from ...model_info import ModelInfo
from . import cuda as _cuda
from .cache import BuildOptions, BuiltPlan, Target, file_lock, timing_cache_file, write_bytes_atomic

log = logging.getLogger(__name__)

__all__ = ["trt", "logger", "running_target", "build_plan", "load_engine", "network_io", "ProgressFn"]

#: progress(phase, step, steps): called from TensorRT's builder threads.
ProgressFn = Callable[[str, int, int], None]


def trt() -> Any:
    """The ``tensorrt`` module, or MissingDependencyError naming the extra (JetPack on Jetson)."""
    from ...errors import require

    return require("tensorrt", extra="trt", purpose="TensorRT engines", hint=INSTALL_HINT)


#: How TensorRT gets installed besides the extra (the errors that ask for it add this).
INSTALL_HINT = ("'hanrt[trt]' is 'hanrt[trt-cu12]' (TensorRT for CUDA 12, NVIDIA driver R535 or newer); "
                "'hanrt[trt-cu13]' is TensorRT for CUDA 13 (driver R580 or newer). On Jetson, TensorRT comes "
                "with JetPack (apt package python3-libnvinfer); add cuda-python with pip (JetPack 6: "
                "pip install 'cuda-python==12.6.2.post1').")


_LOGGER: Any = None
_LOGGER_LOCK = threading.Lock()
_LEVELS = {"INTERNAL_ERROR": logging.ERROR, "ERROR": logging.ERROR, "WARNING": logging.WARNING}


def logger() -> Any:
    """The one TensorRT ``ILogger`` of the process, forwarding to :mod:`logging` (made on first use).

    TensorRT keeps a single process-wide logger: the first Builder/Runtime's logger is the one it
    uses, and a later one that differs is reported ("The logger passed into createInferRuntime
    differs from one already provided", TensorRT issue #1475), while the Python binding ties each
    logger's life to its own Builder/Runtime only -- after a build the global pointer could dangle
    while an engine lives. Like NVIDIA's samples, every Builder, OnnxParser and Runtime here gets
    this one module-level logger, which lives as long as the process.
    """
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is None:
            t = trt()
            levels = {getattr(t.ILogger, k): v for k, v in _LEVELS.items() if hasattr(t.ILogger, k)}

            class Logger(t.ILogger):
                def __init__(self) -> None:
                    t.ILogger.__init__(self)

                def log(self, severity: Any, msg: str) -> None:
                    log.log(levels.get(severity, logging.DEBUG), "TensorRT: %s", msg)

            _LOGGER = Logger()
        return _LOGGER


def running_target(device: int = 0) -> Target:
    """TensorRT version and the GPU (name, compute capability) of CUDA device ``device``."""
    t = trt()
    name, cc, _ = _cuda.device_properties(device)
    return Target(str(t.__version__), name, cc)


def _progress_monitor(progress: ProgressFn) -> Any:
    t = trt()
    if not hasattr(t, "IProgressMonitor"):
        return None

    class Monitor(t.IProgressMonitor):
        def __init__(self) -> None:
            t.IProgressMonitor.__init__(self)
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.steps[phase_name] = int(num_steps)
            progress(phase_name, 0, int(num_steps))

        def step_complete(self, phase_name: str, step: int) -> bool:
            progress(phase_name, int(step) + 1, self.steps.get(phase_name, 0))
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            n = self.steps.pop(phase_name, 0)
            progress(phase_name, n, n)

    return Monitor()


def _network_flags(t: Any) -> int:
    """``create_network`` flags for a strongly typed network.

    TensorRT 10.x: ``STRONGLY_TYPED`` (value 1) must be asked for. 11.x: strong typing is always on;
    the flag is still there but deprecated (value 0), so nothing is passed.
    """
    if _major(t) >= 11:
        return 0
    flag = getattr(getattr(t, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def _major(t: Any) -> int:
    try:
        return int(str(t.__version__).split(".")[0])
    except (AttributeError, ValueError):
        return 10


def build_plan(onnx_path: Path, info: ModelInfo, options: BuildOptions, *,
               progress: ProgressFn | None = None, device: int | None = None,
               target: Target | None = None) -> BuiltPlan:
    """Parse ``onnx_path`` into a strongly typed network and build a serialized plan on CUDA device
    ``device`` (made current with ``cudaSetDevice`` first; ``None``: the current device).

    ``target``: the TensorRT/GPU this runs on (``None``: asked); it names the timing cache file
    (:func:`~hanrt.backends.tensorrt.cache.timing_cache_file` of ``options.timing_cache``). The plan is
    not deserialized here: the I/O description comes from the parsed network, and the Builder,
    network and parser are released before returning (an 8 GB Jetson has no memory for two copies).
    """
    t = trt()
    if device is not None:
        _cuda.set_device(int(device))
    lg = logger()
    builder = t.Builder(lg)
    network = builder.create_network(_network_flags(t))
    parser = t.OnnxParser(network, lg)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT's ONNX parser refused {onnx_path.name}: {errs}")
    io = tuple(network_io(t, network, info))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(t.MemoryPoolType.WORKSPACE, int(options.workspace))
    config.builder_optimization_level = int(options.opt_level)
    monitor = _progress_monitor(progress) if progress else None
    if monitor is not None:
        config.progress_monitor = monitor
    inp = network.get_input(0)
    for prof in options.profiles:  # each once: execution contexts share profiles (TensorRT >= 10)
        p = builder.create_optimization_profile()
        s = prof.input_shapes(info)
        p.set_shape(inp.name, s["min"], s["opt"], s["max"])
        if config.add_optimization_profile(p) < 0:
            raise BackendError(f"TensorRT refused optimization profile {prof.describe()} for input {inp.name!r} "
                               f"(shapes {s['min']} / {s['opt']} / {s['max']}; see the log with -vv).")
    cache_path = None
    if options.timing_cache:
        if target is None:
            target = running_target(_cuda.current_device() if device is None else int(device))
        cache_path = timing_cache_file(options.timing_cache, target)
    loaded = _use_timing_cache(config, cache_path)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError(f"TensorRT could not build an engine from {onnx_path.name} (see the log with -vv).")
    data = bytes(memoryview(plan))
    del plan, parser, network
    if cache_path is not None:
        _save_timing_cache(config, cache_path, loaded)
    del config, builder, monitor
    gc.collect()  # TensorRT objects hold native memory: free it before the caller loads anything
    return BuiltPlan(data, io)


def _lock(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _use_timing_cache(config: Any, path: Path | None) -> bytes:
    """Give ``config`` the timing cache at ``path`` (read under its lock), loaded strictly.

    A file TensorRT refuses (``set_timing_cache`` returns False: another TensorRT or GPU wrote it,
    or it is damaged) is replaced by an empty cache, with a warning; it is overwritten after the
    build. Returns the bytes loaded (``b""``: none), so that the save can tell whether another
    build wrote the file meanwhile.
    """
    blob = b""
    if path is not None and path.is_file():
        with file_lock(_lock(path)):
            blob = path.read_bytes()
    cache = config.create_timing_cache(blob)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return blob
    if blob:
        log.warning("timing cache %s does not match this TensorRT and GPU (or is damaged): building "
                    "without it; it will be replaced", path)
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise BackendError("TensorRT refused an empty timing cache (see the log with -vv).")
    return b""


def _save_timing_cache(config: Any, path: Path, loaded: bytes) -> None:
    """Write the build's timing cache to ``path`` (atomically, under its lock), first merging what
    another build wrote there since ours read it."""
    ours = config.get_timing_cache()
    if ours is None:
        return
    with file_lock(_lock(path)):
        current = path.read_bytes() if path.is_file() else b""
        if current and current != loaded:
            theirs = config.create_timing_cache(current)
            if theirs is None or not ours.combine(theirs, False):
                log.warning("timing cache %s was rewritten during this build and cannot be merged "
                            "(another TensorRT or GPU?); keeping this build's", path)
        write_bytes_atomic(path, bytes(memoryview(ours.serialize())))


def load_engine(data: bytes) -> tuple[Any, Any]:
    """Deserialize a plan (bytes): returns ``(runtime, engine)``; keep the runtime alive as long as
    the engine. BackendError if TensorRT refuses the plan."""
    t = trt()
    runtime = t.Runtime(logger())
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise BackendError("TensorRT could not deserialize the engine (built by another TensorRT or GPU?).")
    return runtime, engine


def network_io(t: Any, network: Any, info: ModelInfo) -> list[dict[str, Any]]:
    """Name, mode, dtype, layout and shape (``-1``: dynamic) of every input and output of a parsed
    network (for the sidecar): a strongly typed network's I/O is the engine's."""
    out = []
    for mode, n, get in (("input", network.num_inputs, network.get_input),
                         ("output", network.num_outputs, network.get_output)):
        for i in range(n):
            tensor = get(i)
            out.append({"name": tensor.name, "mode": mode, "dtype": t.nptype(tensor.dtype).__name__,
                        "layout": info.layout, "shape": [int(d) for d in tensor.shape]})
    return out

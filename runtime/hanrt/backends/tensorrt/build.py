"""Every call into the ``tensorrt`` Python package: target query, engine build, engine load.

Small on purpose: the logic around it (shapes, fingerprint, cache, lock, sidecar, refusal) is in
:mod:`.cache` and :mod:`.profiles` and tested on the CPU. **This module has not yet run on a GPU** (no machine
available to the project has TensorRT); it follows the documented TensorRT 10.x and 11.x Python
APIs: a strongly typed network (``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` on 10.x, where
it must be asked for; on 11.x strong typing is always on and the flag is ignored or absent), the
ONNX parser, one optimization profile per tile shape and slot, ``builder_optimization_level``, a
workspace memory-pool cap, a persistent timing cache and an ``IProgressMonitor``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import BackendError, ModelError
from ...model_info import ModelInfo
from . import cuda as _cuda
from .cache import BuildOptions, BuiltPlan, Target, file_lock, write_bytes_atomic

log = logging.getLogger(__name__)

__all__ = ["trt", "running_target", "build_plan", "load_engine", "io_tensors", "ProgressFn", "env_timing_cache"]

#: progress(phase, step, steps): called from TensorRT's builder threads.
ProgressFn = Callable[[str, int, int], None]


def trt() -> Any:
    """The ``tensorrt`` module, or MissingDependencyError naming the extra (JetPack on Jetson)."""
    from ...errors import require

    return require("tensorrt", extra="trt", purpose="TensorRT engines")


class _Logger:
    """A TensorRT ILogger forwarding to :mod:`logging` (built lazily: needs tensorrt)."""

    @staticmethod
    def make() -> Any:
        t = trt()

        class L(t.ILogger):
            def __init__(self) -> None:
                t.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                level = {t.ILogger.INTERNAL_ERROR: logging.ERROR, t.ILogger.ERROR: logging.ERROR,
                         t.ILogger.WARNING: logging.WARNING, t.ILogger.INFO: logging.DEBUG}.get(severity, logging.DEBUG)
                log.log(level, "TensorRT: %s", msg)

        return L()


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
    flag = getattr(getattr(t, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)  # absent on 11.x: always strongly typed


def build_plan(onnx_path: Path, info: ModelInfo, options: BuildOptions, *,
               progress: ProgressFn | None = None, device: int | None = None) -> BuiltPlan:
    """Parse ``onnx_path`` into a strongly typed network and build a serialized plan on CUDA device
    ``device`` (made current with ``cudaSetDevice`` first; ``None``: the current device)."""
    t = trt()
    if device is not None:
        rt = _cuda.cudart()
        _cuda.check(rt.cudaSetDevice(int(device)), f"cudaSetDevice({device})", rt)
    logger = _Logger.make()
    builder = t.Builder(logger)
    network = builder.create_network(_network_flags(t))
    parser = t.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT's ONNX parser refused {onnx_path.name}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(t.MemoryPoolType.WORKSPACE, int(options.workspace))
    config.builder_optimization_level = int(options.opt_level)
    monitor = _progress_monitor(progress) if progress else None
    if monitor is not None:
        config.progress_monitor = monitor
    inp = network.get_input(0)
    for prof in options.profiles:  # all of them: replicated per slot by hanrt build --slots
        p = builder.create_optimization_profile()
        s = prof.input_shapes(info)
        p.set_shape(inp.name, s["min"], s["opt"], s["max"])
        config.add_optimization_profile(p)
    cache_path = Path(options.timing_cache) if options.timing_cache else None
    blob = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    cache = config.create_timing_cache(blob)
    config.set_timing_cache(cache, ignore_mismatch=True)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError(f"TensorRT could not build an engine from {onnx_path.name} (see the log with -vv).")
    data = bytes(memoryview(plan))
    if cache_path is not None:
        with file_lock(cache_path.with_name(cache_path.name + ".lock")):
            write_bytes_atomic(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    _runtime, engine = load_engine(data)
    return BuiltPlan(data, tuple(io_tensors(engine, info)))


def load_engine(data: bytes) -> tuple[Any, Any]:
    """Deserialize a plan (bytes): returns ``(runtime, engine)``; keep the runtime alive as long as
    the engine. BackendError if TensorRT refuses the plan."""
    t = trt()
    runtime = t.Runtime(_Logger.make())
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise BackendError("TensorRT could not deserialize the engine (built by another TensorRT or GPU?).")
    return runtime, engine


def io_tensors(engine: Any, info: ModelInfo) -> list[dict[str, Any]]:
    """Name, mode, dtype and layout of every I/O tensor of ``engine`` (for the sidecar)."""
    t = trt()
    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = "input" if engine.get_tensor_mode(name) == t.TensorIOMode.INPUT else "output"
        dtype = t.nptype(engine.get_tensor_dtype(name)).__name__
        out.append({"name": name, "mode": mode, "dtype": dtype, "layout": info.layout,
                    "shape": [int(d) for d in engine.get_tensor_shape(name)]})
    return out


def env_timing_cache() -> str | None:
    """``$HANRT_TIMING_CACHE`` if set (a default for ``hanrt build --timing-cache``)."""
    return os.environ.get("HANRT_TIMING_CACHE") or None


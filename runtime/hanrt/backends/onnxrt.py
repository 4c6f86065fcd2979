"""ONNX Runtime backend: the CPU execution provider (the embedded default) and, with
onnxruntime-gpu, the CUDA and TensorRT execution providers with I/O binding.

Verified here: the CPU provider (tests compare it with PyTorch). **Unverified on hardware:** the
CUDA/TensorRT provider path (:meth:`OnnxRuntimeBackend._run_bound`) could not run on the CPU-only
development machine; it is a few lines of documented ORT API (``io_binding``, ``bind_cpu_input``,
``bind_output(name, "cuda")``, ``run_with_iobinding``, ``copy_outputs_to_cpu``).

Needs ``onnxruntime`` (``pip install 'hanrt[cpu]'``) or ``onnxruntime-gpu`` (``'hanrt[gpu]'``).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from ..errors import BackendError, InputError, MissingDependencyError, ModelError, require
from ..model_info import ModelInfo, read_model_info
from ..tiling import CPU_TILE_COST, GPU_TILE_COST
from .base import Backend, OrtConfig, check_batch

__all__ = ["OnnxRuntimeBackend", "available_providers", "available_cores", "session_options"]

log = logging.getLogger(__name__)

_PROVIDER = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def _cgroup_cpu_limit() -> float | None:
    """CPUs allowed by the cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None."""
    for quota_file, period_file in (("/sys/fs/cgroup/cpu.max", None),
                                    ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")):
        try:
            text = Path(quota_file).read_text().split()
            if period_file is None:
                quota, period = text[0], text[1]
            else:
                quota, period = text[0], Path(period_file).read_text().strip()
        except (OSError, IndexError):
            continue
        if quota in ("max", "-1"):
            return None
        try:
            q, per = float(quota), float(period)
        except ValueError:
            return None
        return q / per if q > 0 and per > 0 else None
    return None


def available_cores() -> int:
    """Physical cores this process may run on: the CPUs in its affinity mask
    (``os.sched_getaffinity``), counting SMT siblings once (``/sys/devices/system/cpu/cpuN/topology``),
    capped by the cgroup CPU quota (rounded up), at least 1."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = list(range(os.cpu_count() or 1))
    cores: set[str] = set()
    for c in cpus:
        try:
            cores.add(Path(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list").read_text().strip())
        except OSError:
            cores.add(str(c))
    n = len(cores) or 1
    quota = _cgroup_cpu_limit()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def session_options(ort, config: OrtConfig):  # type: ignore[no-untyped-def]
    """The ``SessionOptions`` hanrt gives ONNX Runtime for ``config``. Each choice was measured with
    ``python -m hanrt_bench.tile_cost --variant ...`` (bundled model, 2-core AMD EPYC; README
    "ONNX Runtime settings"):

    - intra-op threads: ``config.intra_op_threads`` or :func:`available_cores` (ORT's own default
      counts every core of the machine, not the ones this process may use);
    - inter-op threads 1, sequential execution: HAN is one chain of operators;
    - spinning (:data:`DEFAULT_SPINNING`): off on the CPU provider. Idle threads spinning between
      operators gained ~25% on a lightly loaded machine but cost 1.5-1.9x when other processes (or
      the pipeline's decode and encode threads) wanted the same cores; on for GPU providers;
    - memory arena (:data:`DEFAULT_ARENA`): on; off ran 1.6-3x slower;
    - memory patterns (:data:`DEFAULT_MEM_PATTERN`): off on the CPU provider: 35% less working
      memory (137 vs 213 MB for a 128x128 tile), no measurable speed difference, so larger tiles fit
      the same memory budget;
    - graph optimisation level ALL: includes the NCHWc (channels-blocked) layout transformer, which
      ran faster than EXTENDED (plain NCHW) at every tile size measured (7% at 128, 84% at 64).
    """
    cpu = config.provider == "cpu"
    so = ort.SessionOptions()
    so.log_severity_level = config.log_severity
    so.intra_op_num_threads = config.intra_op_threads or available_cores()
    if config.inter_op_threads:
        so.inter_op_num_threads = config.inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    spin = (DEFAULT_SPINNING if cpu else True) if config.spinning is None else config.spinning
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.enable_cpu_mem_arena = DEFAULT_ARENA if config.memory_arena is None else config.memory_arena
    so.enable_mem_pattern = DEFAULT_MEM_PATTERN if cpu else True
    return so


#: Measured defaults for the CPU provider (see :func:`session_options`).
DEFAULT_SPINNING = False
DEFAULT_ARENA = True
DEFAULT_MEM_PATTERN = False


def available_providers() -> list[str]:
    """ONNX Runtime's available execution providers ([] when onnxruntime is not installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


class OnnxRuntimeBackend(Backend):
    """Run an ONNX HAN graph through ONNX Runtime (see :mod:`hanrt.backends.base` for the contract).

    ``run`` returns a new array owned by the caller (ORT allocates it per call).
    """

    def __init__(self, model: str | os.PathLike, *, config: OrtConfig = OrtConfig(), info: ModelInfo | None = None) -> None:
        path = Path(model)
        if path.suffix.lower() != ".onnx":
            raise ModelError(f"ONNX Runtime runs .onnx graphs, got {str(path)!r}.")
        self.info = info if info is not None else read_model_info(path)
        self.config = config
        ort = require("onnxruntime", extra="gpu" if config.provider != "cpu" else "cpu",
                      purpose="the ONNX Runtime backend")
        avail = ort.get_available_providers()
        want = _PROVIDER[config.provider]
        if want not in avail:
            raise MissingDependencyError(
                f"ONNX Runtime's {want} is not available here (available: {', '.join(avail)}). "
                f"Install onnxruntime-gpu: pip install 'hanrt[gpu]' (and uninstall plain onnxruntime)."
            )
        so = session_options(ort, config)
        providers: list = []
        if config.provider == "tensorrt":
            opts = {"device_id": config.device_id, "trt_fp16_enable": config.trt_fp16}
            if config.trt_cache_dir:
                opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=config.trt_cache_dir)
            providers.append(("TensorrtExecutionProvider", opts))
        if config.provider in ("tensorrt", "cuda"):
            providers.append(("CUDAExecutionProvider", {"device_id": config.device_id}))
        providers.append("CPUExecutionProvider")
        try:
            self._sess = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            if not path.is_file():
                raise InputError(f"model {str(path)!r} does not exist.") from None
            raise ModelError(f"ONNX Runtime cannot load {str(path)!r}: {exc}") from None
        self._in = self._sess.get_inputs()[0].name
        self._out = self._sess.get_outputs()[0].name
        self._gpu = config.provider != "cpu"
        self.tile_cost = GPU_TILE_COST if self._gpu else CPU_TILE_COST
        self.name = "ort-cpu" if not self._gpu else "ort-cuda"
        self._closed = False
        log.debug("ONNX Runtime session on %s for %s", self._sess.get_providers(), path.name)

    def describe(self) -> str:
        return f"{self.name} (ONNX Runtime {', '.join(self._sess.get_providers())})"

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self._closed:
            raise BackendError("the ONNX Runtime backend was closed.")
        check_batch(self.info, batch, source=self.name)
        batch = np.ascontiguousarray(batch)
        try:
            if self._gpu and self.config.io_binding:
                return self._run_bound(batch)
            return self._sess.run([self._out], {self._in: batch})[0]
        except Exception as exc:
            raise BackendError(f"ONNX Runtime failed on a {batch.shape} batch: {exc}") from exc

    def _run_bound(self, batch: np.ndarray) -> np.ndarray:
        """GPU providers: input copied once to the device, output allocated there, one copy back.
        Unverified on hardware (no GPU on the development machine)."""
        io = self._sess.io_binding()
        io.bind_cpu_input(self._in, batch)
        io.bind_output(self._out, "cuda", self.config.device_id)
        self._sess.run_with_iobinding(io)
        return io.copy_outputs_to_cpu()[0]

    def close(self) -> None:
        self._closed = True
        self._sess = None  # type: ignore[assignment]

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
import os
from pathlib import Path

import numpy as np

from ..errors import BackendError, InputError, MissingDependencyError, ModelError, UsageError, require
from ..model_info import ModelInfo, read_model_info
from .base import ONNX, Backend, BackendSpec, OpenOptions, OrtConfig, Probe, check_batch, installed

__all__ = ["OnnxRuntimeBackend", "available_providers", "ORT_CPU", "ORT_CUDA"]

log = logging.getLogger(__name__)

_PROVIDER = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


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
        so = ort.SessionOptions()
        so.log_severity_level = config.log_severity
        if config.intra_op_threads:
            so.intra_op_num_threads = config.intra_op_threads
        if config.inter_op_threads:
            so.inter_op_num_threads = config.inter_op_threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
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


# --- registration (entry points ort-cuda, ort-cpu in pyproject.toml) ---------------------------

def _probe_cuda() -> Probe:
    if not installed("onnxruntime"):
        return Probe(False, "ONNX Runtime is not installed (pip install 'hanrt[gpu]')")
    provs = available_providers()
    if "CUDAExecutionProvider" in provs:
        return Probe(True, "ONNX Runtime has the CUDA execution provider (onnxruntime-gpu); "
                           "for TensorRT, build an engine with hanrt build")
    return Probe(False, f"ONNX Runtime has no CUDA execution provider here (available: {', '.join(provs)})")


def _probe_cpu() -> Probe:
    if not installed("onnxruntime"):
        return Probe(False, "ONNX Runtime is not installed (pip install 'hanrt[cpu]', or 'hanrt[gpu]' on an NVIDIA GPU)")
    return Probe(True, "ONNX Runtime runs it on the CPU")


def _open(provider: str):
    def open_(model: str | os.PathLike, o: OpenOptions) -> Backend:
        if o.fp16 and provider == "cpu":
            raise UsageError("--fp16 needs a GPU backend; precision of an ONNX graph lives in the graph "
                             "(export an FP16 graph instead).")
        return OnnxRuntimeBackend(model, config=OrtConfig(provider=provider, device_id=o.device_id,
                                                          intra_op_threads=o.threads))
    return open_


ORT_CUDA = BackendSpec(name="ort-cuda", extra="gpu", kinds=(ONNX,), probe=_probe_cuda, open=_open("cuda"),
                       priority=20, summary="an .onnx graph on ONNX Runtime's CUDA provider")
ORT_CPU = BackendSpec(name="ort-cpu", extra="cpu", kinds=(ONNX,), probe=_probe_cpu, open=_open("cpu"),
                      priority=90, summary="an .onnx graph on ONNX Runtime's CPU provider")

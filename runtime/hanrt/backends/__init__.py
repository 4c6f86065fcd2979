"""Backend selection: ``auto | trt | ort-cuda | ort-cpu | torch | triton``.

Every backend module is imported lazily, so this package needs only numpy (tier 0):

- ``trt``: a TensorRT engine (``.plan``/``.engine`` with its ``.json`` sidecar) through
  :class:`hanrt.backends.tensorrt.TensorRTBackend` (``pip install 'hanrt[trt]'``; JetPack on Jetson).
- ``ort-cuda``: an ``.onnx`` graph on ONNX Runtime's CUDA provider (``'hanrt[gpu]'``).
- ``ort-cpu``: an ``.onnx`` graph on ONNX Runtime's CPU provider (``'hanrt[cpu]'``).
- ``torch``: a checkpoint (``.pt``) in PyTorch, CPU or CUDA (``'hanrt[export]'``); the reference.
- ``triton``: remote Triton Inference Servers (``--server HOST:PORT``), the model asked for by name
  (:mod:`hanrt.backends.triton`, ``'hanrt[triton]'``); :func:`choose_backend`'s ``auto`` never picks it
  (the Upscaler and the CLI take ``auto`` with servers given as ``triton``).

``auto`` picks from the model file and what is installed, and logs which backend it picked and
why (:func:`choose_backend` returns the same as data).
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import MissingDependencyError, ModelError, UsageError
from .base import Backend, OrtConfig, Slot, TorchConfig, TrtConfig

__all__ = [
    "BACKENDS",
    "Backend",
    "Slot",
    "Choice",
    "OrtConfig",
    "TorchConfig",
    "TrtConfig",
    "model_kind",
    "choose_backend",
    "open_backend",
]

log = logging.getLogger(__name__)

#: Every ``--backend`` name, ``auto`` first. The one list: the CLI's choices, :func:`choose_backend`'s
#: check and ``hanrt_bench``'s suite validation all read it.
BACKENDS = ("auto", "trt", "ort-cuda", "ort-cpu", "torch", "triton")
ENGINE_SUFFIXES = (".plan", ".engine", ".trt")


@dataclass(frozen=True)
class Choice:
    """The backend picked for a model and the reason, in words."""

    name: str
    reason: str


def model_kind(path: str | os.PathLike) -> str:
    """``"onnx"``, ``"engine"`` or ``"torch"`` from the file suffix; UsageError otherwise."""
    suf = Path(path).suffix.lower()
    if suf == ".onnx":
        return "onnx"
    if suf in ENGINE_SUFFIXES:
        return "engine"
    if suf in (".pt", ".pth"):
        return "torch"
    raise UsageError(
        f"cannot tell what {str(path)!r} is from its suffix: expected .onnx (ONNX graph), "
        f".plan/.engine (TensorRT engine) or .pt/.pth (PyTorch checkpoint)."
    )


def _ort_providers() -> list[str] | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return list(ort.get_available_providers())


def _torch_cuda() -> bool | None:
    try:
        import torch
    except ImportError:
        return None
    return bool(torch.cuda.is_available())


def choose_backend(
    model: str | os.PathLike,
    requested: str = "auto",
    *,
    ort_providers: list[str] | None | bool = False,
    torch_cuda: bool | None | str = "probe",
) -> Choice:
    """Decide which backend runs ``model``. ``ort_providers``/``torch_cuda`` override the probes
    (for tests: ``None`` means "not installed"); by default the installed packages are asked."""
    if requested not in BACKENDS:
        raise UsageError(f"unknown backend {requested!r}; choose one of {', '.join(BACKENDS)}.")
    if requested == "triton":  # the model is a name on the servers, not a local file
        return Choice("triton", "requested: the tiles go to Triton servers")
    kind = model_kind(model)
    name = Path(model).name
    if kind == "engine":
        if requested not in ("auto", "trt"):
            raise UsageError(f"{name} is a TensorRT engine: only --backend trt (or auto) runs it.")
        return Choice("trt", f"{name} is a TensorRT engine")
    if kind == "torch":
        if requested not in ("auto", "torch"):
            raise UsageError(
                f"{name} is a PyTorch checkpoint: --backend {requested} runs .onnx graphs. Export it "
                f"first (hanrt export --checkpoint {name} --output model.onnx) or use --backend torch."
            )
        cuda = _torch_cuda() if torch_cuda == "probe" else torch_cuda
        where = "CUDA" if cuda else "the CPU"
        return Choice("torch", f"{name} is a PyTorch checkpoint; PyTorch runs it on {where}")
    # an ONNX graph
    if requested == "trt":
        raise UsageError(
            f"the TensorRT backend runs engines, and {name} is an ONNX graph: build an engine on this "
            f"GPU first (hanrt build {name} --tile HxW --batch N) and pass the .plan, or use --backend ort-cuda."
        )
    if requested == "torch":
        raise UsageError(f"--backend torch runs PyTorch checkpoints (.pt), and {name} is an ONNX graph.")
    if requested in ("ort-cpu", "ort-cuda"):
        return Choice(requested, "requested")
    provs = _ort_providers() if ort_providers is False else ort_providers
    if provs is None:
        raise MissingDependencyError(
            f"no backend can run {name}: ONNX Runtime is not installed. Install it with "
            f"pip install 'hanrt[cpu]' (or 'hanrt[gpu]' on an NVIDIA GPU)."
        )
    if "CUDAExecutionProvider" in provs:
        return Choice("ort-cuda", "ONNX Runtime has the CUDA execution provider (onnxruntime-gpu); "
                      "for TensorRT, build an engine with hanrt build")
    return Choice("ort-cpu", "ONNX Runtime has no CUDA execution provider here (available: "
                  f"{', '.join(provs)}), so the CPU runs it")


def open_backend(
    model: str | os.PathLike,
    requested: str = "auto",
    *,
    device_id: int = 0,
    threads: int = 0,
    fp16: bool = False,
    slots: int = 2,
    servers: tuple[str, ...] = (),
) -> Backend:
    """Open the backend :func:`choose_backend` picks for ``model``; ``auto`` logs the choice.
    ``servers``: the Triton servers of ``requested="triton"`` (``model`` is then the model's name or
    a file whose stem is that name)."""
    choice = choose_backend(model, requested)
    if choice.name == "triton":
        from .triton import model_name, open_triton

        return open_triton(servers, model_name(model))
    if requested == "auto":
        log.info("backend: %s (%s)", choice.name, choice.reason)
    path = Path(model)
    if choice.name == "trt":
        return _open_trt(path, device_id=device_id, slots=slots)
    if choice.name == "torch":
        return _open_torch(path, device_id=device_id, threads=threads, fp16=fp16)
    from .onnxrt import OnnxRuntimeBackend

    provider = "cpu" if choice.name == "ort-cpu" else "cuda"
    if fp16 and provider == "cpu":
        raise UsageError("--fp16 needs a GPU backend; precision of an ONNX graph lives in the graph "
                         "(export an FP16 graph instead).")
    return OnnxRuntimeBackend(path, config=OrtConfig(provider=provider, device_id=device_id,
                                                     intra_op_threads=threads))


def _open_trt(path: Path, *, device_id: int, slots: int) -> Backend:
    if not path.is_file():
        raise ModelError(f"engine {str(path)!r} does not exist.")
    try:
        mod = importlib.import_module("hanrt.backends.tensorrt")
    except MissingDependencyError:
        raise
    except ImportError as exc:
        raise MissingDependencyError(
            f"the TensorRT backend cannot be loaded ({exc}). Install it with pip install 'hanrt[trt]' "
            f"(on Jetson, TensorRT comes with JetPack: apt package python3-libnvinfer)."
        ) from exc
    cls = getattr(mod, "TensorRTBackend", None)
    if cls is None:
        raise MissingDependencyError("this hanrt build has no TensorRT backend (hanrt.backends.tensorrt.TensorRTBackend).")
    return cls(str(path), config=TrtConfig(device_id=device_id, slots=slots))


def _open_torch(path: Path, *, device_id: int, threads: int, fp16: bool) -> Backend:
    from ..errors import require

    require("torch", extra="export", purpose="the PyTorch backend")
    mod = importlib.import_module("hanrt_export.torch_backend")  # lazy, by name (tier 2)
    cuda = _torch_cuda()
    device = f"cuda:{device_id}" if cuda else "cpu"
    if fp16 and not cuda:
        raise UsageError("--fp16 with the torch backend needs CUDA; PyTorch sees no CUDA GPU here.")
    return mod.TorchBackend(path, config=TorchConfig(device=device, fp16=fp16, threads=threads))

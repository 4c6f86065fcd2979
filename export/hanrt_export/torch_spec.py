"""The PyTorch backend's registration (entry point ``torch`` of group ``hanrt.backends``).

Imports no torch: ``auto`` loads every backend's spec to see which run a file, and only a
checkpoint's probe or an open imports PyTorch (:mod:`hanrt_export.torch_backend`).
"""

from __future__ import annotations

import os

from hanrt.backends.base import CHECKPOINT, Backend, BackendSpec, OpenOptions, Probe, TorchConfig, installed
from hanrt.errors import UsageError, require

__all__ = ["TORCH"]


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _probe() -> Probe:
    if not installed("torch"):
        return Probe(False, "PyTorch is not installed (pip install 'hanrt[export]')")
    return Probe(True, f"PyTorch runs it on {'CUDA' if _cuda() else 'the CPU'}")


def _open(model: str | os.PathLike, o: OpenOptions) -> Backend:
    require("torch", extra="export", purpose="the PyTorch backend")
    from .torch_backend import TorchBackend

    cuda = _cuda()
    if o.fp16 and not cuda:
        raise UsageError("--fp16 with the torch backend needs CUDA; PyTorch sees no CUDA GPU here.")
    device = f"cuda:{o.device_id}" if cuda else "cpu"
    return TorchBackend(model, config=TorchConfig(device=device, fp16=o.fp16, threads=o.threads))


TORCH = BackendSpec(name="torch", extra="export", kinds=(CHECKPOINT,), probe=_probe, open=_open, priority=50,
                    summary="a checkpoint (.pt) in PyTorch, CPU or CUDA; the reference")

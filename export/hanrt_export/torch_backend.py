"""The PyTorch backend: HAN in eager PyTorch behind hanrt's backend protocol.

It is the reference every other backend is compared with, and a GPU path wherever PyTorch has
CUDA (GPU machines without TensorRT included). CPU (float32), or CUDA in float32 or FP16.

Protocol: see :mod:`hanrt.backends.base`. ``info.io`` is ``"float"`` by default (float32 NCHW
0..255 in, float32 NCHW unclamped out), or ``"uint8"`` (uint8 NHWC in/out, clamped and rounded,
like a uint8 ONNX graph). ``run`` returns a new array owned by the caller. Not thread-safe.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from hanrt.backends.base import Backend, TorchConfig, check_batch
from hanrt.errors import BackendError, UsageError
from hanrt.model_info import ModelInfo

from . import __version__
from .han import HAN

__all__ = ["TorchBackend"]


class TorchBackend(Backend):
    """Run a HAN (a module, or a checkpoint path loaded strictly) in PyTorch.

    ``model``: a :class:`~hanrt_export.han.HAN` or a ``.pt`` checkpoint path. ``io``: the I/O kind
    to present (see the module docstring).
    """

    name = "torch"

    def __init__(
        self,
        model: HAN | str | os.PathLike,
        *,
        config: TorchConfig = TorchConfig(),
        io: Literal["float", "uint8"] = "float",
    ) -> None:
        sha = source = ""
        if isinstance(model, (str, os.PathLike)):
            from .checkpoint import load_checkpoint

            ck = load_checkpoint(model)
            model, sha, source = ck.model, ck.sha256, Path(model).name
        if not isinstance(model, HAN):
            raise UsageError(f"TorchBackend needs a HAN or a checkpoint path, got {type(model).__name__}.")
        self.config = config
        dev = torch.device(config.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UsageError("the torch backend was asked for CUDA, but PyTorch sees no CUDA GPU.")
        if config.fp16 and dev.type != "cuda":
            raise UsageError("FP16 in the torch backend needs CUDA (half precision on the CPU is slow and inexact).")
        if config.threads and dev.type == "cpu":
            torch.set_num_threads(config.threads)
        self._device = dev
        self._dtype = torch.float16 if config.fp16 else torch.float32
        # a copy: converting in place would change the caller's module (device, dtype)
        self._model = copy.deepcopy(model).eval().to(dev, self._dtype)
        cfg = model.config
        self.info = ModelInfo(
            scale=cfg.scale, io=io, n_colors=cfg.n_colors, value_range=(0.0, float(cfg.rgb_range)),
            precision="fp16" if config.fp16 else "fp32", hyperparameters=cfg.to_dict(),
            csam="conv2d" if model.csa.conv2d_form else "conv3d", source_sha256=sha, source=source,
            hanrt_version=__version__,
        )
        self._closed = False

    def describe(self) -> str:
        return f"torch ({self._device}, {'fp16' if self.config.fp16 else 'fp32'})"

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self._closed:
            raise BackendError("the torch backend was closed.")
        check_batch(self.info, batch, source="torch")
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self._device)
        if self.info.io == "uint8":
            x = x.permute(0, 3, 1, 2)
        try:
            with torch.inference_mode():
                y = self._model(x.to(self._dtype)).float()
        except RuntimeError as exc:  # CUDA OOM and friends
            raise BackendError(f"PyTorch failed on a {tuple(batch.shape)} batch: {exc}") from exc
        if self.info.io == "uint8":
            y = torch.round(torch.clamp(y, 0.0, 255.0)).to(torch.uint8).permute(0, 2, 3, 1)
        return y.cpu().numpy()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._model = None  # type: ignore[assignment]
            if self._device.type == "cuda":
                torch.cuda.empty_cache()

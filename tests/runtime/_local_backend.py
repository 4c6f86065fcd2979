"""A numpy test model whose output depends only on a known neighbourhood (no mock: real arithmetic).

``LocalBackend(radius=r, scale=s)``: each output pixel is the (2r+1)^2 box *sum* of the input around
its source pixel (zero padding at the image border, like a convolution), divided by (2r+1)^2, then
nearest-neighbour upscaled by s. Integer sums of 0..255 values are exact in float32, so tiled
inference with margin >= r must equal whole-image inference *exactly* -- a strict test of the
tiler's windows, margins and crops.
"""

from __future__ import annotations

import numpy as np

from hanrt.backends.base import Backend, check_batch
from hanrt.model_info import ModelInfo


class LocalBackend(Backend):
    name = "local"

    def __init__(self, *, radius: int = 2, scale: int = 4, io: str = "float") -> None:
        self.radius = radius
        self.info = ModelInfo(scale=scale, io=io)
        self.calls = 0

    def run(self, batch: np.ndarray) -> np.ndarray:
        check_batch(self.info, batch, source="local")
        self.calls += 1
        x = batch.astype(np.float32)
        if self.info.io == "uint8":
            x = x.transpose(0, 3, 1, 2)
        r = self.radius
        p = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)))
        acc = np.zeros_like(x)
        h, w = x.shape[2:]
        for dy in range(2 * r + 1):
            for dx in range(2 * r + 1):
                acc += p[:, :, dy:dy + h, dx:dx + w]
        y = acc / np.float32((2 * r + 1) ** 2)
        s = self.info.scale
        y = y.repeat(s, axis=2).repeat(s, axis=3)
        if self.info.io == "uint8":
            return np.rint(np.clip(y, 0, 255)).astype(np.uint8).transpose(0, 2, 3, 1)
        return y


class FailingBackend(LocalBackend):
    """``LocalBackend(radius=1)`` whose ``fail_call``-th call raises ``RuntimeError("device lost")``
    (a device failing mid-stream); every other call computes as usual."""

    def __init__(self, fail_call: int) -> None:
        super().__init__(radius=1)
        self.fail_call = fail_call

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.calls + 1 == self.fail_call:
            self.calls += 1
            raise RuntimeError("device lost")
        return super().run(batch)

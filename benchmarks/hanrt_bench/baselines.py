"""Methods measured in the same run, so every figure is a ratio on one machine.

Each method is a callable object ``run(image, timer) -> image`` on HxWx3 uint8 RGB arrays
(0..255) that times its own stages with a :class:`~hanrt_bench.latency.StageTimer`:

- ``torch-eager``: PyTorch eager on the whole image, how users run the official code.
- ``torch-chop``: the official test code's ``--chop``: the image is cut into four quadrants that
  overlap by ``shave`` (10) input pixels past the middle; a quadrant of at least ``min_size``
  (160,000) input pixels is cut again, recursively; the pieces are run one at a time and the
  non-overlapping parts pasted back.
- ``torch-tile``: a naive per-tile loop (Real-ESRGAN style): ``tile`` x ``tile`` input tiles, each
  widened by ``pad`` pixels of context where the image has them (edge tiles are ragged), one
  tile at a time, synchronous, the centre pasted.
- ``hanrt``: :class:`hanrt.upscaler.Upscaler` (tiled, batched, through a hanrt backend), timed by
  the Upscaler's own stages: ``prepare`` and ``gather`` (tiles into the backend's buffers) play
  the baselines' ``preprocess``; ``compute`` is host time in the backend (for asynchronous
  backends, time the host waited for the device); ``stitch`` and ``finish`` their ``stitch``.

torch is imported lazily (only by the torch methods); where it is missing they are skipped by
the caller with a message (a Jetson runtime-only install).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from .latency import StageTimer

log = logging.getLogger(__name__)

__all__ = [
    "Method",
    "TorchEager",
    "TorchChop",
    "TorchNaiveTile",
    "HanrtMethod",
    "chop_pieces",
    "TORCH_METHODS",
]


class Method(Protocol):
    """One way of upscaling: ``__call__(img HxWx3 uint8, timer) -> (sH)x(sW)x3 uint8`` (a new array)."""

    name: str
    scale: int

    def __call__(self, img: np.ndarray, timer: StageTimer) -> np.ndarray: ...

    def close(self) -> None: ...


def _torch():
    from hanrt.errors import require

    return require("torch", extra="export", purpose="the PyTorch baselines")


class _TorchBase:
    """Holds a PyTorch HAN (eval mode) on ``device``; ``half`` runs FP16 (CUDA only)."""

    name = "torch"

    def __init__(self, model: Any, *, device: str = "cpu", half: bool = False) -> None:
        torch = _torch()
        self.torch = torch
        self.device = torch.device(device)
        self.half = bool(half)
        # a copy: converting in place would change the caller's module (device, dtype)
        self.model = copy.deepcopy(model).eval().to(self.device)
        if self.half:
            self.model = self.model.half()
        self.scale = int(model.config.scale)
        self.cuda = self.device.type == "cuda"

    def _to_tensor(self, img: np.ndarray, timer: StageTimer):
        torch = self.torch
        with timer.stage("preprocess"):
            x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))[None]).float()
        with timer.stage("h2d"):
            x = x.to(self.device, non_blocking=False)
            if self.half:
                x = x.half()
        return x

    def _forward(self, x):
        with self.torch.no_grad():
            return self.model(x)

    def _to_image(self, y, timer: StageTimer) -> np.ndarray:
        with timer.stage("d2h"):
            y = y.float().cpu()
        with timer.stage("stitch"):  # post-processing: clamp, round, NCHW -> HWC uint8
            out = y[0].clamp(0, 255).round().to(self.torch.uint8).permute(1, 2, 0).contiguous().numpy()
        return out

    def close(self) -> None:
        self.model = None


class TorchEager(_TorchBase):
    """PyTorch eager on the whole image."""

    name = "torch-eager"

    def __call__(self, img: np.ndarray, timer: StageTimer) -> np.ndarray:
        x = self._to_tensor(img, timer)
        with timer.stage("compute"):
            y = self._forward(x)
        return self._to_image(y, timer)


def chop_pieces(h: int, w: int, *, shave: int = 10, min_size: int = 160_000) -> list[tuple[int, int, int, int]]:
    """The input windows ``(top, left, height, width)`` the official quadrant chop runs, in order.

    Pure arithmetic (no torch), for tests and for counting the pieces of a given image size.
    """
    out: list[tuple[int, int, int, int]] = []

    def rec(top: int, left: int, hh: int, ww: int) -> None:
        hs, ws = hh // 2 + shave, ww // 2 + shave
        quads = [(top, left), (top, left + ww - ws), (top + hh - hs, left), (top + hh - hs, left + ww - ws)]
        for t, l in quads:
            if hs * ws < min_size or (hs >= hh and ws >= ww):  # small enough, or no longer shrinking
                out.append((t, l, hs, ws))
            else:
                rec(t, l, hs, ws)

    rec(0, 0, h, w)
    return out


class TorchChop(_TorchBase):
    """The official test code's recursive quadrant chop (see the module docstring)."""

    name = "torch-chop"

    def __init__(self, model: Any, *, shave: int = 10, min_size: int = 160_000, **kw: Any) -> None:
        super().__init__(model, **kw)
        self.shave = int(shave)
        self.min_size = int(min_size)

    def _chop(self, x):
        """Upscale an NCHW tensor by quadrants; each quadrant recursed or run whole."""
        torch = self.torch
        s, sh = self.scale, self.shave
        _, _, h, w = x.shape
        hh, wh = h // 2, w // 2
        hs, ws = hh + sh, wh + sh
        # Quadrants: top-left, top-right, bottom-left, bottom-right; each overlaps the middle by `shave`.
        quads = [x[..., :hs, :ws], x[..., :hs, w - ws:], x[..., h - hs:, :ws], x[..., h - hs:, w - ws:]]
        # A piece that no longer shrinks (sides <= 2*shave+1) is run whole instead of recursing forever.
        direct = hs * ws < self.min_size or (hs >= h and ws >= w)
        outs = [self._forward(q) if direct else self._chop(q) for q in quads]
        y = torch.empty((x.shape[0], x.shape[1], h * s, w * s), dtype=outs[0].dtype, device=x.device)
        H, W, Hh, Wh, Hs, Ws = h * s, w * s, hh * s, wh * s, hs * s, ws * s
        y[..., :Hh, :Wh] = outs[0][..., :Hh, :Wh]
        y[..., :Hh, Wh:] = outs[1][..., :Hh, Ws - (W - Wh):]
        y[..., Hh:, :Wh] = outs[2][..., Hs - (H - Hh):, :Wh]
        y[..., Hh:, Wh:] = outs[3][..., Hs - (H - Hh):, Ws - (W - Wh):]
        return y

    def __call__(self, img: np.ndarray, timer: StageTimer) -> np.ndarray:
        x = self._to_tensor(img, timer)
        with timer.stage("compute"):
            y = self._chop(x)
        return self._to_image(y, timer)


class TorchNaiveTile(_TorchBase):
    """A naive synchronous per-tile loop (see the module docstring). ``tile``/``pad`` in input pixels."""

    name = "torch-tile"

    def __init__(self, model: Any, *, tile: int = 64, pad: int = 8, **kw: Any) -> None:
        super().__init__(model, **kw)
        if tile < 1 or pad < 0:
            raise ValueError(f"torch-tile: need tile >= 1 and pad >= 0, got {tile}, {pad}")
        self.tile = int(tile)
        self.pad = int(pad)

    def __call__(self, img: np.ndarray, timer: StageTimer) -> np.ndarray:
        torch = self.torch
        h, w = img.shape[:2]
        s, t, p = self.scale, self.tile, self.pad
        x = self._to_tensor(img, timer)
        out = torch.empty((1, 3, h * s, w * s), dtype=x.dtype, device=x.device)
        for top in range(0, h, t):
            for left in range(0, w, t):
                bot, right = min(top + t, h), min(left + t, w)
                t0, l0 = max(top - p, 0), max(left - p, 0)
                b0, r0 = min(bot + p, h), min(right + p, w)
                with timer.stage("compute"):
                    y = self._forward(x[..., t0:b0, l0:r0])
                with timer.stage("stitch"):
                    out[..., top * s:bot * s, left * s:right * s] = y[
                        ..., (top - t0) * s:(bot - t0) * s, (left - l0) * s:(right - l0) * s]
        return self._to_image(out, timer)


TORCH_METHODS: dict[str, Callable[..., _TorchBase]] = {
    "torch-eager": TorchEager,
    "torch-chop": TorchChop,
    "torch-tile": TorchNaiveTile,
}


@dataclass(frozen=True)
class HanrtSettings:
    """How hanrt is run: model path (.onnx/.plan/.pt), backend name, tile and margin (input pixels), batch."""

    model: str
    backend: str = "auto"
    tile: int | None = None
    margin: int | None = None
    batch: int | None = None
    fp16: bool = False  # the torch backend's half precision (CUDA); ONNX graphs carry their own


class HanrtMethod:
    """hanrt's :class:`~hanrt.upscaler.Upscaler` as a method. Options left ``None`` use hanrt's defaults."""

    name = "hanrt"

    def __init__(self, settings: HanrtSettings) -> None:
        from hanrt.upscaler import Upscaler

        kw: dict[str, Any] = {"backend": settings.backend}
        if settings.fp16:
            kw["fp16"] = True
        for k in ("tile", "margin", "batch"):
            v = getattr(settings, k)
            if v is not None:
                kw[k] = v
        self.settings = settings
        self.up = Upscaler(settings.model, **kw)
        self.scale = int(self.up.scale)
        self.backend_name = str(getattr(self.up.backend, "name", settings.backend))

    def __call__(self, img: np.ndarray, timer: StageTimer) -> np.ndarray:
        """Upscale; the Upscaler's own stages (prepare, gather, compute, stitch, finish; see
        :data:`hanrt.upscaler.STAGES`) are added to ``timer`` (host ``perf_counter`` time)."""
        stages: dict[str, float] = {}
        out = self.up.upscale(img, timings=stages)
        for name, seconds in stages.items():
            timer.add(name, seconds)
        return out

    def close(self) -> None:
        self.up.close()

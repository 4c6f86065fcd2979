"""Host memory: what a run will need (estimated from the model's description and the tile) and what
the machine can give (``MemAvailable`` and the cgroup limit). Stdlib only (tier 0).

The estimate is an upper-side model of measurements, not a bound. ONNX Runtime on the CPU, whole
image (``--tile 0``), ``ru_maxrss`` growth per network-input pixel while upscaling 128x128 and
256x256 random images (threads 1): the bundled HAN x4 (32 features) 8.6 kB/pixel; a tiny HAN x4
with 8 features 3.4 kB/pixel, 16 features and 4 groups 4.5 kB/pixel. :func:`activation_bytes_per_pixel`
fits these as ``4 * (F * (2*s^2 + 24) + 24*s^2 + 40)`` bytes for F features and scale s (8.9, 3.5
and 5.3 kB). GPU backends keep activations in device memory; their host part is the output image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import UsageError

__all__ = ["available_memory", "activation_bytes_per_pixel", "estimate_run_bytes", "check_memory", "fmt_bytes",
           "whole_image_allowance", "WHOLE_IMAGE_MAX_BYTES", "WHOLE_IMAGE_FRACTION"]

#: Features assumed when a model does not record ``n_feats`` (the official HAN's 64).
DEFAULT_FEATS = 64

#: ``tile="auto"`` on the CPU runs an image whole (one window: exact output, no seams, and measured
#: as fast as or faster than any tiling up to 512x384, README "Tiling") when the whole run's estimate
#: (:func:`estimate_run_bytes`) is at most :func:`whole_image_allowance`: this many bytes ...
WHOLE_IMAGE_MAX_BYTES = 2_000_000_000
#: ... and at most this share of the memory available to the process (:func:`available_memory`), so
#: a small board with little free memory tiles sooner. Larger images are tiled within the tile
#: planner's own budget (:data:`hanrt.tiling.CPU_TILE_COST`), whatever the machine.
WHOLE_IMAGE_FRACTION = 0.25


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:  # "max" (no limit)
        return None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_memory() -> tuple[int, str] | None:
    """``(bytes, where)``: the memory this process can still take, the smaller of the kernel's
    ``MemAvailable`` and what the cgroup limit leaves (v2 ``memory.max - memory.current``, v1
    ``limit_in_bytes - usage_in_bytes``); ``None`` where neither can be read (not Linux)."""
    found: list[tuple[int, str]] = []
    avail = _meminfo_available()
    if avail is not None:
        found.append((avail, "MemAvailable in /proc/meminfo"))
    for limit_f, usage_f in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                             ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                              "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_f), _read_int(usage_f)
        if limit is not None and usage is not None and limit < (1 << 60):
            found.append((max(0, limit - usage), f"the cgroup memory limit ({fmt_bytes(limit)}, {limit_f})"))
            break
    return min(found) if found else None


def activation_bytes_per_pixel(model_info: Any) -> int:
    """Host bytes a CPU backend needs per network-input pixel of one tile (see the module docstring)."""
    hp = getattr(model_info, "hyperparameters", None) or {}
    f = int(hp.get("n_feats") or DEFAULT_FEATS)
    s = int(getattr(model_info, "scale", 4) or 4)
    return 4 * (f * (2 * s * s + 24) + 24 * s * s + 40)


def estimate_run_bytes(model_info: Any, *, height: int, width: int, channels: int, itemsize: int,
                       tile_h: int, tile_w: int, batch: int, frames: int = 1, on_host: bool = True,
                       ensemble: int = 1, in_flight: int = 1) -> int:
    """Peak host bytes to upscale ``frames`` images of ``height x width x channels`` (``itemsize``
    bytes a value) with tiles of ``tile_h x tile_w`` input pixels, ``batch`` tiles a call: the
    network's activations for one batch (``on_host``: a CPU backend) plus the input and the
    output images (all ``frames`` of them: an animation is held whole), plus, with a self-ensemble
    (``ensemble`` > 1), the float32 sum of each image being upscaled (its colour channels: 3, or 1
    for grey; ``in_flight`` images at once: a stream's frames in the Upscaler)."""
    s = int(getattr(model_info, "scale", 4) or 4)
    images = frames * height * width * max(1, channels) * itemsize * (1 + s * s)
    act = batch * tile_h * tile_w * activation_bytes_per_pixel(model_info) if on_host else 0
    colour = 1 if channels in (0, 1, 2) else 3
    total = in_flight * height * width * s * s * colour * 4 if ensemble > 1 else 0
    return images + act + total


def whole_image_allowance(available: tuple[int, str] | None = None) -> int:
    """Bytes a whole-image run may take under ``tile="auto"``: the smaller of
    :data:`WHOLE_IMAGE_MAX_BYTES` and :data:`WHOLE_IMAGE_FRACTION` of the available memory
    (:func:`available_memory` unless given); 0 where the available memory cannot be read (the
    planner then tiles within its own budget)."""
    avail = available if available is not None else available_memory()
    if avail is None:
        return 0
    return int(min(WHOLE_IMAGE_MAX_BYTES, WHOLE_IMAGE_FRACTION * avail[0]))


def fmt_bytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def check_memory(need: int, *, what: str, whole_image: bool, available: tuple[int, str] | None = None) -> None:
    """Raise :class:`~hanrt.errors.UsageError` when ``need`` bytes exceed the available memory
    (:func:`available_memory` unless given), naming the estimate, the limit and the fix."""
    avail = available if available is not None else available_memory()
    if avail is None or need <= avail[0]:
        return
    fix = ("use tiles (--tile 128, the default)" if whole_image else
           "use a smaller --tile (or --batch 1)")
    raise UsageError(f"{what} needs about {fmt_bytes(need)} of memory (estimated from the model and the "
                     f"tile), but only {fmt_bytes(avail[0])} is available ({avail[1]}): {fix}, or a "
                     f"smaller image.")

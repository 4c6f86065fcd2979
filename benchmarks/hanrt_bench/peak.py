"""Device peak measured in the same run, so "fraction of peak" compares like with like.

- CPU: a large square FP32 matrix product with numpy (its BLAS, all threads it uses); FLOPs
  counted as ``2 n^3`` per product. ~190 GFLOP/s on the 2-core AMD EPYC development VM.
- GPU: an FP16 square matrix product with torch on CUDA (tensor cores), timed with CUDA events.

The figure is the best of a few repetitions after one warm-up (a peak, not a typical value).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["Peak", "cpu_peak", "gpu_peak"]


@dataclass(frozen=True)
class Peak:
    """A measured peak: ``gflops`` GFLOP/s of ``what`` on ``device``."""

    device: str
    what: str
    gflops: float
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {"device": self.device, "what": self.what, "gflops": self.gflops, "seconds": self.seconds}


def cpu_peak(n: int = 2048, reps: int = 3) -> Peak:
    """FP32 ``n x n`` @ ``n x n`` with numpy; best of ``reps`` (one warm-up first)."""
    if n < 1 or reps < 1:
        raise ValueError("cpu_peak: n and reps must be >= 1")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=c)
    best = float("inf")
    t_all = time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    g = 2.0 * n ** 3 / best / 1e9
    log.info("CPU peak: %.1f GFLOP/s (FP32 %dx%d matmul, numpy)", g, n, n)
    return Peak("cpu", f"numpy FP32 matmul {n}x{n}", g, time.perf_counter() - t_all)


def gpu_peak(n: int = 8192, reps: int = 10) -> Peak | None:
    """FP16 ``n x n`` matmul on CUDA with torch; ``None`` when torch or a GPU is missing."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    a = torch.randn(n, n, device="cuda", dtype=torch.float16)
    b = torch.randn(n, n, device="cuda", dtype=torch.float16)
    torch.matmul(a, b)
    torch.cuda.synchronize()
    best = float("inf")
    t_all = time.perf_counter()
    for _ in range(reps):
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        s.record()
        torch.matmul(a, b)
        e.record()
        e.synchronize()
        best = min(best, s.elapsed_time(e) / 1e3)
    g = 2.0 * n ** 3 / best / 1e9
    name = torch.cuda.get_device_name(0)
    log.info("GPU peak: %.0f GFLOP/s (FP16 %dx%d matmul on %s)", g, n, n, name)
    return Peak(f"cuda:{name}", f"torch FP16 matmul {n}x{n}", g, time.perf_counter() - t_all)

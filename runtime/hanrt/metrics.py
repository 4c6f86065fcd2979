"""Image comparison shared by every package (numpy only): the one PSNR.

The papers' Y-channel protocol (shave, BT.601 luma) and SSIM live with the benchmarks
(``quality``); they call :func:`psnr`.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["psnr"]


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB of ``a`` against ``b`` (same shape, values 0..``peak``, any dtype): ``inf`` when
    they are equal, ``-inf`` when ``a`` holds NaN or infinity (an overflowed FP16 graph).
    ValueError when the shapes differ."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ {a.shape} vs {b.shape}")
    if not np.all(np.isfinite(a)):
        return float("-inf")
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(peak * peak / mse)

"""Quality metrics by the super-resolution papers' protocol, and the E1 held-out photo set.

Protocol (EDSR/RCAN/HAN papers): compare on the **Y channel** of YCbCr (ITU-R BT.601, MATLAB's
``rgb2ycbcr``: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` for R,G,B in 0..255), after
shaving ``scale`` pixels from every border; PSNR with peak 255; SSIM with an 11x11 Gaussian
window (sigma 1.5), K1=0.01, K2=0.03, population covariance (Wang et al. 2004, as MATLAB's
``ssim`` used by the papers).

LR images are made from HR by **Pillow's bicubic** (``Image.resize(..., BICUBIC)``, which
antialiases when shrinking, like MATLAB's ``imresize``; the kernels differ slightly: Pillow uses
a = -0.5 like MATLAB, but rounds to uint8 after each pass and handles borders differently, so
figures differ from MATLAB-made LR sets by a few hundredths of a dB).

Everything here is numpy + Pillow; no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from hanrt.metrics import psnr

__all__ = [
    "rgb_to_y",
    "psnr",
    "psnr_y",
    "ssim",
    "ssim_y",
    "modcrop",
    "bicubic_down",
    "bicubic_up",
    "E1_NAMES",
    "load_e1",
    "E1Image",
]


#: BT.601 Y's weights on 0..255 R, G, B (MATLAB's rgb2ycbcr; Y = 16 + the weighted sum). Training's
#: ``--luma-weight`` loss uses the same weights (hanrt_export.train.to_luma).
Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Y of BT.601 YCbCr (MATLAB convention, 16..235) as float64, from HxWx3 or HxW 0..255."""
    a = np.asarray(img, dtype=np.float64)
    wr, wg, wb = Y_WEIGHTS
    if a.ndim == 2:
        # A grey image is R=G=B: Y = 16 + 219/255 * v.
        return 16.0 + a * (wr + wg + wb)
    return 16.0 + wr * a[..., 0] + wg * a[..., 1] + wb * a[..., 2]


def _shave(a: np.ndarray, s: int) -> np.ndarray:
    return a[s:-s, s:-s] if s > 0 else a


def psnr_y(sr: np.ndarray, hr: np.ndarray, *, shave: int) -> float:
    """Papers' PSNR: Y channel, ``shave`` border pixels removed, peak 255. Inputs uint8 HxW(x3)."""
    return psnr(_shave(rgb_to_y(sr), shave), _shave(rgb_to_y(hr), shave))


def _gauss_filter(a: np.ndarray, sigma: float = 1.5, size: int = 11) -> np.ndarray:
    """Valid-mode separable Gaussian filter (window ``size``), as MATLAB's filter2(..., 'valid')."""
    r = size // 2
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-(x * x) / (2 * sigma * sigma))
    k /= k.sum()
    # rows then columns, valid convolution
    tmp = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 1, a)
    return np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, tmp)


def ssim(a: np.ndarray, b: np.ndarray, *, peak: float = 255.0) -> float:
    """Mean SSIM of two 2-D arrays (Gaussian 11x11, sigma 1.5, K=(0.01, 0.03), valid region)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim: need two 2-D arrays of one shape, got {a.shape} and {b.shape}")
    if min(a.shape) < 11:
        raise ValueError(f"ssim: image {a.shape} is smaller than the 11x11 window")
    c1 = (0.01 * peak) ** 2
    c2 = (0.03 * peak) ** 2
    mu_a = _gauss_filter(a)
    mu_b = _gauss_filter(b)
    saa = _gauss_filter(a * a) - mu_a * mu_a
    sbb = _gauss_filter(b * b) - mu_b * mu_b
    sab = _gauss_filter(a * b) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return float(m.mean())


def ssim_y(sr: np.ndarray, hr: np.ndarray, *, shave: int) -> float:
    """Papers' SSIM on the Y channel with ``shave`` border pixels removed."""
    return ssim(_shave(rgb_to_y(sr), shave), _shave(rgb_to_y(hr), shave))


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop HxW(xC) so both sides are multiples of ``scale`` (top-left kept)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize(size, Image.BICUBIC))


def bicubic_down(hr: np.ndarray, scale: int) -> np.ndarray:
    """LR = Pillow bicubic downscale of a modcropped uint8 HR image by ``scale``."""
    h, w = hr.shape[:2]
    return _resize(hr, (w // scale, h // scale))


def bicubic_up(lr: np.ndarray, scale: int) -> np.ndarray:
    """Pillow bicubic upscale by ``scale`` (the bicubic baseline)."""
    h, w = lr.shape[:2]
    return _resize(lr, (w * scale, h * scale))


# E1: held-out photos inside wheels the project already uses (CC0 / public domain). Never train on them.
E1_NAMES = (
    "astronaut", "camera", "chelsea", "coffee", "rocket", "coins", "moon", "brick", "grass",
    "gravel", "hubble_deep_field", "grace_hopper",
)


@dataclass(frozen=True)
class E1Image:
    name: str
    hr: np.ndarray  # HxWx3 uint8 (grey photos replicated to RGB), modcropped to the scale


def load_e1(scale: int = 4, names: tuple[str, ...] = E1_NAMES) -> list[E1Image]:
    """Load the E1 set (needs scikit-image and matplotlib, which ship the photos)."""
    from hanrt.errors import require
    from hanrt.io.images import read_rgb8, to_rgb8

    skd = require("skimage.data", extra="bench", purpose="the E1 photos")
    out = []
    for n in names:
        if n == "grace_hopper":
            import matplotlib.cbook as cbook

            img = read_rgb8(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
        else:
            img = to_rgb8(getattr(skd, n)())  # grey photos replicated to RGB
        out.append(E1Image(n, np.ascontiguousarray(modcrop(img, scale))))
    return out

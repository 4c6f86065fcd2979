"""Compute accounting for HAN from its hyperparameters (no torch needed).

Counted: every convolution (including the 1x1 mean shifts, the channel-attention squeeze and
excite on the pooled 1x1 vector, and CSAM's 3-D convolution) and the two batched matrix products
of the layer attention (energy ``N x N`` over ``C*H*W`` values, and attention x features).
Not counted: biases, activations, pooling, softmax, element-wise products and additions, pixel
shuffle (they are a few per cent of the multiply-adds of a 3x3 64->64 convolution layer and are
memory-bound anyway). This is also what ``torch.utils.flop_counter`` counts, which the tests use
to check the formula against the PyTorch model.

One multiply-add (MAC) = 2 FLOPs. Full HAN x4 (10 groups x 20 blocks x 64 features) costs about
16.4 M MACs per **input** pixel (about 32.8 GFLOP for a 1000x1000 input).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hanrt_export.han_config import FULL_HAN_X4, HANConfig

__all__ = ["FlopBreakdown", "han_macs", "macs_per_input_pixel", "gflops", "FULL_HAN_X4"]


@dataclass(frozen=True)
class FlopBreakdown:
    """Multiply-adds of one forward pass for a ``batch`` x ``height`` x ``width`` input.

    ``parts`` maps a part of the network to its MACs; ``macs`` is their sum; ``flops = 2*macs``.
    """

    shape: HANConfig
    height: int
    width: int
    batch: int
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        return sum(self.parts.values())

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def macs_per_input_pixel(self) -> float:
        return self.macs / (self.batch * self.height * self.width)


def han_macs(shape: HANConfig, height: int, width: int, batch: int = 1, *, csam: str = "conv3d") -> FlopBreakdown:
    """MACs of HAN on a ``batch x n_colors x height x width`` input (see the module docstring).
    ``csam``: ``"conv2d"``, the banded dense 2-D form, computes F*F*9 per pixel instead of 27*F.

    Per-pixel terms scale with the number of input pixels; the channel-attention squeeze/excite
    runs once per image (on the pooled vector) and is counted as such.
    """
    if height < 1 or width < 1 or batch < 1:
        raise ValueError(f"han_macs: need positive sizes, got batch {batch}, {height}x{width}")
    s, g, b, f, c = shape.scale, shape.n_resgroups, shape.n_resblocks, shape.n_feats, shape.n_colors
    fr = max(1, f // shape.reduction)
    p = batch * height * width  # input pixels
    conv3 = 9 * f * f  # one 3x3 f->f convolution, per pixel
    n_maps = g + 1
    parts: dict[str, int] = {}
    parts["mean_shift"] = c * c * p + c * c * p * s * s
    parts["head"] = 9 * c * f * p
    parts["rcab_convs"] = g * b * 2 * conv3 * p
    parts["channel_attention"] = g * b * 2 * f * fr * batch  # squeeze + excite on 1x1
    parts["group_convs"] = g * conv3 * p + conv3 * p  # each group's tail conv + the body's last conv
    parts["layer_attention"] = 2 * n_maps * n_maps * f * p  # energy bmm + attention bmm
    parts["last_conv"] = 9 * n_maps * f * f * p
    parts["csam"] = (27 * f if csam == "conv3d" else conv3) * p
    parts["last"] = 9 * 2 * f * f * p
    up = 0
    if s & (s - 1) == 0:
        for k in range(int(math.log2(s))):
            up += 9 * f * 4 * f * p * (4 ** k)
    elif s == 3:
        up = 9 * f * 9 * f * p
    else:
        raise ValueError(f"han_macs: unsupported scale {s}")
    parts["upsampler"] = up
    parts["tail_conv"] = 9 * f * c * p * s * s
    return FlopBreakdown(shape, height, width, batch, parts)


def macs_per_input_pixel(shape: HANConfig = FULL_HAN_X4) -> float:
    """MACs per input pixel (the per-image channel-attention term left out: it vanishes on real images)."""
    br = han_macs(shape, 1000, 1000)
    return (br.macs - br.parts["channel_attention"]) / 1e6


def gflops(flops: float, seconds: float) -> float:
    """Achieved GFLOP/s (``flops`` floating-point operations in ``seconds`` s)."""
    return flops / seconds / 1e9 if seconds > 0 else float("nan")

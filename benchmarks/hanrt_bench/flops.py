"""Compute accounting: HAN from its hyperparameters (no torch needed); any other architecture by
``torch.utils.flop_counter`` on its PyTorch model (:class:`CountedCost`).

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
from typing import Any, Mapping

from hanrt_export.han_config import HANConfig

__all__ = ["HANShape", "FlopBreakdown", "han_macs", "macs_per_input_pixel", "gflops", "FULL_HAN_X4",
           "CountedCost", "UncountedCost", "macs_of"]


@dataclass(frozen=True)
class HANShape:
    """What decides HAN's cost: its hyperparameters (:class:`hanrt_export.han_config.HANConfig`,
    official defaults: full HAN) plus how the graph computes CSAM, an export choice (``"conv3d"``;
    ``"conv2d"``: the banded dense 2-D form computes F*F*9 per pixel instead of 27*F)."""

    config: HANConfig = field(default_factory=HANConfig)
    csam: str = "conv3d"

    @classmethod
    def from_hyperparameters(cls, hp: Mapping[str, Any], *, csam: str = "conv3d") -> "HANShape":
        """From a ``HANConfig.to_dict()`` / ``ModelInfo.hyperparameters`` mapping (missing keys:
        the official defaults)."""
        keys = ("scale", "n_resgroups", "n_resblocks", "n_feats", "reduction", "n_colors")
        return cls(HANConfig(**{k: int(hp[k]) for k in keys if k in hp}), csam=csam)

    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def label(self) -> str:
        c = self.config
        return f"HAN x{c.scale} {c.n_resgroups}x{c.n_resblocks}x{c.n_feats}"


FULL_HAN_X4 = HANShape()


@dataclass(frozen=True)
class FlopBreakdown:
    """Multiply-adds of one forward pass for a ``batch`` x ``height`` x ``width`` input.

    ``parts`` maps a part of the network to its MACs; ``macs`` is their sum; ``flops = 2*macs``.
    """

    shape: HANShape
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


def han_macs(shape: HANShape, height: int, width: int, batch: int = 1) -> FlopBreakdown:
    """MACs of HAN on a ``batch x n_colors x height x width`` input (see the module docstring).

    Per-pixel terms scale with the number of input pixels; the channel-attention squeeze/excite
    runs once per image (on the pooled vector) and is counted as such.
    """
    if height < 1 or width < 1 or batch < 1:
        raise ValueError(f"han_macs: need positive sizes, got batch {batch}, {height}x{width}")
    cfg = shape.config
    s, g, b, f, c = cfg.scale, cfg.n_resgroups, cfg.n_resblocks, cfg.n_feats, cfg.n_colors
    fr = max(1, f // cfg.reduction)
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
    parts["csam"] = (27 * f if shape.csam == "conv3d" else conv3) * p
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


def macs_per_input_pixel(shape: HANShape = FULL_HAN_X4) -> float:
    """MACs per input pixel (the per-image channel-attention term left out: it vanishes on real images)."""
    br = han_macs(shape, 1000, 1000)
    return (br.macs - br.parts["channel_attention"]) / 1e6


def gflops(flops: float, seconds: float) -> float:
    """Achieved GFLOP/s (``flops`` floating-point operations in ``seconds`` s)."""
    return flops / seconds / 1e9 if seconds > 0 else float("nan")


class CountedCost:
    """MACs of any architecture, counted by ``torch.utils.flop_counter`` on its PyTorch model.

    ``model``: the ``nn.Module`` (float32 NCHW in). One forward pass per input shape, on zeros, cached;
    the counter counts convolutions and matrix products (what :func:`han_macs` counts for HAN), as
    ``2 * MACs``. Needs torch (imported on first use).
    """

    def __init__(self, model: Any, *, scale: int, label: str, n_colors: int = 3) -> None:
        self.model = model
        self.scale = int(scale)
        self.label = label
        self.n_colors = int(n_colors)
        self._cache: dict[tuple[int, int, int], int] = {}

    def macs(self, height: int, width: int, batch: int = 1) -> float:
        key = (int(batch), int(height), int(width))
        if key not in self._cache:
            import torch
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter:
                self.model(torch.zeros((batch, self.n_colors, height, width)))
            self._cache[key] = int(counter.get_total_flops()) // 2
        return self._cache[key]


class UncountedCost:
    """The cost of a graph whose PyTorch model is not at hand (another architecture's ``.onnx``
    without ``--checkpoint``): every figure is NaN, and ``why`` says so."""

    def __init__(self, *, scale: int, label: str, why: str) -> None:
        self.scale = int(scale)
        self.label = label
        self.why = why

    def macs(self, height: int, width: int, batch: int = 1) -> float:  # noqa: ARG002
        return float("nan")


def macs_of(cost: "HANShape | CountedCost | UncountedCost", height: int, width: int, batch: int = 1) -> float:
    """MACs of one forward pass: HAN by :func:`han_macs`, other architectures by their counter."""
    if isinstance(cost, HANShape):
        return han_macs(cost, height, width, batch).macs
    return cost.macs(height, width, batch)

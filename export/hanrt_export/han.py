"""HAN — Holistic Attention Network for single-image super-resolution (Niu et al., ECCV 2020,
arXiv 2008.08767), written for hanrt from the paper and the official checkpoint format.

Data flow (input and output are float32 NCHW RGB in 0..rgb_range, normally 0..255)::

    x ─ sub_mean ─ head(conv) ─ F0 ─ RG_1 ─ ... ─ RG_G ─ conv ─ F_G+1
                                │     │            │      │
                                │     └─ stacked ──┴──────┴─► LAM (N x N layer attention)
                                │                                 └─ last_conv ─┐
                                │           F_G+1 ─► CSAM (3-D conv attention) ─ cat ─ last ─ (+F0)
                                └───────────────────────────────────────────────────────┘
                                                    ─ tail(sub-pixel upsampler, conv) ─ add_mean

Parameter names and shapes equal those of the official checkpoints (``HAN_BIX{2,3,4,8}.pt``)
so they load unchanged. The stacking order of the layer attention input is newest first
(``F_G+1, F_G, ..., F_1``), as the official model concatenates each new group output in front;
``last_conv`` weights depend on that order.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .han_config import SUPPORTED_SCALES, HANConfig

__all__ = ["HANConfig", "HAN", "SUPPORTED_SCALES", "csam_conv2d_weight"]

# DIV2K RGB mean used by EDSR/RCAN/HAN (std 1.0 for each channel).
RGB_MEAN = (0.4488, 0.4371, 0.4040)


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=True)


class MeanShift(nn.Module):
    """Adds (sign=+1) or subtracts (sign=-1) the RGB mean, as a fixed 1x1 convolution.

    Weight and bias are buffers (not trained) under the official names ``weight``/``bias``.
    """

    def __init__(self, rgb_range: float, n_colors: int, sign: int) -> None:
        super().__init__()
        mean = torch.tensor(RGB_MEAN[:n_colors] if n_colors == 3 else [0.5] * n_colors)
        self.register_buffer("weight", torch.eye(n_colors).view(n_colors, n_colors, 1, 1))
        self.register_buffer("bias", sign * rgb_range * mean)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias)


class CALayer(nn.Module):
    """Channel attention: global average pool -> 1x1 squeeze -> ReLU -> 1x1 excite -> sigmoid."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nn.Module):
    """Residual channel attention block: conv-ReLU-conv-CA plus identity."""

    def __init__(self, n_feats: int, reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(n_feats, n_feats), nn.ReLU(inplace=True), _conv(n_feats, n_feats),
            CALayer(n_feats, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ResidualGroup(nn.Module):
    """``n_resblocks`` RCABs and a conv, plus identity."""

    def __init__(self, n_feats: int, reduction: int, n_resblocks: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = [RCAB(n_feats, reduction) for _ in range(n_resblocks)]
        blocks.append(_conv(n_feats, n_feats))
        self.body = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class LayerAttention(nn.Module):
    """Layer attention module (LAM): attention across the N stacked group outputs.

    ``x`` is B x N x C x H x W. The N x N energy is a dot product over C*H*W values — it
    overflows FP16 on ordinary inputs, so precision passes keep this block in FP32.
    Returns B x (N*C) x H x W.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c, h, w = x.shape
        flat = x.reshape(b, n, -1)
        if flat.dtype != torch.float32 or torch.is_autocast_enabled(x.device.type):
            # FP16/BF16 models, and FP32 models under autocast (BF16 training): the energy
            # overflows half precision and loses too much in BF16, so this block runs in FP32
            # (a no-op for FP32 models outside autocast, so exported FP32 graphs are unchanged).
            with torch.autocast(device_type=x.device.type, enabled=False):
                out = self._attend(flat.float()).to(x.dtype)
        else:
            out = self._attend(flat)
        out = self.gamma * out.reshape(b, n, c, h, w) + x
        return out.reshape(b, n * c, h, w)

    @staticmethod
    def _attend(flat: torch.Tensor) -> torch.Tensor:
        energy = torch.bmm(flat, flat.transpose(1, 2))
        energy = energy.amax(dim=-1, keepdim=True).expand_as(energy) - energy
        attention = torch.softmax(energy, dim=-1)
        return torch.bmm(attention, flat)


def _channel_shifts(channels: int) -> torch.Tensor:
    """3 x C x C: ``[d, o, i] = 1`` where input channel ``i = o + d - 1`` (the 3-D kernel's depth taps)."""
    return torch.stack([torch.diag(torch.ones(channels - abs(d)), d) for d in (-1, 0, 1)])


def csam_conv2d_weight(w3d: torch.Tensor, channels: int, shifts: torch.Tensor | None = None) -> torch.Tensor:
    """The C->C Conv2d weight equal to CSAM's 1->1 3x3x3 Conv3d over (C, H, W).

    The 3-D kernel slides over channels too (zero-padded), so output channel ``o`` sees input
    channels ``o-1, o, o+1`` with kernel slices ``w[0], w[1], w[2]``: a banded 2-D weight,
    computed as one matmul of constant shift matrices with the kernel (so exporters fold it).
    Returns ``channels x channels x 3 x 3`` (same dtype/device as ``w3d``).
    """
    if shifts is None:
        shifts = _channel_shifts(channels).to(w3d)
    k = w3d.reshape(3, 9)
    return (shifts.reshape(3, channels * channels).t() @ k).reshape(channels, channels, 3, 3)


class ChannelSpatialAttention(nn.Module):
    """Channel-spatial attention module (CSAM): ``x * gamma * sigmoid(conv3d(x)) + x``.

    ``conv2d_form=True`` runs the exactly equivalent banded Conv2d instead of the Conv3d (for
    runtimes where 3-D convolutions are slow); it is a constructor-time choice, not forward state.
    """

    def __init__(self, n_feats: int, *, conv2d_form: bool = False) -> None:
        super().__init__()
        self.n_feats = n_feats
        self.conv2d_form = conv2d_form
        self.conv = nn.Conv3d(1, 1, 3, 1, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        # constant, not part of the (official) state dict
        self.register_buffer("shifts", _channel_shifts(n_feats), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv2d_form:
            w2 = csam_conv2d_weight(self.conv.weight, self.n_feats, self.shifts)
            att = torch.sigmoid(F.conv2d(x, w2, self.conv.bias.expand(self.n_feats), padding=1))
        else:
            att = torch.sigmoid(self.conv(x.unsqueeze(1))).squeeze(1)
        return x * (self.gamma * att) + x


def _upsampler(scale: int, n_feats: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    if scale & (scale - 1) == 0:  # power of two
        for _ in range(int(math.log2(scale))):
            layers += [_conv(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
    elif scale == 3:
        layers += [_conv(n_feats, 9 * n_feats), nn.PixelShuffle(3)]
    else:  # guarded by HANConfig
        raise ValueError(f"unsupported scale {scale}")
    return nn.Sequential(*layers)


class HAN(nn.Module):
    """The Holistic Attention Network. Input/output: float32 NCHW RGB, values 0..rgb_range.

    Construct with keyword-only hyperparameters (``HAN(scale=4, n_resgroups=10, ...)``) or from a
    :class:`HANConfig` (``HAN.from_config(cfg)``). ``csam_conv2d`` selects the exact Conv2d form
    of the channel-spatial attention (same parameters, same state dict).
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        n_resgroups: int = 10,
        n_resblocks: int = 20,
        n_feats: int = 64,
        reduction: int = 16,
        rgb_range: float = 255.0,
        n_colors: int = 3,
        csam_conv2d: bool = False,
    ) -> None:
        super().__init__()
        self.config = HANConfig(
            scale=scale, n_resgroups=n_resgroups, n_resblocks=n_resblocks, n_feats=n_feats,
            reduction=reduction, rgb_range=float(rgb_range), n_colors=n_colors,
        )
        self.sub_mean = MeanShift(rgb_range, n_colors, -1)
        self.add_mean = MeanShift(rgb_range, n_colors, +1)
        self.head = nn.Sequential(_conv(n_colors, n_feats))
        body: list[nn.Module] = [
            ResidualGroup(n_feats, reduction, n_resblocks) for _ in range(n_resgroups)
        ]
        body.append(_conv(n_feats, n_feats))
        self.body = nn.Sequential(*body)
        self.csa = ChannelSpatialAttention(n_feats, conv2d_form=csam_conv2d)
        self.la = LayerAttention()
        n_maps = n_resgroups + 1
        self.last_conv = _conv(n_feats * n_maps, n_feats)
        self.last = _conv(n_feats * 2, n_feats)
        self.tail = nn.Sequential(_upsampler(scale, n_feats), _conv(n_feats, n_colors))

    @classmethod
    def from_config(cls, config: HANConfig, *, csam_conv2d: bool = False) -> "HAN":
        return cls(**config.to_dict(), csam_conv2d=csam_conv2d)

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x))
        res = x
        stacked: list[torch.Tensor] = []
        for layer in self.body:
            res = layer(res)
            stacked.append(res)
        # Newest first, as in the official model (last_conv's weights depend on this order).
        la_in = torch.stack(stacked[::-1], dim=1)
        out_la = self.last_conv(self.la(la_in))
        out_csa = self.csa(res)
        res = self.last(torch.cat([out_csa, out_la], dim=1)) + x
        return self.add_mean(self.tail(res))

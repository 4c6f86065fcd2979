"""The FLOPs formula against counts taken on the PyTorch model."""

from __future__ import annotations

import pytest

from hanrt_bench.flops import FULL_HAN_X4, HANShape, gflops, han_macs, macs_per_input_pixel

torch = pytest.importorskip("torch")

CONFIGS = [
    dict(scale=4, n_resgroups=2, n_resblocks=1, n_feats=8, reduction=4),
    dict(scale=3, n_resgroups=3, n_resblocks=2, n_feats=16, reduction=4),
    dict(scale=2, n_resgroups=2, n_resblocks=1, n_feats=8, reduction=2),
    dict(scale=8, n_resgroups=1, n_resblocks=1, n_feats=4, reduction=4),
]


def _hook_count(model, x) -> int:
    """MACs counted by forward hooks: every Conv2d/Conv3d from its output size and kernel, the mean
    shifts (1x1 functional convs), the layer attention's two bmm, CSAM's functional conv2d form."""
    from hanrt_export.han import ChannelSpatialAttention, LayerAttention, MeanShift

    total = [0]

    def conv_hook(m, inp, out):
        k = 1
        for s in m.kernel_size:
            k *= s
        total[0] += out.numel() * (m.in_channels // m.groups) * k

    def shift_hook(m, inp, out):
        total[0] += out.numel() * m.weight.shape[1]

    def la_hook(m, inp, out):
        b, n, c, h, w = inp[0].shape
        total[0] += 2 * b * n * n * c * h * w

    def csa_hook(m, inp, out):
        if m.conv2d_form:  # F.conv2d with a dense C x C x 3 x 3 weight
            total[0] += out.numel() * m.n_feats * 9

    hooks = []
    for mod in model.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Conv3d)) and not (
                isinstance(mod, torch.nn.Conv3d) and getattr(model.csa, "conv2d_form", False)):
            hooks.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, MeanShift):
            hooks.append(mod.register_forward_hook(shift_hook))
        elif isinstance(mod, LayerAttention):
            hooks.append(mod.register_forward_hook(la_hook))
        elif isinstance(mod, ChannelSpatialAttention):
            hooks.append(mod.register_forward_hook(csa_hook))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return total[0]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"x{c['scale']}-{c['n_resgroups']}x{c['n_resblocks']}x{c['n_feats']}")
@pytest.mark.parametrize("csam", ["conv3d", "conv2d"])
def test_formula_equals_hook_and_dispatch_counts(cfg, csam):
    from torch.utils.flop_counter import FlopCounterMode

    from hanrt_export.han import HAN

    model = HAN(**cfg, csam_conv2d=csam == "conv2d").eval()
    x = torch.rand(2, 3, 13, 17) * 255
    br = han_macs(HANShape.from_hyperparameters(model.config.to_dict(), csam=csam), 13, 17, batch=2)
    assert _hook_count(model, x) == br.macs
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x)
    counts = {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}
    # Convolutions and the layer attention's batched products; the conv2d form of CSAM also builds
    # its banded weight with a small matmul per call (constant-folded in ONNX): not a per-pixel cost.
    assert counts["aten.convolution"] + counts["aten.bmm"] == br.flops == 2 * br.macs


def test_full_han_x4_per_pixel_cost():
    # The figure: full HAN x4 costs about 16.4 M multiply-adds per input pixel.
    assert macs_per_input_pixel(FULL_HAN_X4) == pytest.approx(16.414e6, rel=1e-4)
    br = han_macs(FULL_HAN_X4, 64, 64)
    assert br.macs_per_input_pixel == pytest.approx(16.414e6, rel=1e-3)
    # The residual groups dominate: 20 RCABs x 2 convs x 10 groups.
    assert br.parts["rcab_convs"] / br.macs > 0.89


def test_bad_sizes_and_gflops():
    with pytest.raises(ValueError):
        han_macs(FULL_HAN_X4, 0, 5)
    assert gflops(4e9, 2.0) == pytest.approx(2.0)

"""HAN reproduces the official implementation's outputs (../shared/fixtures), to float32 rounding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hanrt_export.checkpoint import infer_config, load_han
from hanrt_export.han import HAN, HANConfig, csam_conv2d_weight

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _fixture(scale: int):
    z = np.load(FIXTURES / f"han_official_small_x{scale}.npz")
    meta = json.loads((FIXTURES / f"han_official_small_x{scale}.json").read_text())
    sd = {k[len("param/"):]: torch.from_numpy(z[k]) for k in z.files if k.startswith("param/")}
    return sd, z["input"], z["output"], meta


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("csam_conv2d", [False, True])
def test_reproduces_official_output(scale, csam_conv2d):
    sd, x, y_official, meta = _fixture(scale)
    model = load_han(sd, csam_conv2d=csam_conv2d)
    c = model.config
    assert (c.scale, c.n_resgroups, c.n_resblocks, c.n_feats, c.reduction) == (
        meta["scale"], meta["n_resgroups"], meta["n_resblocks"], meta["n_feats"], meta["reduction"])
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    assert y.shape == y_official.shape
    assert np.abs(y - y_official).max() <= 1e-3
    # the attention modules really take part (gammas 0.5 in the fixture)
    assert model.la.gamma.item() == 0.5 and model.csa.gamma.item() == 0.5


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_state_dict_names_and_order_match_official(scale):
    sd, _, _, meta = _fixture(scale)
    m = HAN.from_config(infer_config(sd))
    assert [[k, list(v.shape)] for k, v in m.state_dict().items()] == meta["keys"]


def test_official_full_size_key_count():
    # Official HAN_BIX4.pt: 10 groups x 20 blocks x 64 features. Its state dict has these counts.
    m = HAN(scale=4)
    sd = m.state_dict()
    assert sd["last_conv.weight"].shape == (64, 64 * 11, 3, 3)
    assert sd["tail.0.0.weight"].shape == (256, 64, 3, 3) and "tail.0.2.weight" in sd
    assert HAN(scale=8).state_dict()["tail.0.4.weight"].shape == (256, 64, 3, 3)
    assert sum(p.numel() for p in m.parameters()) > 15_000_000


def test_hyperparameters_are_keyword_only_and_validated():
    with pytest.raises(TypeError):
        HAN(4)  # type: ignore[misc]
    with pytest.raises(ValueError, match="scale"):
        HAN(scale=5)
    with pytest.raises(ValueError):
        HANConfig(n_feats=8, reduction=16)


def test_layer_attention_width_follows_n_resgroups():
    m = HAN(scale=2, n_resgroups=3, n_resblocks=1, n_feats=8, reduction=4)
    assert m.last_conv.weight.shape[1] == 8 * 4
    with torch.no_grad():
        y = m(torch.rand(1, 3, 9, 7) * 255)
    assert y.shape == (1, 3, 18, 14)


def test_csam_conv2d_weight_is_exact_banded_form():
    torch.manual_seed(1)
    w3 = torch.randn(1, 1, 3, 3, 3)
    c = 6
    w2 = csam_conv2d_weight(w3, c)
    x = torch.randn(2, c, 5, 4)
    y3 = torch.nn.functional.conv3d(x.unsqueeze(1), w3, padding=1).squeeze(1)
    y2 = torch.nn.functional.conv2d(x, w2, padding=1)
    assert torch.allclose(y2, y3, atol=1e-5)
    # banded: nothing beyond the neighbouring channels
    assert torch.count_nonzero(w2[0, 2:]) == 0


def test_forward_has_no_side_effects(tiny_han):
    x = torch.rand(1, 3, 11, 13) * 255
    before = {k: v.clone() for k, v in tiny_han.state_dict().items()}
    with torch.no_grad():
        a = tiny_han(x)
        b = tiny_han(x)
    assert torch.equal(a, b)
    assert all(torch.equal(before[k], v) for k, v in tiny_han.state_dict().items())


def test_half_precision_model_stays_finite_and_close(tiny_han):
    """Layer attention runs in FP32 inside an FP16/BF16 model (the energy overflows FP16)."""
    import copy

    x = torch.rand(1, 3, 24, 20) * 255
    with torch.no_grad():
        ref = tiny_han(x)
        for dt in (torch.float16, torch.bfloat16):
            m = copy.deepcopy(tiny_han).to(dt)
            try:
                y = m(x.to(dt)).float()
            except RuntimeError as exc:  # some CPU builds lack half kernels for an op
                pytest.skip(f"{dt} not supported on this CPU build: {exc}")
            assert torch.isfinite(y).all()
            assert (y - ref).abs().mean() < 2.0


def test_layer_attention_runs_fp32_under_bf16_autocast():
    """BF16 training (autocast) must not compute the layer attention's N x N energy in BF16: a
    dot product over C*H*W values of trained-feature size loses its small differences there, and a
    grown 2x16x32 model diverged within 700 steps. Under autocast the block matches FP32."""
    from hanrt_export.han import LayerAttention

    torch.manual_seed(0)
    lam = LayerAttention()
    with torch.no_grad():
        lam.gamma.fill_(1.0)
    x = torch.randn(2, 3, 16, 20, 20) * 30 + 5
    ref = lam(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = lam(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)

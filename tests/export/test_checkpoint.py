"""Strict and safe checkpoint loading: layouts accepted, everything else refused with the keys named."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hanrt.errors import CheckpointError
from hanrt_export.checkpoint import load_checkpoint, save_checkpoint
from hanrt_export.han import HAN

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _official_sd(scale=4):
    z = np.load(FIXTURES / f"han_official_small_x{scale}.npz")
    return {k[len("param/"):]: torch.from_numpy(z[k]) for k in z.files if k.startswith("param/")}, z


@pytest.mark.parametrize("wrap", ["plain", "module", "state_dict", "model", "module+state_dict"])
def test_accepted_layouts(tmp_path, wrap):
    sd, z = _official_sd(4)
    obj = sd
    if "module" in wrap:
        obj = {f"module.{k}": v for k, v in obj.items()}
    if "state_dict" in wrap:
        obj = {"state_dict": obj, "epoch": 3}
    elif wrap == "model":
        obj = {"model": obj}
    p = tmp_path / "ck.pt"
    torch.save(obj, p)
    ck = load_checkpoint(p)
    assert ck.config.scale == 4 and ck.config.n_feats == 16 and ck.config.n_resblocks == 2
    with torch.no_grad():
        y = ck.model(torch.from_numpy(z["input"])).numpy()
    assert np.abs(y - z["output"]).max() <= 1e-3
    assert len(ck.sha256) == 64


def test_own_checkpoint_records_hyperparameters(tmp_path, tiny_han):
    p = tmp_path / "own.pt"
    save_checkpoint(tiny_han, p, step=7)
    assert [f.name for f in tmp_path.iterdir()] == ["own.pt"]  # written atomically: no temporary file left
    raw = torch.load(p, weights_only=True)
    assert raw["config"]["n_feats"] == 8 and raw["step"] == 7
    ck = load_checkpoint(p)
    assert ck.config == tiny_han.config
    assert ck.meta["step"] == 7


def test_recorded_config_must_agree_with_shapes(tmp_path, tiny_han):
    p = tmp_path / "lie.pt"
    save_checkpoint(tiny_han, p)
    raw = torch.load(p, weights_only=True)
    raw["config"]["n_feats"] = 16
    torch.save(raw, p)
    with pytest.raises(CheckpointError, match="disagree"):
        load_checkpoint(p)


def test_rcan_checkpoint_is_refused(tmp_path):
    sd, _ = _official_sd(4)
    rcan = {k: v for k, v in sd.items() if not k.startswith(("la.", "csa.", "last_conv.", "last."))}
    p = tmp_path / "rcan.pt"
    torch.save(rcan, p)
    with pytest.raises(CheckpointError, match="RCAN") as e:
        load_checkpoint(p)
    assert "la.gamma" in str(e.value)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    sd, _ = _official_sd(4)
    sd = dict(sd)
    del sd["body.3.body.1.body.2.bias"]
    sd["body.3.extra.weight"] = torch.zeros(1)
    p = tmp_path / "bad.pt"
    torch.save(sd, p)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    msg = str(e.value)
    assert "body.3.body.1.body.2.bias" in msg and "body.3.extra.weight" in msg and "Nothing was loaded" in msg


def test_shape_mismatch_is_refused(tmp_path):
    sd, _ = _official_sd(4)
    sd = dict(sd)
    sd["last.weight"] = torch.zeros(16, 31, 3, 3)
    p = tmp_path / "shape.pt"
    torch.save(sd, p)
    with pytest.raises(CheckpointError, match="last.weight"):
        load_checkpoint(p)


def test_unsupported_scale_is_refused(tmp_path):
    sd, _ = _official_sd(4)
    sd = dict(sd)
    sd.pop("tail.0.2.weight"), sd.pop("tail.0.2.bias")
    sd["tail.0.0.weight"] = torch.zeros(25 * 16, 16, 3, 3)
    sd["tail.0.0.bias"] = torch.zeros(25 * 16)
    p = tmp_path / "x5.pt"
    torch.save(sd, p)
    with pytest.raises(CheckpointError, match="scale"):
        load_checkpoint(p)


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/hanrt_pwned_marker"),))


def test_pickle_with_code_is_refused(tmp_path):
    marker = Path("/tmp/hanrt_pwned_marker")
    marker.unlink(missing_ok=True)
    p = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Evil()}, p)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(p)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "image", "text", "folder", "plain_pickle"])
def test_not_a_checkpoint(tmp_path, tiny_han, kind):
    p = tmp_path / "x.pt"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated":
        save_checkpoint(tiny_han, p)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "image":
        p = tmp_path / "photo.png"
        Image.new("RGB", (8, 8)).save(p)
    elif kind == "text":
        p.write_text(json.dumps({"a": 1}))
    elif kind == "folder":
        p.mkdir()
    elif kind == "plain_pickle":
        p.write_bytes(pickle.dumps({"a": [1, 2]}))
    with pytest.raises(CheckpointError):
        load_checkpoint(p)


def test_wrong_scale_upsampler_cannot_half_load(tmp_path):
    """A x2 state dict into a x4-shaped model: the official strict=False would skip tail; we refuse."""
    from hanrt_export.checkpoint import load_han
    from hanrt_export.han import HANConfig

    sd2, _ = _official_sd(2)
    cfg4 = HANConfig(scale=4, n_resgroups=10, n_resblocks=1, n_feats=16, reduction=4)
    with pytest.raises(CheckpointError, match="disagree"):
        load_han(sd2, config=cfg4)
    assert HAN.from_config(cfg4).scale == 4

"""ONNX export: dynamic shapes, uint8 I/O, Conv2d CSAM, metadata, and the parity gate."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import hanrt_export.to_onnx as to_onnx
from hanrt.errors import OutputError, ParityError, UsageError
from hanrt.model_info import METADATA_KEY, read_model_info, read_onnx_metadata
from hanrt_export.to_onnx import ExportOptions, export_onnx


def _run(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("shape", [(1, 3, 17, 23), (2, 3, 8, 5), (1, 3, 1, 1)])
def test_float_graph_has_dynamic_batch_height_width(tiny_onnx, tiny_han, shape):
    x = (np.random.default_rng(0).random(shape) * 255).astype(np.float32)
    y = _run(tiny_onnx, x)
    with torch.no_grad():
        ref = tiny_han(torch.from_numpy(x)).numpy()
    assert y.shape == (shape[0], 3, shape[2] * 4, shape[3] * 4)
    assert np.abs(y - ref).max() <= 1e-2


def test_uint8_graph_is_nhwc_and_rounds_inside(tiny_onnx_uint8, tiny_han):
    x = np.random.default_rng(1).integers(0, 256, (1, 13, 9, 3), dtype=np.uint8)
    y = _run(tiny_onnx_uint8, x)
    assert y.dtype == np.uint8 and y.shape == (1, 52, 36, 3)
    with torch.no_grad():
        ref = tiny_han(torch.from_numpy(x).permute(0, 3, 1, 2).float()).clamp(0, 255).round()
    ref = ref.permute(0, 2, 3, 1).numpy()
    assert np.abs(y.astype(np.float64) - ref).max() <= 1.0
    assert np.mean(y != ref) < 1e-3


def test_metadata_describes_the_model(tiny_onnx, tiny_onnx_uint8):
    info = read_model_info(tiny_onnx)
    assert info.scale == 4 and info.io == "float" and info.layout == "NCHW"
    assert info.hyperparameters["n_feats"] == 8 and info.precision == "fp32"
    info8 = read_model_info(tiny_onnx_uint8)
    assert info8.io == "uint8" and info8.layout == "NHWC" and info8.input_dtype == "uint8"
    # our metadata reader agrees with onnx's own parser
    m = onnx.load(str(tiny_onnx))
    assert {p.key: p.value for p in m.metadata_props} == read_onnx_metadata(tiny_onnx)
    assert METADATA_KEY in read_onnx_metadata(tiny_onnx)
    assert m.opset_import[0].version >= 17


def test_conv2d_csam_graph_has_no_conv3d_and_same_output(tmp_path, tiny_han, tiny_onnx):
    from hanrt_export.han import HAN

    m2 = HAN.from_config(tiny_han.config, csam_conv2d=True).eval()
    m2.load_state_dict(tiny_han.state_dict())
    p = tmp_path / "c2.onnx"
    res = export_onnx(m2, p)
    g = onnx.load(str(p)).graph
    convs3d = [n for n in g.node if n.op_type == "Conv" and any(
        a.name == "kernel_shape" and len(a.ints) == 3 for a in n.attribute)]
    assert not convs3d
    assert read_model_info(p).csam == "conv2d"
    assert os.listdir(tmp_path) == ["c2.onnx"]  # written atomically: no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~umask  # as a plain open() would make it
    x = (np.random.default_rng(2).random((1, 3, 12, 10)) * 255).astype(np.float32)
    assert np.abs(_run(p, x) - _run(tiny_onnx, x)).max() <= 1e-3
    assert res.max_abs_diff is not None and res.max_abs_diff <= 1e-2


def test_parity_gate_failure_leaves_no_file(tmp_path, tiny_han, monkeypatch):
    """With a zero tolerance the real float32 difference (nonzero) fails the gate."""
    monkeypatch.setattr(to_onnx, "PARITY_TOL", 0.0)
    out = tmp_path / "gate.onnx"
    with pytest.raises(ParityError, match="exceeds"):
        export_onnx(tiny_han, out)
    assert not out.exists()
    assert os.listdir(tmp_path) == []


def test_export_refuses_existing_and_unwritable_outputs(tmp_path, tiny_han):
    out = tmp_path / "a.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="--overwrite"):
        export_onnx(tiny_han, out)
    assert out.read_bytes() == b"keep me"
    with pytest.raises(OutputError, match="does not exist"):
        export_onnx(tiny_han, tmp_path / "no" / "such" / "dir.onnx")
    with pytest.raises(UsageError, match=".onnx"):
        export_onnx(tiny_han, tmp_path / "model.bin")
    with pytest.raises(UsageError, match="opset"):
        export_onnx(tiny_han, tmp_path / "b.onnx", options=ExportOptions(opset=13))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_export_refuses_readonly_folder(tmp_path, tiny_han):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(OutputError, match="not writable"):
        export_onnx(tiny_han, ro / "m.onnx")


def test_not_an_onnx_file_is_reported(tmp_path):
    from hanrt.errors import InputError

    p = tmp_path / "fake.onnx"
    p.write_bytes(os.urandom(64))
    with pytest.raises(InputError):
        read_model_info(p)
    with pytest.raises(InputError):
        read_model_info(tmp_path / "missing.onnx")

"""The bundled default model: present, described, credited, and really sharper than bicubic."""

from __future__ import annotations

import numpy as np
import pytest

from hanrt.model_info import read_model_info
from hanrt.upscaler import Upscaler, default_model_path

pytest.importorskip("onnxruntime")


def test_bundled_files_and_descriptions():
    p = default_model_path()
    d = p.parent
    info = read_model_info(p)
    assert info.scale == 4 and info.io == "float" and info.precision == "fp32"
    assert read_model_info(d / "hanrt_x4_uint8.onnx").io == "uint8"
    fp16 = read_model_info(d / "hanrt_x4_fp16.onnx")
    assert fp16.precision == "fp16" and fp16.fp32_nodes  # the layer attention stays FP32
    assert read_model_info(d / "hanrt_x4_int8.onnx").precision == "int8"
    # every graph records the sha256 of the shipped weights it was exported from
    from hashlib import sha256

    shipped = sha256((d / "hanrt_x4.pt").read_bytes()).hexdigest()
    for f in ("hanrt_x4.onnx", "hanrt_x4_uint8.onnx", "hanrt_x4_fp16.onnx", "hanrt_x4_int8.onnx"):
        assert read_model_info(d / f).source_sha256 == shipped, f
    assert info.hyperparameters["n_feats"] == 32
    notice = (d / "NOTICE").read_text()
    assert "Aitzol Berasategi" in notice and "CC0-1.0" in notice
    card = (d / "MODEL_CARD.md").read_text()
    assert "| **mean** |" in card


def test_bundled_model_beats_bicubic_on_a_held_out_photo():
    """E1's astronaut photo (never trained on): x4 SR must beat bicubic clearly on the Y channel
    (measured +1.0 dB on this crop when the model was shipped)."""
    skd = pytest.importorskip("skimage.data")
    from hanrt_bench.quality import bicubic_down, bicubic_up, modcrop, psnr_y

    hr = modcrop(skd.astronaut()[:256, :256], 4)
    lr = bicubic_down(hr, 4)
    with Upscaler(backend="ort-cpu") as up:
        sr = up.upscale(lr)
    assert sr.shape == hr.shape and sr.dtype == np.uint8
    gain = psnr_y(sr, hr, shave=4) - psnr_y(bicubic_up(lr, 4), hr, shave=4)
    assert gain > 0.5, f"bundled model gains only {gain:.2f} dB over bicubic"

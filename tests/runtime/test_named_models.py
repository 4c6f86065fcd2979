"""Bundled models by name (``photo``, ``document``): one registry, used by the Upscaler and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from hanrt.cli import main
from hanrt.errors import ModelError
from hanrt.models import BUNDLED, bundled_path, resolve_model
from hanrt.upscaler import Upscaler, default_model_path

pytest.importorskip("onnxruntime")


def test_names_resolve_to_the_bundled_files():
    assert resolve_model(None) == resolve_model("photo") == default_model_path()
    doc = resolve_model("document")
    assert doc.name == "hanrt_x4_document.onnx" and doc.is_file()
    for name, m in BUNDLED.items():
        for variant in ("float", "uint8", "fp16", "int8", "pt"):
            assert bundled_path(name, variant).is_file(), (name, variant)
        assert (bundled_path(name).parent / m.card).is_file()
        assert (bundled_path(name).parent / m.notice).is_file()
    # anything else is a path, untouched
    assert str(resolve_model("some/model.onnx")) == "some/model.onnx"


def test_unknown_names_and_variants_are_refused():
    with pytest.raises(ModelError, match="photo, art, document"):
        bundled_path("drawing")
    with pytest.raises(ModelError, match="variant"):
        bundled_path("photo", "fp8")
    with pytest.raises(ModelError, match="does not exist.*photo, art, document"):
        Upscaler("photoo")


def test_upscaler_takes_the_names(photo):
    img = photo[:24, :32]
    outs = {}
    for name in ("photo", "document"):
        with Upscaler(name, backend="ort-cpu", threads=1, tile=0) as up:
            assert up.model_path == bundled_path(name)
            outs[name] = up.upscale(img)
        assert outs[name].shape == (96, 128, 3)
    assert not np.array_equal(outs["photo"], outs["document"])  # two different models


def test_cli_model_names(tmp_path, photo, capsys):
    src = tmp_path / "a.png"
    Image.fromarray(photo[:20, :20]).save(src)
    out = tmp_path / "a_doc.png"
    assert main(["upscale", str(src), "-o", str(out), "--model", "document", "--backend", "ort-cpu",
                 "--threads", "1"]) == 0
    with Image.open(out) as im:
        assert im.size == (80, 80)
    capsys.readouterr()
    assert main(["info", "photo"]) == 0
    text = capsys.readouterr().out
    assert "hanrt_x4.onnx" in text and "x4" in text
    assert main(["info", "document", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["file"].endswith("hanrt_x4_document.onnx") and d["model_info"]["scale"] == 4

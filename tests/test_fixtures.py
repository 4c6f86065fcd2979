"""The committed tiny ONNX fixtures are what tests/fixtures/make_tiny_models.py makes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def _script():
    spec = importlib.util.spec_from_file_location("make_tiny_models", FIXTURES / "make_tiny_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_script_reproduces_the_committed_fixtures(tmp_path):
    """Byte for byte where torch and onnx export the same bytes as when the files were made; else
    (another torch/onnx version) the same ModelInfo and the same outputs on ONNX Runtime."""
    pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    from hanrt.model_info import read_model_info

    mod = _script()
    pytest.importorskip("skimage")
    from PIL import Image

    made = {p.name: p for p in mod.build(tmp_path)}
    assert sorted(made) == sorted([*mod.FIXTURES, mod.PHOTO])
    assert np.array_equal(np.asarray(Image.open(FIXTURES / mod.PHOTO)), np.asarray(Image.open(made[mod.PHOTO])))
    x = {"float": np.random.default_rng(0).uniform(0, 255, (1, 3, 12, 10)).astype(np.float32),
         "uint8": np.random.default_rng(0).integers(0, 256, (1, 12, 10, 3), dtype=np.uint8)}
    for name, io in mod.FIXTURES.items():
        committed = FIXTURES / name
        if committed.read_bytes() == made[name].read_bytes():
            continue
        a, b = (json.loads(read_model_info(p).to_json()) for p in (committed, made[name]))
        for k in ("hanrt_version", "opset"):
            a.pop(k, None), b.pop(k, None)
        assert a == b, name
        outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x[io]})[0]
                for p in (committed, made[name])]
        np.testing.assert_allclose(outs[0].astype(np.float32), outs[1].astype(np.float32), atol=1e-3, err_msg=name)


def test_fixtures_are_small_and_described():
    from hanrt.model_info import read_model_info

    for name, io in _script().FIXTURES.items():
        p = FIXTURES / name
        assert p.stat().st_size < 200_000, name
        info = read_model_info(p)
        assert info.io == io and info.scale == 4 and info.hyperparameters["n_feats"] == 8

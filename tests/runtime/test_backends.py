"""Backends against the PyTorch reference; backend selection; the slot protocol."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from hanrt.backends import Probe, backend_names, choose_backend, get_spec, model_kind, open_backend, specs
from hanrt.backends.base import OrtConfig, TorchConfig, batch_shape, check_batch
from hanrt.errors import BackendError, HanrtError, MissingDependencyError, ModelError, UsageError
from hanrt.model_info import ModelInfo

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from hanrt.backends.onnxrt import OnnxRuntimeBackend  # noqa: E402
from hanrt_export.torch_backend import TorchBackend  # noqa: E402

FLOAT_TOL = 1e-2  # max abs on 0..255, float32 ORT vs PyTorch (the export parity gate's tolerance)


@pytest.fixture(scope="module")
def batch_f(photo):
    tiles = [photo[0:24, 0:20], photo[100:124, 300:320], photo[400:424, 7:27]]
    return np.stack([t.transpose(2, 0, 1) for t in tiles]).astype(np.float32)


def test_ort_cpu_matches_pytorch(tiny_onnx, tiny_han, batch_f):
    with torch.no_grad():
        ref = tiny_han(torch.from_numpy(batch_f)).numpy()
    with OnnxRuntimeBackend(tiny_onnx, config=OrtConfig(intra_op_threads=1)) as be:
        assert be.name == "ort-cpu" and be.info.scale == 4 and be.info.layout == "NCHW"
        got = be.run(batch_f)
    assert got.shape == (3, 3, 96, 80) and got.dtype == np.float32
    assert np.abs(got - ref).max() < FLOAT_TOL


def test_ort_uint8_graph_matches_pytorch_uint8(tiny_onnx_uint8, tiny_han, batch_f):
    nhwc = np.ascontiguousarray(batch_f.transpose(0, 2, 3, 1).astype(np.uint8))
    with OnnxRuntimeBackend(tiny_onnx_uint8, config=OrtConfig(intra_op_threads=1)) as be:
        assert be.info.io == "uint8" and be.info.layout == "NHWC"
        got = be.run(nhwc)
    ref = TorchBackend(tiny_han, io="uint8").run(nhwc)
    assert got.shape == ref.shape == (3, 96, 80, 3) and got.dtype == np.uint8
    d = np.abs(got.astype(int) - ref.astype(int))
    assert d.max() <= 1 and d.mean() < 0.01  # rounding boundaries only


def test_torch_backend_from_checkpoint_is_the_reference(tiny_checkpoint, tiny_han, batch_f):
    with TorchBackend(tiny_checkpoint, config=TorchConfig(device="cpu")) as be:
        assert be.info.scale == 4 and be.info.io == "float" and len(be.info.source_sha256) == 64
        got = be.run(batch_f)
    with torch.no_grad():
        ref = tiny_han(torch.from_numpy(batch_f)).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
    with pytest.raises(BackendError, match="closed"):
        be.run(batch_f)


def test_torch_backend_refuses_fp16_on_cpu(tiny_han):
    with pytest.raises(UsageError, match="CUDA"):
        TorchBackend(tiny_han, config=TorchConfig(device="cpu", fp16=True))


@pytest.mark.gpu
def test_torch_cuda_fp16_close_to_fp32(tiny_han, batch_f):
    ref = TorchBackend(tiny_han).run(batch_f)
    got = TorchBackend(tiny_han, config=TorchConfig(device="cuda", fp16=True)).run(batch_f)
    assert np.abs(got - ref).max() < 2.0


def test_check_batch_rejects_wrong_inputs(tiny_onnx):
    be = OnnxRuntimeBackend(tiny_onnx)
    with pytest.raises(UsageError, match="float32"):
        be.run(np.zeros((1, 3, 8, 8), np.uint8))
    with pytest.raises(UsageError, match="channels"):
        be.run(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(UsageError, match="4-D"):
        be.run(np.zeros((3, 8, 8), np.float32))
    info = ModelInfo(scale=2, min_tile=8, tile_multiple=4)
    with pytest.raises(ModelError, match="multiples of 4"):
        check_batch(info, np.zeros((1, 3, 10, 12), np.float32))
    assert batch_shape(info, 2, 8, 12, output=True) == (2, 3, 16, 24)
    be.close()
    be.close()  # idempotent
    with pytest.raises(BackendError, match="closed"):
        be.run(np.zeros((1, 3, 8, 8), np.float32))


def test_default_slots_are_synchronous_and_checked(tiny_onnx, batch_f):
    with OnnxRuntimeBackend(tiny_onnx) as be:
        slots = be.make_slots(2, 3, 24, 20)
        assert len(slots) == 2 and slots[0].input.shape == (3, 3, 24, 20)
        slots[0].input[:] = batch_f
        be.submit(slots[0], 2)
        with pytest.raises(UsageError, match="twice"):
            be.submit(slots[0], 2)
        out = be.wait(slots[0])
        assert out.shape == (2, 3, 96, 80)
        np.testing.assert_array_equal(out, be.run(batch_f[:2]))
        with pytest.raises(UsageError, match="without submit"):
            be.wait(slots[0])
        with pytest.raises(UsageError, match="n must be"):
            be.submit(slots[1], 4)


def test_model_kind():
    assert model_kind("a.onnx") == "onnx"
    assert model_kind("a.PLAN") == "engine" and model_kind("b.engine") == "engine"
    assert model_kind("c.pt") == "torch"
    with pytest.raises(UsageError, match="suffix"):
        model_kind("d.bin")


def test_auto_selection_walks_the_specs_and_says_why():
    no_cuda = {"ort-cuda": Probe(False, "ONNX Runtime has no CUDA execution provider here")}
    c = choose_backend("m.onnx", "auto", probes=no_cuda)
    assert c.name == "ort-cpu" and "no CUDA" in c.reason and "not ort-cuda" in c.reason
    c = choose_backend("m.onnx", "auto", probes={"ort-cuda": Probe(True, "ONNX Runtime has the CUDA execution provider")})
    assert c.name == "ort-cuda" and "CUDA" in c.reason
    assert choose_backend("m.plan", probes={"trt": Probe(True, "TensorRT runs engines")}).name == "trt"
    with pytest.raises(MissingDependencyError, match=r"hanrt\[trt\]"):
        choose_backend("m.plan", probes={"trt": Probe(False, "TensorRT is not installed")})
    c = choose_backend("m.pt")
    assert c.name == "torch" and "CPU" in c.reason
    gone = {n: Probe(False, "not installed") for n in ("ort-cuda", "ort-cpu")}
    with pytest.raises(MissingDependencyError, match=r"hanrt\[gpu\]' or 'hanrt\[cpu\]"):
        choose_backend("m.onnx", "auto", probes=gone)
    # this machine: onnxruntime without CUDA
    assert choose_backend("m.onnx").name == ("ort-cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "ort-cpu")


def test_specs_are_the_data():
    """The --backend names, the file kinds and the extras all come from the registered specs."""
    names = backend_names()
    assert names[0] == "auto" and {"trt", "ort-cuda", "ort-cpu", "torch", "triton"} <= set(names)
    assert [s.name for s in specs() if s.runs(get_spec("ort-cpu").kinds[0])] == ["ort-cuda", "ort-cpu"]
    assert {s.name: s.extra for s in specs()} == {"trt": "trt", "ort-cuda": "gpu", "torch": "export",
                                                 "ort-cpu": "cpu", "triton": "triton"}
    assert not get_spec("triton").auto and get_spec("triton").remote


@pytest.mark.parametrize("model,backend,match", [
    ("m.plan", "ort-cpu", "only --backend trt"),
    ("m.pt", "ort-cuda", "hanrt export"),
    ("m.onnx", "trt", "hanrt build"),
    ("m.onnx", "torch", "runs a PyTorch checkpoint"),
    ("m.onnx", "tensorflow", "unknown backend"),
])
def test_selection_mismatches_are_usage_errors(model, backend, match):
    with pytest.raises(UsageError, match=match):
        choose_backend(model, backend)


def test_open_backend_auto_logs_choice(tiny_onnx, caplog):
    caplog.set_level("INFO", logger="hanrt")
    with open_backend(tiny_onnx, "auto", threads=1) as be:
        assert be.name in ("ort-cpu", "ort-cuda")
    assert any("backend:" in r.getMessage() and be.name in r.getMessage() for r in caplog.records)


def test_ort_cuda_without_gpu_names_the_extra(tiny_onnx):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu with CUDA is installed")
    with pytest.raises(MissingDependencyError, match=r"hanrt\[gpu\]"):
        open_backend(tiny_onnx, "ort-cuda")


def test_trt_backend_missing_names_the_extra(tmp_path, monkeypatch):
    """Without TensorRT, asking for it (or auto on an engine) names the extra to install."""
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"\0" * 64)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import -> ImportError, find_spec -> None
    with pytest.raises(MissingDependencyError, match=r"hanrt\[trt\]"):
        open_backend(plan, "trt")
    with pytest.raises(MissingDependencyError, match=r"hanrt\[trt\]"):
        open_backend(plan, "auto")
    with pytest.raises(ModelError, match="does not exist"):
        open_backend(tmp_path / "nope.plan", "trt")


def test_torch_backend_through_selection(tiny_checkpoint, batch_f):
    with open_backend(tiny_checkpoint, "auto") as be:
        assert be.name == "torch"
        assert be.run(batch_f).shape == (3, 3, 96, 80)


def test_errors_are_hanrt_errors():
    assert issubclass(MissingDependencyError, HanrtError)

"""benchmarks/gpu_check.sh's TensorRT smoke steps (hanrt_bench.trt_smoke) driven through the fakes
generated from the real TensorRT 10.3 / 11.4 and cuda-bindings 12.9 APIs, on the tiny nearest-x4 graph:
the script must run as written before it meets its first GPU (where it has never been)."""

from __future__ import annotations

import pytest

from hanrt_bench import trt_smoke


@pytest.fixture(params=["10.3.0", "11.4.0.106"])
def fakes(request, real_modules, monkeypatch, tmp_path):
    from trtfakes import install

    monkeypatch.setenv("HANRT_CACHE_DIR", str(tmp_path / "default-cache"))  # never the user's cache
    monkeypatch.delenv("HANRT_TIMING_CACHE", raising=False)

    with install(request.param, "12.9.10") as fx:
        # the simulator has no cudaPointerGetAttributes (hanrt never calls it): ask it directly
        monkeypatch.setattr(trt_smoke, "_pointer_device", lambda ptr: fx.sim.find(int(ptr), 1)[0].device)
        yield fx


def _run(capsys, *argv) -> str:
    rc = trt_smoke.main(list(map(str, argv)))
    out = capsys.readouterr().out
    assert rc == 0, out
    return out


def test_smoke_steps_run_on_the_fakes(fakes, tmp_path, capsys):
    from conformance.scenario import make_onnx

    onnx = make_onnx(tmp_path / "nearest.onnx", "float")
    out = _run(capsys, "build", "fp32", onnx, tmp_path / "plans")
    assert "PASSED: build" in out and (tmp_path / "plans" / "fp32.plan").is_file()
    assert list((tmp_path / "plans").glob("timing-*-sm86.cache"))  # keyed by the simulated GPU
    out = _run(capsys, "build", "fp16", onnx, tmp_path / "plans")
    assert "PSNR against the fp32 engine on the same random tiles inf dB" in out  # same graph: identical
    out = _run(capsys, "contexts", tmp_path / "plans" / "fp32.plan")
    assert "2 contexts on profile 0, 20 rounds: largest difference to the input run alone 0 " in out
    out = _run(capsys, "memory", tmp_path / "plans" / "fp32.plan")
    assert "largest difference 0" in out and "mapped/copy" in out
    out = _run(capsys, "device1", onnx, tmp_path / "dev1")
    assert "live on device(s) [1]; largest difference to the main thread's run 0" in out and "PASSED" in out
    assert not (tmp_path / "default-cache").exists()  # every step names its own files
    assert not fakes.log.violations, fakes.log.violations
    assert not fakes.sim.live(), fakes.sim.live()


def test_smoke_steps_fail_or_skip_with_a_reason(fakes, tmp_path, capsys, monkeypatch):
    from conformance.scenario import make_onnx

    onnx = make_onnx(tmp_path / "nearest.onnx", "float")
    _run(capsys, "build", "fp32", onnx, tmp_path)
    # contexts that disagree with a lone run fail the step
    from hanrt.backends.tensorrt import backend as B

    wait = B.TensorRTBackend.wait
    monkeypatch.setattr(B.TensorRTBackend, "wait", lambda self, slot: wait(self, slot) + slot.index)  # run(): index 0
    assert trt_smoke.main(["contexts", str(tmp_path / "fp32.plan")]) == 1
    assert "FAILED: contexts: AssertionError: outputs of two contexts sharing a profile differ" in capsys.readouterr().out
    monkeypatch.undo()
    # one GPU: device 1 is skipped with the reason
    monkeypatch.setattr(trt_smoke, "_device_count", lambda: 1)
    out = _run(capsys, "device1", onnx, tmp_path)
    assert "SKIP: device1: 1 CUDA device(s): device 1 needs two GPUs" in out


def test_without_tensorrt_the_steps_skip(monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    for argv in (["build", "fp32", "m.onnx", str(tmp_path)], ["contexts", "x.plan"], ["memory", "x.plan"],
                 ["device1", "m.onnx", str(tmp_path)]):
        out = _run(capsys, *argv)
        assert out.startswith(f"SKIP: {argv[0]}: TensorRT is not installed"), out

"""hanrt's TensorRT path against the real TensorRT 10.3 / 10.16 / 11.4 and cuda-bindings 12.9 / 13.5 APIs.

The real modules are imported without a GPU (``fetch.py``: stub libraries for TensorRT; cuda-bindings
returns ``cudaErrorInsufficientDriver``); fakes generated from them (``tests/trtfakes``) run hanrt's
own code: ``hanrt build``, the engine cache, slots in copy and mapped modes, a partial batch,
``run()`` from a worker thread, device 1 from another thread, close with nothing left allocated.
Outputs are compared with the known function the tiny graph computes (nearest x4).

Skipped only where the real modules cannot be had (not Linux x86_64, no C compiler, no registry);
under ``CI=true`` those are failures.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from conformance import fetch  # noqa: E402

REPO = HERE.parent.parent
#: every TensorRT x cuda-bindings pair, plus JetPack 6's likely pair: TensorRT 10.3 with the legacy
#: cuda-python 12.2 (module cuda.cudart)
MATRIX = list(itertools.product(fetch.TRT_WHEELS, fetch.CUDA_WHEELS)) + \
    [("10.3.0", v) for v in fetch.LEGACY_CUDA_WHEELS]


def _scenario(trt_v: str, cuda_u: "fetch.Unpacked", tmp: Path, *, only: str | None = None) -> dict:
    out = tmp / f"report-{trt_v}-{cuda_u.version}.json"
    env = cuda_u.env()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "runtime"), str(REPO / "export"), str(REPO / "benchmarks"),
                                         env.get("PYTHONPATH", "")]).strip(os.pathsep)
    cmd = [sys.executable, str(HERE / "scenario.py"), trt_v, cuda_u.version, str(out), "--live"]
    if cuda_u.version in fetch.LEGACY_CUDA_WHEELS:
        cmd.append("--legacy")
    if only:
        cmd += ["--only", only]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and out.is_file(), f"scenario crashed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return json.loads(out.read_text())


@pytest.mark.parametrize("trt_v,cuda_v", MATRIX, ids=[f"trt{t}-cuda{c}" for t, c in MATRIX])
def test_hanrt_runs_on_the_real_api(real_modules, trt_v, cuda_v, tmp_path, record_property):
    """Every step of hanrt's TensorRT path, in a subprocess with the real cuda-bindings ``cuda_v``."""
    _, cudas = real_modules
    rep = _scenario(trt_v, cudas[cuda_v], tmp_path)
    trt_members = [m for m in rep["exercised"] if not m.startswith("cudart.")]
    cuda_members = [m for m in rep["exercised"] if m.startswith("cudart.")]
    record_property("members_exercised", f"{len(trt_members)} TensorRT + {len(cuda_members)} CUDA")
    record_property("violations", len(rep["violations"]))
    summary = fetch.cache_dir() / "matrix"
    summary.mkdir(parents=True, exist_ok=True)
    (summary / f"{trt_v}-{cuda_v}.json").write_text(json.dumps(
        {"trt_members": len(trt_members), "cuda_members": len(cuda_members), "violations": rep["violations"],
         "steps": {k: v["status"] for k, v in rep["steps"].items()}}, indent=1))
    failed = {k: v["status"] for k, v in rep["steps"].items() if v["status"] != "ok"}
    problems = [f"step {k}: {s}" for k, s in failed.items()] + [f"violation: {v}" for v in rep["violations"]]
    problems += [f"left allocated after close: {x}" for x in rep["live_after_close"]]
    assert not problems, "\n".join(problems) + "\n" + "\n".join(rep.get("tracebacks", {}).values())
    assert rep["results"]["build"] == {"builds": 1, "same_plan": True}  # the second build reused the engine
    assert len(trt_members) >= 40 and len(cuda_members) >= 15


# --- what the specs say (facts the issue relies on) ----------------------------------------------

def test_specs_hold_the_members_hanrt_relies_on(real_modules):
    from trtfakes import load_spec

    for v in fetch.TRT_WHEELS:
        c = load_spec("trt", v)["classes"]
        flags = {n: m["value"] for n, m in c["NetworkDefinitionCreationFlag"]["members"].items()
                 if m["kind"] == "enumval"}
        assert "STRONGLY_TYPED" in flags  # present on 11.x too (deprecated there, value 0)
        assert ("EXPLICIT_BATCH" in flags) == v.startswith("10.")
        for q, name in [("IExecutionContext", "execute_async_v3"), ("IExecutionContext", "set_tensor_address"),
                        ("IExecutionContext", "set_input_shape"), ("ICudaEngine", "num_io_tensors"),
                        ("IBuilderConfig", "set_timing_cache"), ("IBuilderConfig", "progress_monitor")]:
            assert name in c[q]["members"], (v, q, name)
        assert c["IBuilderConfig"]["members"]["builder_optimization_level"]["setter"] is True
        assert c["ICudaEngine"]["members"]["num_io_tensors"]["setter"] is False
    assert load_spec("trt", "11.4.0.106")["classes"]["NetworkDefinitionCreationFlag"]["members"]["STRONGLY_TYPED"]["value"] == 0
    for v in fetch.CUDA_WHEELS:
        s = load_spec("cuda", v)
        assert s["probes"]["cudaMalloc"] == {"len": 2, "error": "cudaErrorInsufficientDriver", "values": ["NoneType"]}
        assert s["probes"]["cudaMemcpyAsync"]["len"] == 1
        props = s["classes"]["cudaDeviceProp"]["members"]
        assert {"name", "major", "minor", "integrated"} <= set(props)
    legacy = load_spec("cuda", "12.2.1")
    assert legacy["module"] == "cuda.cudart"
    raised = {k for k, v in legacy["probes"].items() if v.get("raises", "").startswith("RuntimeError: ")}
    assert {"cudaMalloc", "cudaSetDevice", "cudaHostAlloc", "cudaMemcpyAsync"} <= raised  # no error tuples
    assert legacy["probes"]["cudaGetErrorName"]["len"] == 2  # needs no driver
    p12 = set(load_spec("cuda", "12.9.10")["classes"]["cudaDeviceProp"]["members"])
    p13 = set(load_spec("cuda", "13.5.0")["classes"]["cudaDeviceProp"]["members"])
    assert {"clockRate", "computeMode", "memoryClockRate"} <= p12 - p13  # gone in CUDA 13


# --- deliberately wrong calls: the fakes must catch them -----------------------------------------

def _hanrt_attr(name: str, *modules: str):
    """``name`` from the first of ``modules`` that defines it (hanrt's TensorRT code may move)."""
    for m in modules:
        try:
            mod = importlib.import_module(m)
        except ImportError:
            continue
        if hasattr(mod, name):
            return mod
    raise LookupError(f"no hanrt module of {modules} defines {name}")


CUDA_MODULES = ("hanrt.backends.tensorrt.cuda", "hanrt.backends._cuda")
BUILD_MODULES = ("hanrt.backends.tensorrt.build", "hanrt._tensorrt")


def test_a_removed_tensorrt_member_fails(runner, monkeypatch):
    """A 10.x-only member (EXPLICIT_BATCH) used under 11.x: AttributeError and a violation naming it."""
    r = runner("11.4.0.106")
    mod = _hanrt_attr("_network_flags", *BUILD_MODULES)
    monkeypatch.setattr(mod, "_network_flags", lambda t: 1 << int(t.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    with pytest.raises(AttributeError, match="EXPLICIT_BATCH.*TensorRT 11.4"):
        r.step_build_and_cache()
    assert r.fx.log.violations == ["NetworkDefinitionCreationFlag.EXPLICIT_BATCH: no such member in TensorRT 11.4.0.106"]


def test_the_same_member_is_fine_on_10x(runner, monkeypatch):
    r = runner("10.3.0")
    mod = _hanrt_attr("_network_flags", *BUILD_MODULES)
    monkeypatch.setattr(mod, "_network_flags", lambda t: 1 << int(t.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    r.step_build_and_cache()
    assert not [v for v in r.fx.log.violations if "EXPLICIT_BATCH" in v]


def test_swapped_tensorrt_arguments_fail(runner):
    """set_tensor_address(address, name): no overload takes it (pybind11's TypeError, recorded)."""
    r = runner("10.16.1.11")
    r.step_build_and_cache()
    t = r.fx.trt
    rt = t.Runtime(t.Logger())
    eng = rt.deserialize_cuda_engine(r.plan.read_bytes())
    ctx = eng.create_execution_context()
    n = len(r.fx.log.violations)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        ctx.set_tensor_address(0x1000, "input")
    assert len(r.fx.log.violations) == n + 1 and "set_tensor_address" in r.fx.log.violations[-1]


def test_swapped_copy_arguments_fail(runner, monkeypatch):
    """cudaMemcpyAsync with dst and src swapped: the destination is host memory, a violation."""
    r = runner()
    r.step_build_and_cache()
    cu = _hanrt_attr("Stream", *CUDA_MODULES)
    orig = cu.Stream.h2d
    monkeypatch.setattr(cu.Stream, "h2d", lambda self, dst, src, nbytes: orig(self, src, dst, nbytes))
    with pytest.raises(Exception, match="cudaErrorInvalidValue"):
        r.step_slots()
    assert any("HostToDevice) destination" in v and "pinned memory" in v for v in r.fx.log.violations), r.fx.log.violations


def test_an_out_of_range_copy_fails(runner, monkeypatch):
    """One byte more than the buffers hold: the copy overruns the allocation, a violation."""
    r = runner()
    r.step_build_and_cache()
    cu = _hanrt_attr("Stream", *CUDA_MODULES)
    orig = cu.Stream.d2h
    monkeypatch.setattr(cu.Stream, "d2h", lambda self, dst, src, nbytes: orig(self, dst, src, nbytes + 1))
    with pytest.raises(Exception, match="cudaErrorInvalidValue"):
        r.step_slots()
    assert any("overrun" in v for v in r.fx.log.violations), r.fx.log.violations


def test_a_short_copy_fails_the_output_comparison(runner, monkeypatch):
    """A copy one pixel short is in range (no violation) but the output no longer matches nearest x4."""
    r = runner()
    r.step_build_and_cache()
    cu = _hanrt_attr("Stream", *CUDA_MODULES)
    orig = cu.Stream.h2d
    monkeypatch.setattr(cu.Stream, "h2d", lambda self, dst, src, nbytes: orig(self, dst, src, nbytes - 4))
    with pytest.raises(AssertionError, match="output differs from nearest x4"):
        r.step_slots()


def test_a_read_only_property_write_fails(runner):
    r = runner("10.3.0")
    r.step_build_and_cache()
    t = r.fx.trt
    eng = t.Runtime(t.Logger()).deserialize_cuda_engine(r.plan.read_bytes())
    with pytest.raises(AttributeError, match="no setter"):
        eng.num_io_tensors = 3
    assert eng.num_io_tensors == 2 and "ICudaEngine.num_io_tensors is read-only" in r.fx.log.violations[-1]


def test_a_property_write_of_the_wrong_type_fails(runner):
    """Setters check the type from the real setter's signature (builder_optimization_level: int)."""
    r = runner("11.4.0.106")
    t = r.fx.trt
    config = t.Builder(t.Logger()).create_builder_config()
    config.builder_optimization_level = 5
    with pytest.raises(TypeError, match="builder_optimization_level takes typing.SupportsInt, got str"):
        config.builder_optimization_level = "5"
    assert "builder_optimization_level" in r.fx.log.violations[-1]


def test_the_real_cuda_binding_checks_arguments_first(real_modules, tmp_path):
    """Live mode: a call the real Cython binding refuses (a str for a size) fails before any simulation."""
    _, cudas = real_modules
    u = cudas["13.5.0"]
    code = ("import sys; sys.path[:0] = [p for p in __import__('os').environ['HANRT_CONFORMANCE_PATH'].split(':') if p]"
            f"; sys.path.insert(0, {str(HERE.parent)!r})\n"
            "from trtfakes import install\n"
            "with install('10.3.0', '13.5.0', real_cuda=True) as fx:\n"
            "    from cuda.bindings import runtime as rt\n"
            "    assert rt.cudaMalloc(64)[0] == rt.cudaError_t.cudaSuccess\n"
            "    try:\n        rt.cudaMalloc('64')\n    except TypeError:\n        pass\n"
            "    else:\n        raise SystemExit('not refused')\n"
            "    print(fx.log.violations[0])\n")
    r = subprocess.run([sys.executable, "-c", code], env=u.env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "cudaMalloc" in r.stdout and "the real cuda-bindings 13.5.0 refused" in r.stdout


def test_a_missing_synchronize_fails_the_output_comparison(runner, monkeypatch):
    """Work runs on the simulated stream only when the host waits: reading a slot's output without
    synchronizing its event gives stale bytes, as on a GPU, and the comparison catches it."""
    r = runner()
    r.step_build_and_cache()
    cu = _hanrt_attr("Event", *CUDA_MODULES)
    monkeypatch.setattr(cu.Event, "synchronize", lambda self: None)
    with pytest.raises(AssertionError, match="output differs from nearest x4"):
        r.step_slots()


# --- what TensorRT's ONNX parser refuses (findings 1 and 2), as the fake parser does -------------

def _graph(path, nodes, inputs, outputs, inits=()):
    import onnx
    from onnx import helper

    from hanrt.model_info import ModelInfo

    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits)),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    io = "uint8" if inputs[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8 else "float"
    for k, v in ModelInfo(scale=4, io=io).metadata_props().items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))
    return path


def test_the_parser_refuses_uint8_inside_the_graph_and_int32_dequantize(runner, capsys):
    """UINT8 only as graph I/O through a Cast; DequantizeLinear on INT8/FP8/INT4 only. hanrt build
    reports the parser's refusal as a ModelError naming the tensor."""
    import onnx
    from onnx import TensorProto as TP
    from onnx import helper, numpy_helper

    from hanrt.cli import main
    from hanrt.errors import ModelError

    r = runner("10.3.0")
    scales = helper.make_tensor("scales", TP.FLOAT, [4], [1.0, 1.0, 4.0, 4.0])
    transpose_first = _graph(r.work / "t_first.onnx", [
        helper.make_node("Transpose", ["input"], ["t"], perm=[0, 3, 1, 2]),  # UINT8 Transpose: refused
        helper.make_node("Cast", ["t"], ["f"], to=TP.FLOAT),
        helper.make_node("Resize", ["f", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Transpose", ["up"], ["nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Cast", ["nhwc"], ["output"], to=TP.UINT8)],
        [helper.make_tensor_value_info("input", TP.UINT8, ["N", "H", "W", 3])],
        [helper.make_tensor_value_info("output", TP.UINT8, ["N", "H4", "W4", 3])], [scales])
    bias = numpy_helper.from_array(np.arange(3, dtype=np.int32).reshape(1, 3, 1, 1), "bias_q")
    dq_int32 = _graph(r.work / "dq.onnx", [
        helper.make_node("DequantizeLinear", ["bias_q", "bias_scale"], ["bias"]),  # INT32 data: refused
        helper.make_node("Add", ["input", "bias"], ["b"]),
        helper.make_node("Resize", ["b", "", "scales"], ["output"], mode="nearest")],
        [helper.make_tensor_value_info("input", TP.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("output", TP.FLOAT, ["N", 3, "H4", "W4"])],
        [scales, bias, numpy_helper.from_array(np.array(0.5, np.float32), "bias_scale")])
    for path, says in ((transpose_first, "UINT8 tensor 'input'"), (dq_int32, "only activation types")):
        onnx.checker.check_model(onnx.load(str(path)))
        rc = main(["build", str(path), "--tile", "16x16", "--cache-dir", str(r.work / "e")])
        err = capsys.readouterr().err
        assert rc == ModelError.exit_code and says in err, err
    assert r.fx.builds == 0


@pytest.mark.parametrize("ci,rc,says", [("", 0, "1 skipped"), ("true", 1, "CI must run the TensorRT conformance suite")])
def test_no_c_compiler_skips_or_fails_under_ci(ci, rc, says, tmp_path):
    """Without a C compiler the suite skips, naming why; under CI=true it fails instead."""
    env = dict(os.environ, CC=str(tmp_path / "no-such-cc"), CI=ci, HANRT_CONFORMANCE_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                        str(HERE / "test_conformance.py"), "-k", "specs_hold"],
                       env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == rc and says in r.stdout, r.stdout[-2000:]
    assert "no C compiler" in r.stdout
    assert not (tmp_path / "cache").exists()  # nothing downloaded

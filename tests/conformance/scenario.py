"""Drive hanrt's TensorRT path through the fakes of one (TensorRT, cuda-bindings) pair.

    python scenario.py TRT_VERSION CUDA_VERSION OUT.json [--live] [--only STEP,...]

Run by test_conformance.py in a subprocess per pair (``--live``: the real cuda-bindings is on
``sys.path`` via ``HANRT_CONFORMANCE_PATH`` and every CUDA call goes to it first). Uses hanrt's
public entry points only (``hanrt.cli.main``, ``hanrt.backends.open_backend``, ``hanrt.Upscaler``)
so it survives moves inside hanrt. Writes JSON: the steps run, their results, the TensorRT and
CUDA members exercised, the violations, and what was left allocated.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import threading
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in reversed(os.environ.get("HANRT_CONFORMANCE_PATH", "").split(os.pathsep)):
    if p:
        sys.path.insert(0, p)
sys.path.insert(0, str(HERE.parent))  # tests/: trtfakes, conformance

import numpy as np  # noqa: E402

SCALE = 4


def make_onnx(path: Path, io: str) -> Path:
    """A tiny hanrt graph computing a known function: nearest-neighbour x4 upsampling
    (float NCHW 0..255, or uint8 NHWC: Cast, Transpose, Resize, Transpose, Cast)."""
    import onnx
    from onnx import TensorProto, helper

    from hanrt.model_info import ModelInfo

    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, SCALE, SCALE])
    resize = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    if io == "float":
        x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])
        y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, "H4", "W4"])
        nodes = [helper.make_node("Resize", ["input", "", "scales"], ["output"], **resize)]
    else:
        x = helper.make_tensor_value_info("input", TensorProto.UINT8, ["N", "H", "W", 3])
        y = helper.make_tensor_value_info("output", TensorProto.UINT8, ["N", "H4", "W4", 3])
        nodes = [helper.make_node("Cast", ["input"], ["f"], to=TensorProto.FLOAT),
                 helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2]),
                 helper.make_node("Resize", ["nchw", "", "scales"], ["up"], **resize),
                 helper.make_node("Transpose", ["up"], ["nhwc"], perm=[0, 2, 3, 1]),
                 helper.make_node("Cast", ["nhwc"], ["output"], to=TensorProto.UINT8)]
    g = helper.make_graph(nodes, "nearest_x4", [x], [y], initializer=[scales])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    for k, v in ModelInfo(scale=SCALE, io=io).metadata_props().items():
        m.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def nearest(img: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(img, SCALE, axis=0), SCALE, axis=1)


def test_image(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def in_thread(fn, name: str):
    """``fn()`` run in a new thread called ``name``; its result, or its exception raised here."""
    got: dict[str, object] = {}

    def work() -> None:
        try:
            got["out"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            got["err"] = exc

    t = threading.Thread(target=work, name=name)
    t.start()
    t.join()
    if "err" in got:
        raise got["err"]  # type: ignore[misc]
    return got["out"]


class Runner:
    def __init__(self, fx, work: Path) -> None:
        self.fx = fx
        self.work = work
        self.results: dict[str, object] = {}
        self.onnx = {io: make_onnx(work / f"nearest_{io}.onnx", io) for io in ("float", "uint8")}

    def build(self, io: str, *extra: str) -> Path:
        from hanrt.cli import main

        cache = self.work / "engines"
        before = set(cache.glob("*.plan")) if cache.is_dir() else set()
        rc = main(["build", str(self.onnx[io]), "--tile", "16x16", "--batch", "2", "--cache-dir", str(cache), *extra])
        if rc != 0:
            raise RuntimeError(f"hanrt build exited {rc}")
        plans = sorted(set(cache.glob("*.plan")) - before) or sorted(cache.glob(f"nearest_{io}*.plan"),
                                                                      key=os.path.getmtime)
        return plans[-1]

    def upscale(self, backend, img: np.ndarray, **kw) -> np.ndarray:
        from hanrt import Upscaler

        with Upscaler(backend, tile=16, margin=2, batch=2, slots=2, **kw) as up:
            return up.upscale(img)

    # steps -------------------------------------------------------------------------------------
    def step_build_and_cache(self) -> None:
        b0 = self.fx.builds
        plan = self.build("float")
        again = self.build("float")
        self.results["build"] = {"builds": self.fx.builds - b0, "same_plan": plan == again}
        assert self.fx.builds - b0 == 1, f"the second hanrt build did not reuse the engine ({self.fx.builds - b0} builds)"
        assert plan == again
        self.plan = plan

    def step_slots(self) -> None:
        from hanrt.backends import open_backend

        img = test_image()  # 40x56 with 16-pixel tiles: an odd number of tiles, so a partial batch
        want = nearest(img)
        b = open_backend(self.plan, "trt", device_id=0, slots=2)
        cls = type(b)
        try:
            for memory in ("copy", "mapped"):
                be = cls(str(self.plan), config=dataclasses.replace(b.config, memory=memory))
                try:
                    assert be.memory == memory
                    out = self.upscale(be, img)
                    self.results[f"upscale_{memory}"] = bool(np.array_equal(out, want))
                    assert np.array_equal(out, want), f"{memory}: output differs from nearest x4"
                finally:
                    be.close()
            out = self.upscale(b, img)  # auto on device 0 (discrete): copy
            assert np.array_equal(out, want)
        finally:
            b.close()

    def step_run_in_thread(self) -> None:
        from hanrt.backends import open_backend

        b = open_backend(self.plan, "trt", device_id=0, slots=1)
        batch = np.random.default_rng(1).integers(0, 256, (1, 3, 16, 16)).astype(np.float32)
        try:
            out = in_thread(lambda: np.array(b.run(batch)), "worker")
        finally:
            b.close()
        want = np.repeat(np.repeat(batch, SCALE, axis=2), SCALE, axis=3)
        self.results["run_in_thread"] = bool(np.array_equal(out, want))
        assert np.array_equal(out, want)

    def step_device1_from_thread(self) -> None:
        from hanrt.backends import open_backend

        plan = self.build("float", "--device", "1")
        img = test_image(32, 48, seed=2)
        b = open_backend(plan, "trt", device_id=1, slots=2)  # opened here, used from another thread
        n0 = len(self.fx.sim.calls)
        try:
            out = in_thread(lambda: self.upscale(b, img), "inference")
        finally:
            b.close()
        made = ("cudaMalloc", "cudaHostAlloc", "cudaStreamCreateWithFlags", "cudaEventCreateWithFlags", "cudaMemcpyAsync")
        devs = sorted({d for th, fn, d in self.fx.sim.calls[n0:] if th == "inference" and fn in made})
        self.results["device1_thread_devices"] = devs
        assert np.array_equal(out, nearest(img))
        assert devs == [1], f"the inference thread allocated/copied on device(s) {devs}, not on device 1"

    def step_uint8(self) -> None:
        from hanrt.backends import open_backend

        plan = self.build("uint8")
        img = test_image(24, 40, seed=3)
        b = open_backend(plan, "trt", device_id=0, slots=2)
        try:
            out = self.upscale(b, img)
        finally:
            b.close()
        self.results["uint8"] = bool(np.array_equal(out, nearest(img)))
        assert np.array_equal(out, nearest(img))


    def step_run_while_slots_alive(self) -> None:
        """run() while an Upscaler holds the backend's slots (TensorRT >= 10 shares profiles across contexts)."""
        from hanrt import Upscaler
        from hanrt.backends import open_backend

        b = open_backend(self.plan, "trt", device_id=0, slots=2)
        batch = np.random.default_rng(4).integers(0, 256, (2, 3, 16, 16)).astype(np.float32)
        try:
            with Upscaler(b, tile=16, margin=2, batch=2, slots=2) as up:
                img = test_image(32, 32, seed=5)
                first = up.upscale(img)
                out = np.array(b.run(batch))
                second = up.upscale(img)
        finally:
            b.close()
        want = np.repeat(np.repeat(batch, SCALE, axis=2), SCALE, axis=3)
        self.results["run_while_slots_alive"] = bool(np.array_equal(out, want))
        assert np.array_equal(out, want) and np.array_equal(first, nearest(img)) and np.array_equal(second, first)

    def step_timing_cache_two_gpus(self) -> None:
        """One --timing-cache file given to builds for two different GPUs: timings must not cross over."""
        cache = self.work / "timing.cache"
        self.build("float", "--timing-cache", str(cache), "--force")
        self.build("float", "--timing-cache", str(cache), "--device", "1", "--force")
        self.build("float", "--timing-cache", str(cache), "--force")


    def step_no_driver(self) -> None:
        """No usable driver (every call fails as the real module's does): a clear error and exit code."""
        from hanrt.backends import open_backend
        from hanrt.cli import main
        from hanrt.errors import BackendError

        self.fx.sim.driver = False
        try:
            rc = main(["build", str(self.onnx["float"]), "--tile", "16x16", "--cache-dir", str(self.work / "nodrv")])
            self.results["no_driver_build_rc"] = rc
            assert rc == BackendError.exit_code, f"hanrt build without a driver exited {rc}"
            try:
                open_backend(self.plan, "trt", device_id=0, slots=1).close()
            except BackendError as exc:  # legacy cuda.cudart raises RuntimeError('Function "cuInit" not found')
                assert ("cuInit" if self.fx.sim.legacy else "cudaErrorInsufficientDriver") in str(exc), exc
            else:
                raise AssertionError("open_backend worked without a driver")
        finally:
            self.fx.sim.driver = True


STEPS = ("build_and_cache", "slots", "run_in_thread", "device1_from_thread", "uint8", "run_while_slots_alive",
         "timing_cache_two_gpus", "no_driver")


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("trt")
    ap.add_argument("cuda")
    ap.add_argument("out")
    ap.add_argument("--live", action="store_true")
    ap.add_argument("--legacy", action="store_true", help="cuda-python <= 12.5: the cuda.cudart module")
    ap.add_argument("--only", default=",".join(STEPS))
    a = ap.parse_args(argv)
    from trtfakes import install

    report: dict[str, object] = {"trt": a.trt, "cuda": a.cuda, "live": a.live, "legacy": a.legacy, "steps": {}}
    with tempfile.TemporaryDirectory() as d, install(a.trt, a.cuda, real_cuda=a.live, legacy=a.legacy) as fx:
        r = Runner(fx, Path(d))
        for name in a.only.split(","):
            n0 = len(fx.log.violations)
            try:
                getattr(r, f"step_{name}")()
                status = "ok"
            except Exception as exc:  # noqa: BLE001 - reported, the next step still runs
                status = f"{type(exc).__name__}: {exc}"
                report.setdefault("tracebacks", {})[name] = traceback.format_exc()[-3000:]  # type: ignore[index]
            report["steps"][name] = {"status": status, "violations": fx.log.violations[n0:]}  # type: ignore[index]
        report["results"] = r.results
        report["live_after_close"] = fx.sim.live()
        report["violations"] = list(fx.log.violations)
        report["exercised"] = sorted(fx.log.exercised)
        report["probed_missing"] = sorted(fx.log.probed_missing)
    Path(a.out).write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

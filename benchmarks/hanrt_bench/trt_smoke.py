"""TensorRT and CUDA smoke checks for ``benchmarks/gpu_check.sh``: what the generated fakes of
``tests/conformance`` cannot show (real kernels, real concurrency, real devices, real timing).

    python -m hanrt_bench.trt_smoke STEP [ARGS]

Steps (each prints what it did and its figures; exit 0 passed or skipped -- a skip prints a line
starting ``SKIP:`` with the reason --, 1 failed):

- ``cuda``: hanrt's cuda-python wrapper (:mod:`hanrt.backends.tensorrt.cuda`) on the GPU: pinned and
  device buffers, a host->device->host round trip, a mapped (zero-copy) buffer written by the GPU,
  events, a named CUDA error, and the current device of a worker thread (device 1 where there are two
  GPUs). Needs cuda-python only, no TensorRT.
- ``build VARIANT ONNX OUTDIR``: ``hanrt build`` of one graph (64x64 tiles, batch 2, builder
  optimization level 1) to ``OUTDIR/VARIANT.plan``, then one batch through the TensorRT backend;
  reports build time, plan size and, for non-fp32 variants, PSNR against ``OUTDIR/fp32.plan``'s output.
- ``contexts PLAN``: two execution contexts on the engine's one optimization profile, submitted
  back to back on two streams for several rounds, each output compared with the same input run alone.
- ``memory PLAN``: ``copy`` vs ``mapped`` memory through the Upscaler (2 slots): time per image of
  each and the largest difference between their outputs.
- ``device1 ONNX OUTDIR``: where two GPUs exist, build on device 1 and drive the backend from a worker
  thread (whose current device starts as 0): its buffers must live on device 1 and its output must
  match a run from the main thread.

**Written without a GPU** (no machine available to the project has TensorRT): the steps follow the same
APIs the conformance suite checks, and run on the first GPU machine with TensorRT.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

TILE, BATCH = 64, 2


class Skip(Exception):
    """A step that cannot run here (the reason is printed as ``SKIP: ...``)."""


def _say(*a: Any) -> None:
    print(*a, flush=True)


def _in_thread(fn: Callable[[], Any]) -> Any:
    got: dict[str, Any] = {}

    def work() -> None:
        try:
            got["out"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            got["err"] = exc

    t = threading.Thread(target=work, name="hanrt-smoke-worker")
    t.start()
    t.join()
    if "err" in got:
        raise got["err"]
    return got["out"]


def _device_count() -> int:
    from hanrt.backends.tensorrt import cuda as cu

    return int(cu.call("cudaGetDeviceCount"))


def _pointer_device(ptr: int) -> int:
    from hanrt.backends.tensorrt import cuda as cu

    return int(cu.call("cudaPointerGetAttributes", ptr).device)


def _require_tensorrt() -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        raise Skip(f"TensorRT is not installed ({exc})") from None


def _batch(info: Any, seed: int, n: int = BATCH) -> np.ndarray:
    from hanrt.backends.base import batch_shape

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, batch_shape(info, n, TILE, TILE), dtype=np.uint8)
    return x if info.input_dtype == "uint8" else x.astype(np.float32)


def _as_nhwc_u8(y: np.ndarray, info: Any) -> np.ndarray:
    y = np.asarray(y)
    if info.layout == "NCHW":
        y = y.transpose(0, 2, 3, 1)
    return np.clip(np.rint(y.astype(np.float32)), 0, 255).astype(np.uint8)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _backend(plan: str | Path, **cfg: Any):
    from hanrt.backends.tensorrt import TensorRTBackend, TrtConfig

    return TensorRTBackend(str(plan), config=TrtConfig(**cfg))


# --- steps -------------------------------------------------------------------------------------

def step_cuda(args: argparse.Namespace) -> None:
    from hanrt.backends.tensorrt import cuda as cu
    from hanrt.errors import BackendError, MissingDependencyError

    try:
        rt = cu.cudart()
    except MissingDependencyError as exc:
        raise Skip(str(exc)) from None
    n = _device_count()
    name, cc, integrated = cu.device_properties(0)
    _say(f"cuda: module {rt.__name__}; {n} device(s); device 0: {name}, compute capability {cc[0]}.{cc[1]}, "
         f"integrated={integrated}")
    cu.set_device(0)
    count = 1 << 20
    h_in, h_out = cu.HostBuffer((count,), np.float32), cu.HostBuffer((count,), np.float32)
    mapped = cu.HostBuffer((count,), np.float32, mapped=True)
    d, s, e = cu.DeviceBuffer(h_in.nbytes), cu.Stream(), cu.Event()
    try:
        h_in.array[:] = np.arange(count, dtype=np.float32)
        t0 = time.perf_counter()
        s.h2d(d.ptr, h_in.ptr, h_in.nbytes)
        s.d2h(h_out.ptr, d.ptr, h_in.nbytes)
        e.record(s)
        e.synchronize()
        ms = (time.perf_counter() - t0) * 1e3
        assert np.array_equal(h_out.array, h_in.array), "host->device->host round trip changed the data"
        _say(f"cuda: pinned round trip of {h_in.nbytes >> 20} MiB equal ({ms:.2f} ms, first call)")
        assert mapped.device_ptr, "a mapped host buffer has no device pointer"
        cu.call("cudaMemcpyAsync", mapped.device_ptr, d.ptr, h_in.nbytes,
                rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, s.handle, what="cudaMemcpyAsync(device to mapped)")
        s.synchronize()
        assert np.array_equal(mapped.array, h_in.array), "the GPU's write to mapped host memory is not visible"
        _say("cuda: the GPU wrote a mapped (zero-copy) host buffer through its device pointer: equal")
        assert _pointer_device(d.ptr) == 0
    finally:
        for obj in (e, s, d, mapped, h_out, h_in):
            obj.close()
    try:
        cu.DeviceBuffer(1 << 62)
        raise AssertionError("cudaMalloc of 4 EiB succeeded")
    except BackendError as exc:
        assert "cudaMalloc(" in str(exc) and "cudaError" in str(exc), exc
        _say(f"cuda: a failing call is named: {exc}")
    target = 1 if n > 1 else 0

    def worker() -> tuple[int, int]:
        cu.set_device(target)
        buf = cu.DeviceBuffer(4096)
        try:
            return cu.current_device(), _pointer_device(buf.ptr)
        finally:
            buf.close()

    current, where = _in_thread(worker)
    assert (current, where) == (target, target), (current, where, target)
    assert cu.current_device() == 0, "a worker thread's cudaSetDevice changed the main thread's device"
    _say(f"cuda: a worker thread's cudaSetDevice({target}) put its buffer on device {where}; the main thread "
         f"stays on device 0" + ("" if n > 1 else " (one GPU: device 1 not checked)"))


def step_build(args: argparse.Namespace) -> None:
    _require_tensorrt()
    from hanrt.cli import main

    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    plan = out / f"{args.variant}.plan"
    t0 = time.perf_counter()
    rc = main(["build", str(args.onnx), "--tile", f"{TILE}x{TILE}", "--batch", str(BATCH), "--opt-level", "1",
               "--output", str(plan), "--timing-cache", str(out / "timing.cache"), "--force"])
    build_s = time.perf_counter() - t0
    assert rc == 0, f"hanrt build exited {rc}"
    with _backend(plan) as be:
        x = _batch(be.info, seed=1)
        y = be.run(x).copy()
        assert y.shape[0] == BATCH and np.isfinite(y.astype(np.float32)).all(), "non-finite output"
        got = _as_nhwc_u8(y, be.info)
        _say(f"build {args.variant}: {build_s:.1f} s, {plan.stat().st_size / 2**20:.2f} MiB, {be.describe()}, "
             f"output {y.dtype} {tuple(y.shape)}")
    ref_plan = out / "fp32.plan"
    if args.variant != "fp32" and ref_plan.is_file():
        with _backend(ref_plan) as ref:
            xr = x if ref.info.input_dtype == x.dtype else (
                x.astype(np.float32).transpose(0, 3, 1, 2) if ref.info.layout == "NCHW" else x)
            want = _as_nhwc_u8(ref.run(np.ascontiguousarray(xr, dtype=ref.info.input_dtype)), ref.info)
        _say(f"build {args.variant}: PSNR against the fp32 engine on the same random tiles {_psnr(got, want):.2f} dB")


def step_contexts(args: argparse.Namespace, rounds: int = 20) -> None:
    _require_tensorrt()
    with _backend(args.plan, memory="copy", slots=2) as be:
        xs = [_batch(be.info, seed=s) for s in (2, 3)]
        refs = [be.run(x).copy() for x in xs]  # each alone (run()'s own context)
        slots = be.make_slots(2, BATCH, TILE, TILE)
        assert len(slots) == 2, f"{len(slots)} slot(s) made"
        profiles = {s.handle["profile"] for s in slots}
        assert len(be.profiles) == 1 and profiles == {0}, (be.profiles, profiles)
        tol = 0 if be.info.input_dtype == "uint8" else 1e-2
        worst = 0.0
        t0 = time.perf_counter()
        for _ in range(rounds):
            for s, x in zip(slots, xs):
                s.input[:] = x
            for s in slots:
                be.submit(s, BATCH)  # both in flight on two streams, one profile
            for s, ref in zip(slots, refs):
                worst = max(worst, float(np.abs(be.wait(s).astype(np.float32) - ref.astype(np.float32)).max()))
        both_ms = (time.perf_counter() - t0) * 1e3 / rounds
        t0 = time.perf_counter()
        for _ in range(rounds):
            for x in xs:
                be.run(x)
        alone_ms = (time.perf_counter() - t0) * 1e3 / rounds
        be.release_slots(slots)
    _say(f"contexts: 2 contexts on profile 0, {rounds} rounds: largest difference to the input run alone "
         f"{worst:g} (tolerance {tol:g}); {both_ms:.2f} ms per round in flight together vs {alone_ms:.2f} ms "
         f"one after the other")
    assert worst <= tol, f"outputs of two contexts sharing a profile differ from a lone run by {worst:g}"


def step_memory(args: argparse.Namespace, images: int = 10) -> None:
    _require_tensorrt()
    from hanrt import Upscaler

    img = np.random.default_rng(4).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    outs, ms = {}, {}
    for memory in ("copy", "mapped"):
        with _backend(args.plan, memory=memory, slots=2) as be, \
                Upscaler(be, tile=TILE, margin=8, batch=BATCH, slots=2) as up:
            up.upscale(img)  # warm-up: slots, contexts
            t0 = time.perf_counter()
            for _ in range(images):
                outs[memory] = up.upscale(img)
            ms[memory] = (time.perf_counter() - t0) * 1e3 / images
    diff = int(np.abs(outs["copy"].astype(np.int16) - outs["mapped"].astype(np.int16)).max())
    _say(f"memory: 256x256 -> {outs['copy'].shape[1]}x{outs['copy'].shape[0]}, {images} images: copy "
         f"{ms['copy']:.2f} ms/image, mapped {ms['mapped']:.2f} ms/image (mapped/copy {ms['mapped'] / ms['copy']:.2f}); "
         f"largest difference {diff}")
    assert diff <= 1, f"copy and mapped outputs differ by {diff}"


def step_device1(args: argparse.Namespace) -> None:
    _require_tensorrt()
    n = _device_count()
    if n < 2:
        raise Skip(f"{n} CUDA device(s): device 1 needs two GPUs")
    from hanrt.backends.tensorrt import cuda as cu
    from hanrt.cli import main

    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    plan = out / "device1.plan"
    rc = main(["build", str(args.onnx), "--tile", f"{TILE}x{TILE}", "--batch", str(BATCH), "--opt-level", "1",
               "--device", "1", "--output", str(plan), "--timing-cache", str(out / "timing.cache"), "--force"])
    assert rc == 0, f"hanrt build --device 1 exited {rc}"
    cu.set_device(0)
    be = _backend(plan, device_id=1, memory="copy", slots=2)  # made on the main thread
    x = _batch(be.info, seed=5)
    want = be.run(x).copy()
    cu.set_device(0)  # whatever the constructor left: the worker starts on device 0 anyway

    def worker() -> tuple[list[int], float]:
        slots = be.make_slots(2, BATCH, TILE, TILE)
        where = [_pointer_device(s.handle["din"].ptr) for s in slots]
        for s in slots:
            s.input[:] = x
            be.submit(s, BATCH)
        diff = max(float(np.abs(be.wait(s).astype(np.float32) - want.astype(np.float32)).max()) for s in slots)
        be.release_slots(slots)
        be.close()
        return where, diff

    where, diff = _in_thread(worker)
    _say(f"device1: slots made from a worker thread live on device(s) {sorted(set(where))}; largest difference to "
         f"the main thread's run {diff:g}")
    assert set(where) == {1}, f"buffers on device(s) {sorted(set(where))}, not 1"
    assert diff <= (0 if be.info.input_dtype == "uint8" else 1e-2)


STEPS = {"cuda": step_cuda, "build": step_build, "contexts": step_contexts, "memory": step_memory,
         "device1": step_device1}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hanrt_bench.trt_smoke", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    sub.add_parser("cuda")
    b = sub.add_parser("build")
    b.add_argument("variant")
    b.add_argument("onnx")
    b.add_argument("outdir")
    for name in ("contexts", "memory"):
        sub.add_parser(name).add_argument("plan")
    d = sub.add_parser("device1")
    d.add_argument("onnx")
    d.add_argument("outdir")
    args = p.parse_args(argv)
    try:
        STEPS[args.step](args)
    except Skip as exc:
        _say(f"SKIP: {args.step}: {exc}")
        return 0
    except Exception as exc:  # noqa: BLE001 - a smoke step reports any failure and exits 1
        import traceback

        traceback.print_exc()
        _say(f"FAILED: {args.step}: {type(exc).__name__}: {exc}")
        return 1
    _say(f"PASSED: {args.step}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Backend time per tile side: the measurement behind :data:`hanrt.tiling.CPU_TILE_COST`.

``python -m hanrt_bench.tile_cost [--model M] [--sides 32 64 128 ...] [--repeats 3]`` runs square
tiles of each side through an ONNX Runtime session (the options hanrt uses, or the variants named
by ``--variant``) in one process, interleaved (side 1, side 2, ..., side 1, side 2, ...), and
prints the median and the minimum milliseconds per tile, the median and minimum microseconds per
input pixel, the median per-pixel cost relative to the cheapest side (on a loaded machine the
minimum favours small tiles: a short run more often fits between other processes' bursts, so the
medians of several runs are the figures to compare), and the process's peak RSS growth per side (VmHWM, measured in a fresh
subprocess per side with ``--rss``).

Options it compares with ``--variant`` (each a fresh session, interleaved the same way):
``default`` (hanrt's session options), ``threads=N``, ``spin=0|1``, ``arena=0|1``, ``pattern=0|1``
(ORT's memory-pattern planning), ``ext=1`` (graph optimisation level ORT_ENABLE_EXTENDED instead
of ALL: the NCHWc channels-blocked layout transformer runs only at ALL).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np


def _session(model: str, variant: str) -> Any:
    import onnxruntime as ort

    from hanrt.backends.base import OrtConfig
    from hanrt.backends.onnxrt import session_options

    kw: dict[str, Any] = {}
    level = None
    pattern = None
    for part in filter(None, variant.split(",")):
        if part == "default":
            continue
        k, _, v = part.partition("=")
        if k == "threads":
            kw["intra_op_threads"] = int(v)
        elif k == "spin":
            kw["spinning"] = bool(int(v))
        elif k == "arena":
            kw["memory_arena"] = bool(int(v))
        elif k == "pattern":
            pattern = bool(int(v))
        elif k == "ext":
            level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if int(v) else None
        else:
            raise SystemExit(f"unknown variant part {part!r}")
    so = session_options(ort, OrtConfig(**kw))
    if level is not None:
        so.graph_optimization_level = level
    if pattern is not None:
        so.enable_mem_pattern = pattern
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def _rss_mb() -> float:
    """Peak RSS of this process in MiB: ``VmHWM`` (``ru_maxrss`` would carry the parent's peak over a
    fork and exec)."""
    from .policy import peak_rss_mb

    return peak_rss_mb()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hanrt_bench.tile_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="ONNX model (default: the bundled hanrt_x4.onnx)")
    p.add_argument("--sides", nargs="+", type=int, default=[32, 48, 64, 96, 128, 160, 192, 256])
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side and variant (median)")
    p.add_argument("--variant", nargs="+", default=["default"],
                   help="session variants to interleave, e.g. default spin=0 arena=0 threads=1")
    p.add_argument("--rss", action="store_true", help="also peak RSS per side (one subprocess per side)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--_rss-one", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    from hanrt.upscaler import default_model_path

    model = a.model or str(default_model_path())
    if a._rss_one is not None:  # child: peak RSS growth of one run at one side
        sess = _session(model, a.variant[0])
        base = _rss_mb()
        x = np.random.default_rng(0).uniform(0, 255, (1, 3, a._rss_one, a._rss_one)).astype(np.float32)
        for _ in range(2):
            sess.run(None, {sess.get_inputs()[0].name: x})
        print(json.dumps({"base_mb": base, "peak_mb": _rss_mb()}))
        return 0
    sessions = {v: _session(model, v) for v in a.variant}
    rng = np.random.default_rng(0)
    inputs = {s: rng.uniform(0, 255, (1, 3, s, s)).astype(np.float32) for s in a.sides}
    times: dict[tuple[str, int], list[float]] = {(v, s): [] for v in a.variant for s in a.sides}
    for v, sess in sessions.items():  # warm-up: one run per shape
        for s in a.sides:
            sess.run(None, {sess.get_inputs()[0].name: inputs[s]})
    for _ in range(a.repeats):
        for s in a.sides:
            for v, sess in sessions.items():
                t = time.perf_counter()
                sess.run(None, {sess.get_inputs()[0].name: inputs[s]})
                times[(v, s)].append(time.perf_counter() - t)
    rows = []
    for v in a.variant:
        med = {s: statistics.median(times[(v, s)]) for s in a.sides}
        low = {s: min(times[(v, s)]) for s in a.sides}
        per_px = {s: low[s] / (s * s) * 1e6 for s in a.sides}
        med_px = {s: med[s] / (s * s) * 1e6 for s in a.sides}
        best = min(med_px.values())
        for s in a.sides:
            row = {"variant": v, "side": s, "median_ms": round(med[s] * 1e3, 2), "min_ms": round(low[s] * 1e3, 2),
                   "median_us_per_px": round(med_px[s], 3), "min_us_per_px": round(per_px[s], 3),
                   "relative": round(med_px[s] / best, 3)}
            if a.rss:
                out = subprocess.run([sys.executable, "-m", "hanrt_bench.tile_cost", "--model", model,
                                      "--variant", v, "--_rss-one", str(s)], capture_output=True, text=True, check=True)
                r = json.loads(out.stdout)
                row["rss_growth_mb"] = round(r["peak_mb"] - r["base_mb"], 1)
                row["peak_rss_mb"] = round(r["peak_mb"], 1)
            rows.append(row)
    if a.json:
        print(json.dumps(rows, indent=1))
        return 0
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

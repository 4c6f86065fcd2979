"""How long ``hanrt upscale`` takes before its first tile, from the process's start.

``python -m hanrt_bench.startup IMAGE [--runs 5] [-- extra hanrt upscale options]`` starts
``python -m hanrt -q upscale IMAGE -o TMP/out.png`` ``runs`` times and prints the median seconds
from launching the process to the first tile entering the backend (``Backend.submit``; recorded
by a few lines that wrap it, run before the command) and to the process's exit. For the import
breakdown use ``python -X importtime -m hanrt upscale ...``; for the rest, ``python -m cProfile``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

_CHILD = r"""
import os, sys, time, runpy, atexit
t0 = float(os.environ["HANRT_STARTUP_T0"])
import hanrt.backends.base as _b
_orig = _b.Backend.submit
_seen = []
def _submit(self, slot, n):
    if not _seen:
        _seen.append(time.time())
    return _orig(self, slot, n)
_b.Backend.submit = _submit
atexit.register(lambda: sys.stderr.write(f"\nHANRT_FIRST_TILE {(_seen[0] - t0) if _seen else -1:.4f}\n"))
sys.argv = ["hanrt"] + sys.argv[1:]
runpy.run_module("hanrt", run_name="__main__", alter_sys=True)
"""


def measure(image: str, extra: list[str], runs: int) -> dict[str, float]:
    first, total = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            out = os.path.join(tmp, f"out{i}.png")
            env = dict(os.environ)
            t0 = time.time()
            env["HANRT_STARTUP_T0"] = repr(t0)
            r = subprocess.run([sys.executable, "-c", _CHILD, "-q", "upscale", image, "-o", out, *extra],
                               env=env, capture_output=True, text=True)
            total.append(time.time() - t0)
            if r.returncode != 0:
                raise SystemExit(f"hanrt upscale failed ({r.returncode}): {r.stderr[-2000:]}")
            line = [ln for ln in r.stderr.splitlines() if ln.startswith("HANRT_FIRST_TILE")]
            first.append(float(line[-1].split()[1]))
    return {"first_tile_s": statistics.median(first), "exit_s": statistics.median(total),
            "first_tile_min_s": min(first), "exit_min_s": min(total)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hanrt_bench.startup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("extra", nargs="*", help="more hanrt upscale options (after --)")
    a = p.parse_args(argv)
    r = measure(a.image, a.extra, a.runs)
    print(f"process start -> first tile: median {r['first_tile_s']:.3f} s (min {r['first_tile_min_s']:.3f}); "
          f"-> exit: median {r['exit_s']:.3f} s (min {r['exit_min_s']:.3f}); {a.runs} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

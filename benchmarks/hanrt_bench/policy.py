"""The tile policy against its alternatives: ``hanrt bench --policy``.

For each input size, one backend session (shared by every variant, so they differ only in tiling)
runs the Upscaler with its default tiling (``tile="auto"``), the whole image (``tile=0``) and every
fixed tile side asked (``--tile``), **interleaved**: repeat 1 of every variant, then repeat 2, ...
(on a shared machine a burst of load then hits all variants alike), the order **rotated** by one
variant each repeat (so no variant always runs first, or always after the same neighbour; the
orders are in the row's ``orders``). Reported per size: the
median (and minimum) seconds of each variant, the best fixed tile, the default's share of the
best of {whole, every fixed tile} (best time / default time; 1.0 = as fast as the best; from the
medians and from the minima, the figure least disturbed by other processes), the tiles
the default used, and the default's peak RSS in a fresh process next to the output image's size (``VmHWM``).
Also the **CPU seconds** of each variant (``time.process_time``: every thread of this process, ORT's
included; spinning is off, so it counts work, not waiting) and the default's share by them: on a
shared machine wall time swings with the neighbours' load, CPU time much less. Variants whose plans are the same tiles (the default runs a
small image whole, say) do the same work: their samples are pooled.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np

__all__ = ["run_policy", "policy_markdown", "DEFAULT_SIZES", "DEFAULT_TILES"]

#: LR sizes (height, width) of the issue's goal.
DEFAULT_SIZES = ((128, 128), (256, 256), (384, 512), (750, 1000), (1500, 2000))
#: Fixed tile sides compared with the default.
DEFAULT_TILES = (64, 96, 128, 192, 256, 384)
#: Whole-image inference is skipped above this many input pixels (ONNX Runtime needs ~6.8 kB per
#: input pixel for the bundled model: 1000x750 peaked at 5.1 GB).
WHOLE_MAX_PIXELS = 1000 * 750


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (``VmHWM`` of ``/proc/self/status``; unlike
    ``ru_maxrss`` it starts afresh in a new program instead of inheriting the parent's peak)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise OSError("no VmHWM in /proc/self/status")


def _frame(h: int, w: int) -> np.ndarray:
    from .bench import synthetic_frame

    return synthetic_frame(h, w)


def _peak_rss(model: str, backend: str, h: int, w: int, threads: int) -> dict[str, float]:
    """Peak RSS of a fresh process that upscales one ``h x w`` frame with the defaults."""
    code = (
        "import json\n"
        "from hanrt.upscaler import Upscaler\n"
        "from hanrt_bench.policy import _frame, peak_rss_mb\n"
        f"img=_frame({h},{w})\n"
        f"up=Upscaler({model!r},backend={backend!r},threads={threads})\n"
        "before=peak_rss_mb()\n"
        "out=up.upscale(img)\n"
        "print(json.dumps({'before_mb':before,'peak_mb':peak_rss_mb(),'output_mb':out.nbytes/2**20}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_policy(model: str, *, backend: str = "ort-cpu", sizes=DEFAULT_SIZES, tiles=DEFAULT_TILES, margin: int | None = None,
               repeats: int = 3, threads: int = 0, rss: bool = True, whole_max_pixels: int = WHOLE_MAX_PIXELS,
               big_pixels: int = 512 * 384,
               say: Callable[[str], None] = lambda s: None) -> list[dict[str, Any]]:
    """Measure the policy (see the module docstring); one dict per input size. Inputs above
    ``big_pixels`` get no warm-up run and a third of the repeats (at least one)."""
    from hanrt.backends import open_backend
    from hanrt.model_info import describe_margin, resolve_margin
    from hanrt.upscaler import Upscaler

    rows = []
    with open_backend(model, backend, threads=threads) as be:
        # every variant tiles with the margin the default resolves to (explicit > recorded > DEFAULT_MARGIN)
        m, m_source = resolve_margin(margin, be.info)
        say(f"margin {describe_margin(m, m_source)}")
        for h, w in sizes:
            img = _frame(h, w)
            variants: dict[str, Upscaler] = {"default": Upscaler(be, margin=m)}
            if h * w <= whole_max_pixels:
                variants["whole"] = Upscaler(be, tile=0)
            for t in tiles:
                if 2 * m < t < max(h, w):  # a tile at least the image is the whole image again
                    variants[f"tile {t}"] = Upscaler(be, tile=t, margin=m)
            times: dict[str, list[float]] = {k: [] for k in variants}
            cpu: dict[str, list[float]] = {k: [] for k in variants}
            reps = repeats if h * w <= big_pixels else max(1, repeats // 3)
            if h * w <= big_pixels:  # warm-up: every shape once (a large image warms up in its first tiles)
                for k, up in variants.items():
                    up.upscale(img)
            names = list(variants)
            orders = []
            for i in range(reps):
                order = names[i % len(names):] + names[:i % len(names)]
                orders.append(order)
                for k in order:
                    up = variants[k]
                    c0, t0 = time.process_time(), time.perf_counter()
                    up.upscale(img)
                    times[k].append(time.perf_counter() - t0)
                    cpu[k].append(time.process_time() - c0)
                say(f"{w}x{h}: repeat {i + 1}/{reps} done")
            # variants whose plans are the same tiles run the same work: pool their samples
            sig = {k: tuple((t.wy, t.wx, *up.plan(h, w).window(t)) for t in up.plan(h, w).tiles)
                   for k, up in variants.items()}
            pooled = {k: [x for j in variants if sig[j] == sig[k] for x in times[j]] for k in variants}
            times = pooled
            cpu = {k: [x for j in variants if sig[j] == sig[k] for x in cpu[j]] for k in variants}
            cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
            med = {k: statistics.median(v) for k, v in times.items()}
            low = {k: min(v) for k, v in times.items()}
            fixed = {k: v for k, v in med.items() if k.startswith("tile ")}
            alts = {k: v for k, v in med.items() if k != "default"}
            best_k = min(alts, key=alts.get) if alts else "default"
            plan = variants["default"].plan(h, w)
            row: dict[str, Any] = {
                "input": f"{w}x{h}", "default_s": med["default"], "whole_s": med.get("whole"),
                "best_fixed": min(fixed, key=fixed.get) if fixed else None,
                "best_fixed_s": min(fixed.values()) if fixed else None,
                "best_alternative": best_k, "share_of_best": (alts[best_k] / med["default"]) if alts else 1.0,
                "share_of_best_min": (min(low[k] for k in alts) / low["default"]) if alts else 1.0,
                "default_tiles": plan.count, "default_window": f"{plan.tile_w}x{plan.tile_h}",
                "default_overhead": plan.overhead, "margin": m, "margin_source": m_source, "min_s": low, "cpu_s": cpu_med,
                "share_of_best_cpu": (min(cpu_med[k] for k in alts) / cpu_med["default"]) if alts else 1.0,
                "spread": {k: (max(v) - min(v)) / statistics.median(v) for k, v in times.items()},
                "median_s": med, "orders": orders,
            }
            if rss:
                row.update(_peak_rss(model, backend, h, w, threads))
            rows.append(row)
            say(f"{w}x{h}: default {med['default']:.3f} s, best other {best_k} {alts.get(best_k, float('nan')):.3f} s")
    return rows


def policy_markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| LR input | default (auto) | whole image | best fixed tile | default's share of the best "
            "(medians / minima / CPU s) | default's tiles | peak RSS / output |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        whole = f"{r['whole_s']:.3f} s" if r.get("whole_s") is not None else "not run (memory)"
        fixed = f"{r['best_fixed_s']:.3f} s ({r['best_fixed']})" if r.get("best_fixed") else "n/a"
        rss = (f"{r['peak_mb']:.0f} MB / {r['output_mb']:.0f} MB" if "peak_mb" in r else "n/a")
        lines.append(f"| {r['input']} | {r['default_s']:.3f} s | {whole} | {fixed} | {r['share_of_best']:.2f} / "
                     f"{r['share_of_best_min']:.2f} / {r.get('share_of_best_cpu', float('nan')):.2f} | "
                     f"{r['default_tiles']} (up to {r['default_window']}, x{r['default_overhead']:.2f} pixels) | {rss} |")
    return "\n".join(lines)

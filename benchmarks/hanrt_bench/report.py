"""Benchmark outputs: JSON (everything), CSV (one row per measurement), markdown tables and PNG plots.

Stages (``stages_ms``: nested in JSON, ``stage_<name>_ms`` columns in CSV, a second markdown
table) are rendered alike for every method; hanrt rows carry the Upscaler's own stages.

Plots need matplotlib (``pip install 'hanrt[bench]'``); without it :func:`write_plots` returns
an empty list and says why in the log, and the text outputs are still written.

- ``latency_vs_tile.png``: hanrt mean latency (ms, with p90 whiskers) against tile size, one line
  per backend/precision/batch; whole-image inference is the right-most point.
- ``throughput_vs_batch.png``: hanrt frames/s against batch, one line per backend/precision/tile.
- ``pareto.png`` (when eval results are given): quality (PSNR on Y, dB) against speed (frames/s)
  for every configuration both runs share, the Pareto frontier drawn through the best points.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

log = logging.getLogger(__name__)

__all__ = [
    "write_json", "write_csv", "markdown_table", "write_plots", "flatten_row", "pareto_front",
    "write_all", "quality_key",
]

_CSV_FIRST = ["method", "backend", "precision", "tile", "margin", "batch", "tiles", "input_h", "input_w", "scale",
              "n", "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "fps", "out_mpix_per_s",
              "useful_gflop", "executed_gflop", "tiling_overhead", "gflops", "frac_peak", "compute_ms",
              "backend_gflops"]


def flatten_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One CSV row: nested ``stages_ms`` become ``stage_<name>_ms`` columns; samples dropped."""
    out = {k: v for k, v in row.items() if k not in ("stages_ms", "name")}
    for k, v in (row.get("stages_ms") or {}).items():
        out[f"stage_{k}_ms"] = v
    return out


def write_json(data: Mapping[str, Any], path: str | os.PathLike) -> Path:
    p = Path(path)
    p.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    return p


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write rows (flattened) with a stable column order: known columns first, then the rest sorted."""
    flat = [flatten_row(r) for r in rows]
    keys: list[str] = [k for k in _CSV_FIRST if any(k in r for r in flat)]
    rest = sorted({k for r in flat for k in r} - set(keys))
    p = Path(path)
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys + rest, extrasaction="ignore")
        w.writeheader()
        for r in flat:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys + rest})
    return p


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _tile_txt(r: Mapping[str, Any]) -> str:
    if r.get("method") == "torch-chop":
        return "quadrants"
    t = r.get("tile")
    n = r.get("tiles")
    return "whole" if not t else f"{t}/{r.get('margin', 0)}" + (f" ({n} tiles)" if n else "")


def markdown_table(result: Mapping[str, Any]) -> str:
    """The bench result as markdown: a header (model, input, machine, peak) and one row per measurement,
    then the stage breakdown (mean ms per stage and its share of the mean latency) of every row.

    Speedups are baseline mean latency / row mean latency (> 1: the row is faster).
    """
    rows = result.get("rows", [])
    env = result.get("env", {}) or {}
    peak = result.get("peak") or {}
    bases = [k[len("speedup_vs_"):] for k in (rows[0] if rows else {}) if k.startswith("speedup_vs_")]
    h, w = (result.get("input") or [0, 0])[:2]
    lines = [
        f"**{result.get('model', '?')}**, input {h}x{w}; "
        f"{env.get('cpu_model', '?')} ({env.get('cpu_cores', '?')} cores)"
        + (f", GPU {', '.join(g['name'] for g in env.get('gpus', []))}" if env.get("gpus") else "")
        + (f"; peak {peak.get('gflops', float('nan')):.0f} GFLOP/s ({peak.get('what', '')})" if peak else ""),
        "",
    ]
    head = ["method", "backend", "prec", "tile/margin", "batch", "p50 ms", "mean ± std ms", "p99 ms", "frames/s",
            "out MP/s", "GFLOP/s", "% peak", "tiling ×", "backend GFLOP/s"] + [f"vs {b}" for b in bases]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        fp = r.get("frac_peak")
        cells = [r.get("method", "?"), r.get("backend", ""), r.get("precision", ""), _tile_txt(r), _fmt(r.get("batch")),
                 _fmt(r.get("p50_ms")), f"{_fmt(r.get('mean_ms'))} ± {_fmt(r.get('std_ms'))}", _fmt(r.get("p99_ms")),
                 _fmt(r.get("fps"), 2), _fmt(r.get("out_mpix_per_s"), 3), _fmt(r.get("gflops")),
                 _fmt(100 * fp if fp is not None else None), _fmt(r.get("tiling_overhead"), 2), _fmt(r.get("backend_gflops"))]
        cells += [f"{_fmt(r.get(f'speedup_vs_{b}'), 2)}×" for b in bases]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += _stage_table(rows)
    for s in result.get("skipped", []) or []:
        lines.append("")
        lines.append(f"- skipped {s.get('method')}{' [' + s['config'] + ']' if s.get('config') else ''}: {s.get('reason')}")
    return "\n".join(lines) + "\n"


def _stage_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown lines of the stage breakdown: mean ms per frame of each stage (share of the mean
    latency), one row per measurement that timed stages; no lines when none did."""
    from .latency import STAGES

    timed = [r for r in rows if r.get("stages_ms")]
    seen = {k for r in timed for k in r["stages_ms"]}
    names = [s for s in STAGES if s in seen] + sorted(seen - set(STAGES))
    if not names:
        return []

    def cell(r: Mapping[str, Any], name: str) -> str:
        v, mean = r["stages_ms"].get(name), r.get("mean_ms")
        if v is None:
            return "–"
        return f"{v:.2f} ({100 * v / mean:.0f}%)" if mean else f"{v:.2f}"

    head = ["method", "backend", "prec", "tile/margin", "batch"] + names
    lines = ["", "Stages: mean ms per frame (share of the mean latency); hanrt's are the Upscaler's own "
             "(prepare, gather, compute = host time in the backend, stitch, finish).", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in timed:
        cells = [r.get("method", "?"), r.get("backend", ""), r.get("precision", ""), _tile_txt(r),
                 _fmt(r.get("batch"))] + [cell(r, n) for n in names]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def quality_key(precision: str, tiled: bool) -> str:
    """Join key between bench rows and eval columns: ``"fp32 tiled"``, ``"fp16 whole"``, ..."""
    return f"{precision} {'tiled' if tiled else 'whole'}"


def pareto_front(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (speed, quality) not dominated by another (higher or equal in both, better in one),
    sorted by speed ascending."""
    pts = sorted(set(points), key=lambda p: (-p[0], -p[1]))
    front: list[tuple[float, float]] = []
    best_q = -math.inf
    for s, q in pts:
        if q > best_q:
            front.append((s, q))
            best_q = q
    return sorted(front)


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        log.warning("plots skipped: matplotlib is not installed (%s); pip install 'hanrt[bench]'", exc)
        return None
    return plt


def write_plots(result: Mapping[str, Any], out_dir: str | os.PathLike,
                quality: Mapping[str, float] | None = None) -> list[Path]:
    """Write the PNG plots (see the module docstring); returns the files written.

    ``quality``: PSNR (dB) per :func:`quality_key` (from ``hanrt eval``'s summary) for the Pareto chart.
    """
    plt = _plt()
    if plt is None:
        return []
    out = Path(out_dir)
    rows = [r for r in result.get("rows", []) if r.get("method") == "hanrt"]
    base = [r for r in result.get("rows", []) if r.get("method") != "hanrt"]
    written: list[Path] = []
    title = f"{result.get('model', '')}, input {'x'.join(str(v) for v in result.get('input', []))}"

    # latency vs tile
    if rows:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        tiles = sorted({r["tile"] for r in rows if r.get("tile")})
        xpos = {t: i for i, t in enumerate(tiles)}
        xpos[0] = len(tiles)
        groups: dict[tuple, list] = {}
        for r in rows:
            groups.setdefault((r["backend"], r["precision"], r.get("batch")), []).append(r)
        for (be, pr, b), rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
            rs = sorted(rs, key=lambda r: xpos[r.get("tile") or 0])
            xs = [xpos[r.get("tile") or 0] for r in rs]
            ys = [r["mean_ms"] for r in rs]
            err = [[0 for _ in rs], [max(0.0, r["p90_ms"] - r["mean_ms"]) for r in rs]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"hanrt {be} {pr} batch {b}")
        for r in base:
            ax.axhline(r["mean_ms"], ls="--", lw=1, color="grey")
            ax.text(len(tiles), r["mean_ms"], f" {r['method']}", va="bottom", ha="right", fontsize=8, color="grey")
        ax.set_xticks(range(len(tiles) + 1), [str(t) for t in tiles] + ["whole"])
        ax.set_xlabel("tile side (input pixels, margin included)")
        ax.set_ylabel("latency per frame, mean (ms); whisker: p90")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        p = out / "latency_vs_tile.png"
        fig.tight_layout()
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)

        # throughput vs batch
        fig, ax = plt.subplots(figsize=(7, 4.5))
        groups = {}
        for r in rows:
            groups.setdefault((r["backend"], r["precision"], r.get("tile") or 0), []).append(r)
        for (be, pr, t), rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
            rs = sorted(rs, key=lambda r: r.get("batch") or 1)
            ax.plot([r.get("batch") or 1 for r in rs], [r["fps"] for r in rs], marker="o",
                    label=f"hanrt {be} {pr} tile {t or 'whole'}")
        for r in base:
            ax.axhline(r["fps"], ls="--", lw=1, color="grey")
            ax.text(1, r["fps"], f" {r['method']}", va="bottom", fontsize=8, color="grey")
        ax.set_xlabel("batch (tiles per backend call)")
        ax.set_ylabel("throughput (frames/s)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        p = out / "throughput_vs_batch.png"
        fig.tight_layout()
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)

    # quality vs speed
    if quality:
        pts: list[tuple[float, float, str]] = []
        for r in rows:
            q = quality.get(quality_key(r["precision"], bool(r.get("tile"))))
            if q is not None and math.isfinite(q):
                pts.append((r["fps"], q, f"{r['precision']} {_tile_txt(r)} b{r.get('batch')}"))
        for r in base:
            q = quality.get(quality_key("fp32", r["method"] != "torch-eager"))
            if r["method"] == "torch-eager" and q is not None:
                pts.append((r["fps"], q, r["method"]))
        if pts:
            fig, ax = plt.subplots(figsize=(7, 4.5))
            groups2: dict[str, list[tuple[float, float]]] = {}
            for x, y, lab in pts:
                g = lab if lab.startswith("torch") else f"hanrt {lab.split()[0]} {'whole' if ' whole' in lab else 'tiled'}"
                groups2.setdefault(g, []).append((x, y))
            for g, xy in sorted(groups2.items()):
                ax.scatter([p[0] for p in xy], [p[1] for p in xy], marker="o" if "whole" in g or "torch" in g else "s",
                           label=g, alpha=0.8)
            front = pareto_front((x, y) for x, y, _ in pts)
            ax.plot([f[0] for f in front], [f[1] for f in front], "r-", lw=1, label="Pareto frontier")
            for x, y, lab in pts:  # label the frontier only: the rest are in the legend
                if (x, y) in front:
                    ax.annotate(lab, (x, y), fontsize=7, xytext=(3, -10), textcoords="offset points")
            if "bicubic" in quality:
                ax.axhline(quality["bicubic"], ls=":", color="grey", label=f"bicubic {quality['bicubic']:.2f} dB")
            ax.set_xlabel("throughput (frames/s, this input size)")
            ax.set_ylabel("PSNR on Y (dB)")
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
            p = out / "pareto.png"
            fig.tight_layout()
            fig.savefig(p, dpi=110)
            plt.close(fig)
            written.append(p)
    return written


def write_all(result: Mapping[str, Any], out_dir: str | os.PathLike, *, plots: bool = True,
              quality: Mapping[str, float] | None = None) -> dict[str, Path]:
    """Write ``bench.json``, ``bench.csv``, ``bench.md`` and the plots into ``out_dir`` (created)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "json": write_json(result, out / "bench.json"),
        "csv": write_csv(result.get("rows", []), out / "bench.csv"),
    }
    md = out / "bench.md"
    md.write_text(markdown_table(result), encoding="utf-8")
    files["md"] = md
    if plots:
        for p in write_plots(result, out, quality):
            files[p.stem] = p
    return files

"""A real (tiny) bench run and its outputs: JSON, CSV, markdown, PNG plots."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from hanrt_bench.report import markdown_table, pareto_front, quality_key, write_all

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def bench_result(tiny_onnx, tiny_checkpoint):
    from hanrt_bench.bench import resolve_model, run_bench
    from hanrt_bench.envinfo import environment
    from hanrt_bench.peak import cpu_peak
    from hanrt_bench.suite import parse_suite

    suite = parse_suite({"input": [24, 30], "warmup": 0, "iters": 2,
                         "sweep": {"backend": ["ort-cpu"], "tile": [16, 0], "margin": [2], "batch": [1, 2]}})
    src = resolve_model(str(tiny_onnx), checkpoint=str(tiny_checkpoint))
    try:
        res = run_bench(suite, src, peak=cpu_peak(256, reps=1).to_dict(), env=environment())
    finally:
        src.close()
    return res.to_dict()


def test_rows_and_accounting(bench_result):
    rows = bench_result["rows"]
    methods = [r["method"] for r in rows]
    assert methods[:3] == ["torch-eager", "torch-chop", "torch-tile"]
    # tiles 16 and whole x batch 1 and 2; whole-image batch 2 is one tile again, so it is not run twice
    assert methods.count("hanrt") == 3
    assert any("runs the same as" in s["reason"] for s in bench_result["skipped"])
    for r in rows:
        assert r["n"] == 2 and r["mean_ms"] > 0 and r["p50_ms"] <= r["max_ms"]
        assert r["fps"] == pytest.approx(1000 / r["mean_ms"])
        assert r["out_mpix_per_s"] == pytest.approx(24 * 30 * 16 / (r["mean_ms"] / 1000) / 1e6)
        assert r["gflops"] == pytest.approx(r["useful_gflop"] / (r["mean_ms"] / 1000))
        assert 0 < r["frac_peak"] and r["executed_gflop"] >= r["useful_gflop"]
        assert r["speedup_vs_torch-eager"] > 0
    eager = rows[0]
    assert eager["speedup_vs_torch-eager"] == pytest.approx(1.0) and eager["tiling_overhead"] == 1.0
    tiled = [r for r in rows if r["method"] == "hanrt" and r["tile"] == 16]
    whole = [r for r in rows if r["method"] == "hanrt" and r["tile"] == 0]
    assert tiled and whole and all(r["tiling_overhead"] > 1.2 and r["tiles"] > 1 for r in tiled)
    assert all(r["tiling_overhead"] == 1.0 and r["tiles"] == 1 for r in whole)
    # the backend's share is measured and never exceeds the whole call
    assert all(0 < r["compute_ms"] <= r["mean_ms"] * 1.05 for r in tiled)
    # hanrt rows: the Upscaler's own stages, which lie inside the call; baselines keep theirs
    for r in tiled + whole:
        assert list(r["stages_ms"]) == ["prepare", "gather", "compute", "stitch", "finish"]
        assert r["compute_ms"] == r["stages_ms"]["compute"] and sum(r["stages_ms"].values()) <= r["mean_ms"]
    assert {"preprocess", "compute", "stitch"} <= set(eager["stages_ms"])
    assert bench_result["env"]["cpu_cores"] >= 1 and bench_result["peak"]["gflops"] > 0


def test_outputs_exist_and_parse(bench_result, tmp_path):
    pytest.importorskip("matplotlib")
    quality = {"bicubic": 25.0, "fp32 whole": 27.0, "fp32 tiled": 26.9}
    files = write_all(bench_result, tmp_path, quality=quality)
    data = json.loads(files["json"].read_text())
    assert len(data["rows"]) == len(bench_result["rows"])
    with open(files["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(bench_result["rows"])
    assert float(rows[0]["mean_ms"]) == pytest.approx(bench_result["rows"][0]["mean_ms"])
    assert "stage_compute_ms" in rows[0] and "stage_gather_ms" in rows[0]
    hanrt_csv = [r for r in rows if r["method"] == "hanrt"]
    assert hanrt_csv and all(float(r["stage_gather_ms"]) > 0 and r["stage_preprocess_ms"] == "" for r in hanrt_csv)
    md = files["md"].read_text()
    main_table, stage_table = md.split("\nStages: ")
    assert main_table.count("\n| ") == len(bench_result["rows"]) + 1 and "vs torch-chop" in main_table
    # every row again in the stage table: baselines' and hanrt's stages side by side, in pipeline order
    assert stage_table.count("\n| ") == len(bench_result["rows"]) + 1
    assert "| prepare | preprocess | gather | h2d | compute | d2h | stitch | finish |" in stage_table
    for name in ("latency_vs_tile", "throughput_vs_batch", "pareto"):
        with Image.open(files[name]) as im:
            assert im.format == "PNG" and im.size[0] > 300
            assert np.asarray(im.convert("L")).std() > 5  # something was drawn


def test_markdown_reports_skips():
    md = markdown_table({"model": "m", "input": [8, 8], "rows": [], "skipped": [
        {"method": "hanrt", "config": "ort-cpu, fp16", "reason": "no fp16 graph"}]})
    assert "skipped hanrt [ort-cpu, fp16]: no fp16 graph" in md


def test_pareto_front():
    pts = [(1.0, 30.0), (2.0, 29.0), (2.0, 28.0), (3.0, 25.0), (0.5, 29.5), (3.0, 26.0)]
    assert pareto_front(pts) == [(1.0, 30.0), (2.0, 29.0), (3.0, 26.0)]
    assert quality_key("fp16", True) == "fp16 tiled"

"""``hanrt bench`` and ``hanrt eval`` in-process through ``hanrt.cli.main``."""

from __future__ import annotations

import json
import re

import pytest

from hanrt.cli import main


@pytest.mark.parametrize("cmd", ["bench", "eval"])
def test_help_works(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_bench_end_to_end(tiny_onnx, tiny_checkpoint, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("matplotlib")
    out = tmp_path / "b"
    rc = main(["bench", str(tiny_onnx), "--checkpoint", str(tiny_checkpoint), "--input", "20x28",
               "--backend", "ort-cpu", "--tile", "12", "0", "--margin", "2", "--batch", "1", "3",
               "--warmup", "0", "--iters", "1", "--baselines", "torch-eager,torch-chop",
               "--precision", "fp32", "int8", "--output", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert re.search(r"\| hanrt \| ort-cpu \| fp32 \| 12/2 \(\d+ tiles\) \| 3 \|", cap.out), cap.out
    assert "vs torch-chop" in cap.out
    assert "skipped hanrt [ort-cpu, int8" in cap.out  # no INT8 graph beside the tiny model
    data = json.loads((out / "bench.json").read_text())
    assert [r["method"] for r in data["rows"]].count("hanrt") == 3  # whole image x batch 3 == batch 1
    assert {"torch-eager", "torch-chop"} <= {r["method"] for r in data["rows"]}
    for f in ("bench.csv", "bench.md", "latency_vs_tile.png", "throughput_vs_batch.png"):
        assert (out / f).is_file()


def test_bench_image_file_times_decode_and_encode(tiny_onnx, tmp_path, photo_small, capsys):
    pytest.importorskip("onnxruntime")
    from PIL import Image

    p = tmp_path / "in.png"
    Image.fromarray(photo_small).save(p)
    rc = main(["bench", str(tiny_onnx), "--input", str(p), "--backend", "ort-cpu", "--tile", "0",
               "--warmup", "0", "--iters", "1", "--no-peak", "--output", str(tmp_path / "o"), "--no-plots"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "skip torch-eager: MODEL is not a checkpoint" in cap.err
    row = json.loads((tmp_path / "o" / "bench.json").read_text())["rows"][0]
    assert row["method"] == "hanrt" and row["input_h"] == 61
    # the Upscaler's own stages between decode and encode, in pipeline order
    assert list(row["stages_ms"]) == ["decode", "prepare", "gather", "compute", "stitch", "finish", "encode"]
    assert all(v >= 0 for v in row["stages_ms"].values()) and sum(row["stages_ms"].values()) <= row["mean_ms"]
    assert row["compute_ms"] == row["stages_ms"]["compute"] > 0 and row["backend_gflops"] > 0
    assert "| decode | prepare | gather | compute | stitch | finish | encode |" in cap.out  # markdown stage table
    assert not (tmp_path / "o" / "latency_vs_tile.png").exists()


def test_bench_without_a_model_runs_the_bundled_one(capsys):
    pytest.importorskip("onnxruntime")
    rc = main(["bench", "--input", "12x16", "--tile", "0", "--warmup", "0", "--iters", "1", "--no-peak",
               "--baselines", "none", "--backend", "ort-cpu"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "benchmarking the bundled hanrt_x4.onnx" in cap.err
    assert re.search(r"\| hanrt \| ort-cpu \| fp32 \|", cap.out), cap.out


@pytest.mark.parametrize("name", ["cpu-quick", "gpu-quick"])
def test_every_shipped_suite_runs_as_the_readme_shows(name, capsys):
    """README: ``hanrt bench --suite benchmarks/hanrt_bench/suites/NAME.json`` (no MODEL); shortened
    here by overrides (a small frame, one iteration, no baselines), the suite file itself unchanged."""
    pytest.importorskip("onnxruntime")
    from pathlib import Path

    import hanrt_bench

    suite = Path(hanrt_bench.__file__).parent / "suites" / f"{name}.json"
    rc = main(["bench", "--suite", str(suite), "--input", "24x24", "--warmup", "0", "--iters", "1", "--no-peak",
               "--baselines", "none", "--batch", "1"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "| hanrt |" in cap.out


def test_bench_policy_table(tiny_onnx, capsys, tmp_path):
    pytest.importorskip("onnxruntime")
    rc = main(["bench", str(tiny_onnx), "--policy", "--input", "40x56", "--tile", "24", "32", "--margin", "4",
               "--iters", "4", "--backend", "ort-cpu", "--output", str(tmp_path)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "| 56x40 |" in cap.out and "default's share of the best" in cap.out
    row = json.loads((tmp_path / "policy.json").read_text())[0]
    assert set(row["median_s"]) == {"default", "whole", "tile 24", "tile 32"}
    # the order rotates: every variant leads one of the 4 repeats, and each repeat runs all of them
    assert sorted(o[0] for o in row["orders"]) == sorted(row["median_s"])
    assert all(sorted(o) == sorted(row["median_s"]) for o in row["orders"])
    assert row["peak_mb"] > row["output_mb"] > 0


def test_bench_errors(tmp_path, capsys, tiny_onnx):
    bad = tmp_path / "bad.json"
    bad.write_text('{"sweep": {"backend": ["warp"]}}')
    assert main(["bench", str(tiny_onnx), "--suite", str(bad)]) == 2
    assert "unknown backend 'warp'" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "missing.onnx"), "--no-peak"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["bench", str(tiny_onnx), "--input", "12xq"]) == 2
    assert main(["bench", str(tiny_onnx), "--baselines", "caffe"]) == 2


def test_eval_end_to_end(hr_folder, tiny_onnx, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "e"
    rc = main(["eval", str(hr_folder), "--model", str(tiny_onnx), "--backend", "ort-cpu", "--tile", "8",
               "--margin", "2", "--output", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "| bicubic |" in cap.out and "| fp32 tiled vs whole |" in cap.out
    assert "fp16: no graph" in cap.out
    data = json.loads((out / "summary.json").read_text())
    assert data["images"] == 3 and set(data["quality"]) == {"bicubic", "fp32 whole", "fp32 tiled"}
    assert len(list((out / "crops").glob("*.png"))) == 3


def test_eval_columns_and_errors(hr_folder, tiny_onnx, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    rc = main(["eval", str(hr_folder), "--model", str(tiny_onnx), "--backend", "ort-cpu",
               "--columns", "fp32 whole", "--limit", "1", "--no-crops"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "| fp32 whole |" in cap.out and "fp32 tiled" not in cap.out and "1 images" in cap.out
    assert main(["eval", str(tmp_path / "nowhere"), "--model", str(tiny_onnx)]) == 3
    assert "neither E1 nor a folder" in capsys.readouterr().err
    assert main(["eval", str(hr_folder), "--model", str(tiny_onnx), "--columns", "fp64 whole"]) == 2
    for bad in ("fp32 whole x3", "fp32 whole x2 x4", "fp32 x2"):
        assert main(["eval", str(hr_folder), "--model", str(tiny_onnx), "--columns", bad]) == 2
        assert "self-ensemble" in capsys.readouterr().err
    assert main(["eval", str(hr_folder), "--model", str(tiny_onnx), "--fp16", str(tmp_path / "x.onnx")]) == 3


def test_eval_self_ensemble_columns(hr_folder, tiny_onnx, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "ens"
    rc = main(["eval", str(hr_folder), "--model", str(tiny_onnx), "--backend", "ort-cpu", "--limit", "1",
               "--columns", "fp32 whole, fp32 whole x2,fp32 tiled x8", "--tile", "24", "--no-crops", "-o", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    data = json.loads((out / "summary.json").read_text())
    assert set(data["quality"]) == {"bicubic", "fp32 whole", "fp32 whole x2", "fp32 tiled x8"}
    assert "self-ensemble of 8 passes (mirrored, flipped and transposed)" in cap.out
    assert "tiled vs whole" not in cap.out  # an ensemble column is not compared with one pass
    assert data["quality"]["fp32 whole x2"] != data["quality"]["fp32 whole"]


def test_bench_random_model_torch_backend(capsys):
    """random:GxBxF builds a model (and a checkpoint for hanrt's torch backend); FP16 needs CUDA."""
    pytest.importorskip("onnxruntime")
    torch = pytest.importorskip("torch")
    rc = main(["bench", "random:1x1x4", "--input", "12x10", "--backend", "torch", "--precision", "fp32", "fp16",
               "--tile", "0", "--warmup", "0", "--iters", "1", "--no-peak", "--baselines", "none", "--device", "cpu"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "| hanrt | torch | fp32 | whole |" in cap.out
    assert "HAN x4 1x1x4 (random weights)" in cap.out
    if not torch.cuda.is_available():
        assert "skipped hanrt [torch, fp16" in cap.out

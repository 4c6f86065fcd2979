"""The tiling study script runs end to end on a tiny model and prints a sane table."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("skimage")


def test_study_table(tiny_onnx, capsys):
    from hanrt_bench.tiling_study import format_table, main, run_study

    rows = run_study(tiny_onnx, names=("chelsea",), lr_scale=4, threads=1, tiles=(32, 64), margins=(0, 4, 16))
    (name, p0, _, _, n0), = rows["cells"][(32, 0)]
    (_, p4, _, _, n4), = rows["cells"][(32, 4)]
    assert name == "chelsea" and n4 > n0 > 1
    assert p4 > p0 and p4 >= 40.0  # a margin brings tiled output closer to whole-image output
    assert (32, 16) not in rows["cells"]  # 2m >= T: no core
    table = format_table(rows, (32, 64), (0, 4, 16))
    assert "n/a (2m >= T)" in table and "x1.78" in table
    assert main(["--model", str(tiny_onnx), "--photos", "chelsea", "--tiles", "64", "--margins", "4"]) == 0
    out = capsys.readouterr().out
    assert "| 4 |" in out and not math.isnan(rows["whole"]["chelsea"][0])

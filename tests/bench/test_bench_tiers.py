"""hanrt_bench needs only hanrt: torch, onnx, matplotlib and scikit-image are optional, imported lazily,
and their parts are skipped with a message where missing (a Jetson runtime-only install)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPTIONAL = ["torch", "onnx", "onnxslim", "matplotlib", "skimage", "modelopt"]
MODULES = ["hanrt_bench", "hanrt_bench.latency", "hanrt_bench.flops", "hanrt_bench.peak", "hanrt_bench.envinfo",
           "hanrt_bench.baselines", "hanrt_bench.suite", "hanrt_bench.bench", "hanrt_bench.report",
           "hanrt_bench.quality", "hanrt_bench.evaluate", "hanrt_bench.cli", "hanrt_bench.commands.bench", "hanrt_bench.commands.eval"]

from hanrt_testkit import IMPORT_BLOCKER as BLOCKER


def _run(code: str, blocked: list[str], *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(ROOT / d) for d in ("runtime", "export", "benchmarks"))
    return subprocess.run([sys.executable, "-c", BLOCKER + code, json.dumps(blocked), *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_modules_import_without_optional_packages():
    code = r"""
import importlib
errs = {}
for m in json.loads(sys.argv[2]):
    try:
        importlib.import_module(m)
    except BaseException as e:
        errs[m] = repr(e)
leaked = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)
print(json.dumps({"errors": errs, "leaked": leaked}))
"""
    r = _run(code, OPTIONAL + ["onnxruntime", "tensorrt", "cuda", "av", "cv2"], json.dumps(MODULES))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res == {"errors": {}, "leaked": []}


@pytest.mark.parametrize("cmd", ["bench", "eval"])
def test_help_with_everything_optional_blocked(cmd):
    code = f"\nimport runpy\nsys.argv = ['hanrt', '{cmd}', '--help']\nrunpy.run_module('hanrt', run_name='__main__')\n"
    r = _run(code, OPTIONAL + ["onnxruntime", "tensorrt", "cuda", "av", "cv2"])
    assert r.returncode == 0, r.stderr
    assert "examples:" in r.stdout


def test_bench_runs_without_torch_and_matplotlib(tiny_onnx, tmp_path):
    """ONNX Runtime only: the torch baselines and the plots are skipped with a message; the rest is written."""
    pytest.importorskip("onnxruntime")
    code = (f"\nfrom hanrt.cli import main\nsys.exit(main(['bench', {str(tiny_onnx)!r}, '--input', '16x20', '--tile', '0',"
            f" '--warmup', '0', '--iters', '1', '--backend', 'ort-cpu', '--output', {str(tmp_path)!r}]))\n")
    r = _run(code, OPTIONAL)
    assert r.returncode == 0, r.stderr
    assert "torch is not installed: the PyTorch baselines are skipped" in r.stderr
    assert "no plots written" in r.stderr
    assert "| hanrt | ort-cpu | fp32 | whole |" in r.stdout
    assert (tmp_path / "bench.json").is_file() and not list(tmp_path.glob("*.png"))


def test_random_model_without_onnx_runs_the_torch_backend():
    """A GPU box with torch but no onnx: the ONNX configurations are skipped with the reason, torch runs."""
    pytest.importorskip("torch")
    code = ("\nfrom hanrt.cli import main\nsys.exit(main(['bench', 'random:1x1x4', '--input', '8x8', '--tile', '0',"
            " '--warmup', '0', '--iters', '1', '--no-peak', '--baselines', 'torch-eager', '--device', 'cpu',"
            " '--backend', 'torch', 'ort-cpu']))\n")
    r = _run(code, ["onnx", "onnxslim", "matplotlib"])
    assert r.returncode == 0, r.stderr
    assert "| hanrt | torch | fp32 | whole |" in r.stdout and "| torch-eager |" in r.stdout
    assert "skipped hanrt [ort-cpu, fp32, tile whole]: no ONNX graph" in r.stdout

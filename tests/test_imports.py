"""Dependency tiers (DESIGN.md): each module imports in a fresh interpreter with the heavy packages
blocked by a meta-path finder that raises ImportError.

- every ``hanrt`` module imports without torch and onnx (tier 2 never leaks into the runtime);
  a tier-1 module may fail only because its own optional package is *absent here* (not blocked);
- the tier-0 core imports with onnxruntime, tensorrt, cuda, av and cv2 blocked too;
- ``python3 -m hanrt upscale --help`` works with all of them blocked.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIER2 = ["torch", "onnx", "onnxslim", "modelopt"]
TIER1 = ["onnxruntime", "tensorrt", "cuda", "av", "cv2", "pycuda"]
CORE = [
    "hanrt",
    "hanrt.errors",
    "hanrt.model_info",
    "hanrt.tiling",
    "hanrt.io",
    "hanrt.io.images",
    "hanrt.io.atomic",
    "hanrt.cli",
    "hanrt.upscaler",
    "hanrt.backends",
    "hanrt.backends.base",
    "hanrt.io.digest",
    # the TensorRT package loads tensorrt and cuda-python on first use only
    "hanrt.backends.tensorrt",
    "hanrt.backends.tensorrt.profiles",
    "hanrt.backends.tensorrt.cache",
    "hanrt.backends.tensorrt.build",
    "hanrt.backends.tensorrt.backend",
    "hanrt.backends.tensorrt.cuda",
]

from hanrt_testkit import IMPORT_BLOCKER as BLOCKER


def _env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT / d) for d in ("runtime", "export", "benchmarks")]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _import_all(modules: list[str], blocked: list[str]) -> dict[str, str]:
    """Import ``modules`` in a subprocess with ``blocked`` packages; return {module: error} for failures."""
    code = BLOCKER + r"""
import importlib, traceback
out = {}
for m in json.loads(sys.argv[2]):
    try:
        importlib.import_module(m)
    except BaseException as e:
        chain, c = [], e
        while c is not None:
            chain.append(f"{type(c).__name__}: {c}")
            c = c.__cause__ or c.__context__
        out[m] = " <- ".join(chain)
leaked = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)
print(json.dumps({"errors": out, "leaked": leaked}))
"""
    r = subprocess.run([sys.executable, "-c", code, json.dumps(blocked), json.dumps(modules)],
                       capture_output=True, text=True, env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert not res["leaked"], f"blocked packages ended up in sys.modules: {res['leaked']}"
    return res["errors"]


def _runtime_modules() -> list[str]:
    import hanrt

    mods = ["hanrt"]
    for m in pkgutil.walk_packages(hanrt.__path__, "hanrt."):
        if m.name.endswith("__main__"):
            continue
        mods.append(m.name)
    return mods


def _cli_modules() -> list[str]:
    import hanrt.cli

    return ["hanrt.cli." + m.name for m in pkgutil.iter_modules(hanrt.cli.__path__)]


def test_runtime_never_imports_torch_or_onnx():
    mods = _runtime_modules()
    assert "hanrt.tiling" in mods and "hanrt.backends.onnxrt" in mods
    errors = _import_all(mods, TIER2)
    bad = {m: e for m, e in errors.items() if "blocked by test" in e}
    assert not bad, f"runtime modules import tier-2 packages: {bad}"
    # any other failure must be a tier-1 package that is simply not installed on this machine
    for m, e in errors.items():
        assert "No module named" in e and any(f"'{p}" in e for p in TIER1), (m, e)


def test_core_imports_with_every_heavy_package_blocked():
    mods = CORE + _cli_modules()
    errors = _import_all(mods, TIER2 + TIER1)
    assert not errors, errors


def test_upscale_help_with_heavy_packages_blocked():
    code = BLOCKER + "\nimport runpy\nsys.argv = ['hanrt', 'upscale', '--help']\nrunpy.run_module('hanrt', run_name='__main__')\n"
    r = subprocess.run([sys.executable, "-c", code, json.dumps(TIER2 + TIER1)],
                       capture_output=True, text=True, env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--tile" in r.stdout and "--backend" in r.stdout


def test_missing_backend_package_names_the_extra(tmp_path):
    """With onnxruntime blocked, asking for the ONNX Runtime backend names the extra to install."""
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")  # never read: the dependency check comes first
    code = BLOCKER + (
        "\nfrom hanrt.cli import main\n"
        f"sys.exit(main(['upscale', {str(tmp_path / 'x.png')!r}, '--output', {str(tmp_path / 'o.png')!r},"
        f" '--model', {str(model)!r}]))\n"
    )
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(TIER2 + TIER1)],
                       capture_output=True, text=True, env=_env(), timeout=120)
    assert r.returncode == 5, (r.returncode, r.stderr)
    assert "hanrt[cpu]" in r.stderr


def test_trt_lint_needs_no_torch():
    """The TensorRT support table is pure data (no torch, no onnx); the lint needs onnx only."""
    assert not _import_all(["hanrt_export.trt_ops"], TIER2 + TIER1)
    assert not _import_all(["hanrt_export.trt_lint"], ["torch", "onnxslim", "modelopt"] + TIER1)


def test_registered_commands_and_backends_import_without_their_extras():
    """Every module an entry point names (hanrt's own and the host-side packages': export, train,
    lint, bench, eval, the torch backend's spec) imports with torch, onnx and every backend package
    blocked, so `hanrt --help` and `auto` never need an extra; so do the torch-free typed requests
    and HANConfig."""
    import hanrt.plugins as P

    mods = sorted({e.value.partition(":")[0] for g in (P.COMMANDS, P.BACKENDS) for e in P.entries(g)})
    assert {"hanrt_export.commands.export", "hanrt_bench.commands.eval", "hanrt_export.torch_spec"} <= set(mods)
    extra = ["hanrt_export.requests", "hanrt_export.han_config", "hanrt_bench.requests", "hanrt_bench.flops"]
    assert not _import_all(mods + extra, TIER2 + TIER1 + ["tritonclient", "pytriton", "matplotlib", "skimage"])

"""The environment record written with every benchmark: where the numbers came from.

Only cheap, side-effect-free probes: ``/proc/cpuinfo``, ``os``, package versions from
installed metadata (packages are not imported, so a broken CUDA install cannot crash a CPU
benchmark), ``nvidia-smi`` and Jetson's ``nvpmodel -q`` when they are on ``PATH`` (2 s limit each).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

__all__ = ["environment", "PACKAGES"]

# distribution name -> key in the record
PACKAGES = {
    "hanrt": "hanrt", "numpy": "numpy", "Pillow": "pillow", "onnxruntime": "onnxruntime",
    "onnxruntime-gpu": "onnxruntime_gpu", "tensorrt": "tensorrt", "torch": "torch",
    "cuda-python": "cuda_python", "onnx": "onnx", "matplotlib": "matplotlib",
}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=2.0, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist, key in PACKAGES.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    if out["hanrt"] is None:  # running from a checkout (pytest's pythonpath): the package knows
        import hanrt

        out["hanrt"] = f"{hanrt.__version__} (checkout)"
    return out


def _gpus() -> list[dict[str, str]]:
    q = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
              "--format=csv,noheader"])
    gpus = []
    if q:
        for line in q.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 4:
                gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2], "compute_capability": parts[3]})
    return gpus


def _cuda_version() -> str | None:
    smi = _run(["nvidia-smi"])
    if smi:
        for tok in smi.split("|"):
            if "CUDA Version" in tok:
                return tok.split("CUDA Version:")[-1].strip()
    return None


def environment() -> dict[str, Any]:
    """A JSON-ready record of the machine and software stack (see the module docstring)."""
    rec: dict[str, Any] = {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "versions": _versions(),
        "gpus": _gpus(),
        "cuda_driver_version": _cuda_version(),
    }
    nv = _run(["nvpmodel", "-q"])
    if nv is not None:
        rec["jetson_power_mode"] = nv
    try:
        with open("/etc/nv_tegra_release", encoding="utf-8") as f:
            rec["jetson_l4t"] = f.readline().strip()
    except OSError:
        pass
    return rec

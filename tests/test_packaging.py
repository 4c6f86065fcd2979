"""pyproject.toml's TensorRT extras (finding 7): each pins TensorRT and cuda-bindings to one CUDA major
version, so a CUDA 12 driver never gets CUDA 13 packages (which return cudaErrorInsufficientDriver from
every call), and the versions the conformance suite checks hanrt against are the ones they install."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conformance import fetch  # noqa: E402


def _extras() -> dict[str, dict[str, Requirement]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {k: {Requirement(r).name: Requirement(r) for r in v}
            for k, v in data["project"]["optional-dependencies"].items()}


def test_trt_extras_pin_one_cuda_major_each():
    ex = _extras()
    assert set(ex["trt-cu12"]) == {"tensorrt-cu12", "cuda-bindings"}
    assert set(ex["trt-cu13"]) == {"tensorrt-cu13", "cuda-bindings"}
    assert str(ex["trt"]["hanrt"]) == "hanrt[trt-cu12]"  # plain trt: the CUDA 12 build
    cu12, cu13 = ex["trt-cu12"]["cuda-bindings"].specifier, ex["trt-cu13"]["cuda-bindings"].specifier
    assert "12.9.10" in cu12 and "13.0.0" not in cu12 and "12.8.0" in cu12
    assert "13.0.0" in cu13 and "13.5.0" in cu13 and "12.9.10" not in cu13 and "14.0.0" not in cu13
    for name, extra in (("tensorrt-cu12", "trt-cu12"), ("tensorrt-cu13", "trt-cu13")):
        spec = ex[extra][name].specifier
        assert "11.4.0.106" in spec and "12.0.0" not in spec and "9.0.0" not in spec
    assert "10.3.0" in ex["trt-cu12"]["tensorrt-cu12"].specifier  # JetPack 6's TensorRT
    assert not any(n in ("tensorrt", "cuda-python") for reqs in ex.values() for n in reqs)


def test_the_conformance_matrix_is_what_the_extras_install():
    ex = _extras()
    for version, wheel in fetch.TRT_WHEELS.items():
        cu = "cu13" if "-cu13-" in wheel else "cu12"
        assert version in ex[f"trt-{cu}"][f"tensorrt-{cu}"].specifier, (version, cu)
    for version in fetch.CUDA_WHEELS:
        assert any(version in ex[e]["cuda-bindings"].specifier for e in ("trt-cu12", "trt-cu13")), version

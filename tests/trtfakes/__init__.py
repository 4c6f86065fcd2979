"""Fakes of ``tensorrt`` and ``cuda.bindings.runtime`` generated from the real modules' specs.

    from trtfakes import install
    with install("10.3.0", "12.9.10") as fx:     # sys.modules['tensorrt'], ['cuda.bindings.runtime'] ...
        ... drive hanrt ...
        assert not fx.log.violations and not fx.sim.live()

Specs come from :mod:`conformance.fetch` (real wheels, cached). ``real_cuda=True`` (only in a
subprocess whose ``sys.path`` holds the real cuda-bindings: see ``conformance/scenario.py``) makes
every CUDA call go to the real function first.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from dataclasses import dataclass
from typing import Iterator

from .cuda import CudaSim, _CudartModule, make_cudart
from .spec import LOG, PROCEED, Checked, Log
from .trt import CACHE_MAGIC, PLAN_MAGIC, _FakeModule, make_trt

__all__ = ["install", "Fakes", "load_spec", "reset_hanrt_caches", "LOG", "PROCEED", "read_plan", "timing_cache_blob",
           "read_timing_cache"]

_SPECS: dict[tuple[str, str], dict] = {}


def load_spec(kind: str, version: str) -> dict:
    """The cached spec of TensorRT (``kind="trt"``) or cuda-bindings (``"cuda"``) ``version``
    (downloading and dumping it first if needed: :mod:`conformance.fetch`)."""
    key = (kind, version)
    if key not in _SPECS:
        from conformance import fetch

        u = fetch.trt(version) if kind == "trt" else fetch.cuda(version)
        _SPECS[key] = fetch.spec(u)
    return _SPECS[key]


@dataclass
class Fakes:
    trt: types.ModuleType
    cudart: types.ModuleType
    sim: CudaSim
    log: Log

    @property
    def builds(self) -> int:
        return self.trt._fake.builds


def read_plan(data: bytes) -> dict:
    """What a plan the fake built holds: TensorRT version, GPU, I/O, profiles (per input: min/opt/max)."""
    import json

    assert data.startswith(PLAN_MAGIC), "not a plan of the fake TensorRT"
    return json.loads(data[len(PLAN_MAGIC):])


def timing_cache_blob(key: dict, entries) -> bytes:
    """A serialized timing cache of the fake for ``key`` (``{"tensorrt", "gpu", "cc"}``)."""
    import json

    return CACHE_MAGIC + json.dumps({"key": key, "entries": sorted(entries)}).encode()


def read_timing_cache(blob: bytes) -> dict:
    import json

    assert blob.startswith(CACHE_MAGIC), "not a timing cache of the fake TensorRT"
    return json.loads(blob[len(CACHE_MAGIC):])


def reset_hanrt_caches() -> None:
    """Forget what hanrt's modules cached from a previous fake (the cudart module, a logger...)."""
    for name, mod in list(sys.modules.items()):
        if not name.startswith("hanrt") or mod is None:
            continue
        for attr, v in list(vars(mod).items()):
            if isinstance(v, (Checked, _CudartModule, _FakeModule)) or (attr == "_CUDART" and v is not None):
                setattr(mod, attr, None)


@contextlib.contextmanager
def install(trt_version: str, cuda_version: str, *, real_cuda: bool = False, log: Log = LOG,
            legacy: bool = False) -> Iterator[Fakes]:
    """Install the fakes in ``sys.modules`` (``legacy``: as the old ``cuda.cudart`` module only)."""
    log.reset()
    sim = CudaSim(log=log, legacy=legacy)
    real = importlib.import_module("cuda.cudart" if legacy else "cuda.bindings.runtime") if real_cuda else None
    trt = make_trt(load_spec("trt", trt_version), sim, log=log)
    cudart = make_cudart(load_spec("cuda", cuda_version), sim, real, log=log)
    names = ["tensorrt", "cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"]
    saved = {n: sys.modules.get(n) for n in names}
    saved_attr = {}
    try:
        sys.modules["tensorrt"] = trt
        if real_cuda and legacy:  # the real cuda package (cuda-python <= 12.5) has no cuda.bindings
            sys.modules["cuda"].cudart = cudart
            sys.modules["cuda.cudart"] = cudart
        elif real_cuda:
            pkg = sys.modules["cuda.bindings"]
            saved_attr = {"runtime": pkg.__dict__.get("runtime")}
            pkg.runtime = cudart
        else:
            cuda_pkg = types.ModuleType("cuda")
            cuda_pkg.__path__ = []
            sys.modules["cuda"] = cuda_pkg
            if legacy:
                sys.modules["cuda.bindings"] = None  # ImportError, as cuda-python <= 12.5
                cuda_pkg.cudart = cudart
                sys.modules["cuda.cudart"] = cudart
            else:
                bindings = types.ModuleType("cuda.bindings")
                bindings.__path__ = []
                bindings.runtime = cudart
                cuda_pkg.bindings = bindings
                sys.modules["cuda.bindings"] = bindings
                sys.modules["cuda.cudart"] = None
        if not legacy:
            sys.modules["cuda.bindings.runtime"] = cudart
        reset_hanrt_caches()
        yield Fakes(trt, cudart, sim, log)
    finally:
        if real_cuda and saved_attr.get("runtime") is not None:
            sys.modules["cuda.bindings"].runtime = saved_attr["runtime"]
        if real_cuda and legacy:
            sys.modules["cuda"].cudart = real
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
        reset_hanrt_caches()

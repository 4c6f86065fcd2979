"""Every TensorRT call and everything around it, in one package (tier 1: ``tensorrt`` + cuda-python).

- :mod:`.profiles` -- optimization profiles: shapes and batches an engine accepts (pure).
- :mod:`.cache` -- fingerprint, sidecar, engine cache, build lock, refusal (pure: stdlib + hanrt).
- :mod:`.build` -- the calls into ``tensorrt``: target query, engine build, engine load.
- :mod:`.backend` -- :class:`TensorRTBackend`: a built engine on a CUDA device, async slots.
- :mod:`.cuda` -- a thin wrapper over cuda-python's runtime API (pinned/device buffers, streams).

Importing this package imports neither ``tensorrt`` nor cuda-python: both are loaded on first use,
and a missing one raises :class:`~hanrt.errors.MissingDependencyError` naming the extra.

**None of the TensorRT/CUDA calls here has run on a GPU yet** (no machine available to the
project has TensorRT); they are checked against the real bindings' API without a GPU, and
``benchmarks/gpu_check.sh`` lists what needs a GPU to confirm.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import ModelError
from ..base import ENGINE, Backend, BackendSpec, OpenOptions, Probe, TrtConfig, installed

#: Where each public name lives. Imported on first use (PEP 562), so that loading the ``trt`` spec
#: (``--backend auto`` loads every spec) costs no more than this file.
_LAZY = {
    "backend": ("TensorRTBackend", "resolve_memory", "slot_nbytes"),
    "cache": ("SIDECAR_FORMAT", "BuildOptions", "BuiltPlan", "EngineResult", "Fingerprint", "Sidecar", "Target",
              "check_compatible", "default_cache_dir", "engine_path", "file_lock", "find_engine", "get_or_build",
              "read_sidecar", "rebuild_command", "sidecar_path", "timing_cache_file", "write_engine"),
    "profiles": ("Profile", "base_profiles", "check_profiles", "parse_hw", "parse_nhw", "parse_size", "pick_profile",
                 "plan_for_profiles", "profiles_from_tiles"),
}
_WHERE = {name: mod for mod, names in _LAZY.items() for name in names}


def __getattr__(name: str):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = [
    "TRT",
    "TrtConfig",
    "TensorRTBackend",
    "resolve_memory",
    "slot_nbytes",
    "SIDECAR_FORMAT",
    "BuildOptions",
    "BuiltPlan",
    "EngineResult",
    "Fingerprint",
    "Sidecar",
    "Target",
    "check_compatible",
    "default_cache_dir",
    "engine_path",
    "file_lock",
    "find_engine",
    "get_or_build",
    "read_sidecar",
    "rebuild_command",
    "sidecar_path",
    "timing_cache_file",
    "write_engine",
    "Profile",
    "base_profiles",
    "check_profiles",
    "parse_hw",
    "parse_nhw",
    "parse_size",
    "pick_profile",
    "plan_for_profiles",
    "profiles_from_tiles",
]


# --- registration (entry point trt in pyproject.toml) ------------------------------------------

def _probe() -> Probe:
    if not installed("tensorrt"):
        return Probe(False, "TensorRT is not installed (pip install 'hanrt[trt]'; on Jetson it comes with JetPack)")
    return Probe(True, "TensorRT runs engines")


def _open(model: str | os.PathLike, o: OpenOptions) -> Backend:
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"engine {str(path)!r} does not exist.")
    from .build import trt

    trt()  # no TensorRT: the error names the extra before anything reads the engine
    from .backend import TensorRTBackend

    return TensorRTBackend(str(path), config=TrtConfig(device_id=o.device_id, slots=o.slots))


TRT = BackendSpec(name="trt", extra="trt", kinds=(ENGINE,), probe=_probe, open=_open, priority=10,
                  summary="a TensorRT engine (.plan/.engine with its .json sidecar), built on this GPU by hanrt build")

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

from ..base import TrtConfig
from .backend import TensorRTBackend, resolve_memory, slot_nbytes
from .cache import (SIDECAR_FORMAT, BuildOptions, BuiltPlan, EngineResult, Fingerprint, Sidecar, Target,
                    check_compatible, default_cache_dir, engine_path, file_lock, find_engine, get_or_build,
                    read_sidecar, rebuild_command, sidecar_path, timing_cache_file, write_engine)
from .profiles import (Profile, base_profiles, check_profiles, parse_hw, parse_nhw, parse_size, pick_profile,
                       profiles_from_tiles)

__all__ = [
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
    "profiles_from_tiles",
]

"""Environment record and device peak (measured, on this machine)."""

from __future__ import annotations

import json

from hanrt_bench.envinfo import environment
from hanrt_bench.peak import cpu_peak, gpu_peak


def test_environment_record():
    env = environment()
    json.dumps(env)
    assert env["cpu_cores"] >= 1 and env["cpu_model"]
    assert env["versions"]["numpy"] and env["versions"]["hanrt"]
    assert isinstance(env["gpus"], list)


def test_cpu_peak_is_measured():
    p = cpu_peak(256, reps=2)
    assert p.device == "cpu" and p.gflops > 0.1 and "256x256" in p.what
    assert set(p.to_dict()) == {"device", "what", "gflops", "seconds"}


def test_gpu_peak_none_without_gpu():
    try:
        import torch

        has = torch.cuda.is_available()
    except ImportError:
        has = False
    p = gpu_peak(n=1024, reps=2)
    assert (p is None) == (not has)

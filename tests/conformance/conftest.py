"""Fixtures of the conformance suite: the real modules (fetched once per session) and the
scenario's steps run in-process on the fakes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: trtfakes, conformance

from conformance import fetch  # noqa: E402


@pytest.fixture(scope="session")
def real_modules():
    try:
        return fetch.ensure_all()
    except fetch.Unavailable as exc:
        fetch.skip_or_fail(str(exc))


@pytest.fixture
def runner(real_modules, tmp_path):
    """``make(trt_version="11.4.0.106", cuda_version="12.9.10")``: the scenario's steps in this process,
    on the fakes of those versions (specs only; the subprocess matrix calls the real cuda-bindings)."""
    import contextlib

    from conformance.scenario import Runner
    from trtfakes import install

    with contextlib.ExitStack() as stack:
        yield lambda trt_v="11.4.0.106", cuda_v="12.9.10": Runner(stack.enter_context(install(trt_v, cuda_v)), tmp_path)

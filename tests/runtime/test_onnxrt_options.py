"""ONNX Runtime session options: threads from the cores this process may use, measured defaults."""

from __future__ import annotations

import pytest

ort = pytest.importorskip("onnxruntime")

from hanrt.backends import onnxrt  # noqa: E402
from hanrt.backends.base import OrtConfig  # noqa: E402


def test_threads_follow_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(onnxrt.os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(onnxrt, "_cgroup_cpu_limit", lambda: None)
    assert onnxrt.available_cores() == 1
    assert onnxrt.session_options(ort, OrtConfig()).intra_op_num_threads == 1
    assert onnxrt.session_options(ort, OrtConfig(intra_op_threads=3)).intra_op_num_threads == 3


def test_cgroup_quota_caps_the_cores(monkeypatch):
    monkeypatch.setattr(onnxrt.os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(onnxrt, "_cgroup_cpu_limit", lambda: 1.5)
    assert onnxrt.available_cores() <= 2


def test_cgroup_quota_files_are_read(tmp_path, monkeypatch):
    real = onnxrt.Path

    def fake(p):
        p = str(p)
        if p == "/sys/fs/cgroup/cpu.max":
            f = tmp_path / "cpu.max"
            f.write_text("150000 100000\n")
            return f
        return real(p)

    monkeypatch.setattr(onnxrt, "Path", fake)
    assert onnxrt._cgroup_cpu_limit() == pytest.approx(1.5)
    (tmp_path / "cpu.max").write_text("max 100000\n")

    def fake_max(p):
        return tmp_path / "cpu.max" if str(p) == "/sys/fs/cgroup/cpu.max" else real(p)

    monkeypatch.setattr(onnxrt, "Path", fake_max)
    assert onnxrt._cgroup_cpu_limit() is None


def test_measured_defaults_are_applied():
    so = onnxrt.session_options(ort, OrtConfig())
    assert so.enable_cpu_mem_arena is onnxrt.DEFAULT_ARENA
    assert so.enable_mem_pattern is onnxrt.DEFAULT_MEM_PATTERN
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if onnxrt.DEFAULT_SPINNING else "0")
    so = onnxrt.session_options(ort, OrtConfig(spinning=True, memory_arena=False))
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "1" and not so.enable_cpu_mem_arena

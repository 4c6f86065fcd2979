"""hanrt.io.atomic: the one atomic-output helper (temporary file beside the target, fsync, rename)."""

from __future__ import annotations

import os

import pytest

from hanrt.errors import OutputError
from hanrt.io.atomic import atomic_output, check_output_path


def _umask() -> int:
    u = os.umask(0)
    os.umask(u)
    return u


def test_success_replaces_the_target(tmp_path):
    p = tmp_path / "out.bin"
    p.write_bytes(b"old")
    with atomic_output(p) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.bin.") and tmp.exists()
        assert p.read_bytes() == b"old"  # the target is untouched until the block ends
        tmp.write_bytes(b"new")
    assert p.read_bytes() == b"new"
    assert [f.name for f in tmp_path.iterdir()] == ["out.bin"]


def test_exception_leaves_no_temporary_file_and_keeps_the_old_file(tmp_path):
    p = tmp_path / "out.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_output(p) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert p.read_bytes() == b"old"
    assert [f.name for f in tmp_path.iterdir()] == ["out.bin"]
    with pytest.raises(KeyboardInterrupt):  # not only Exception: Ctrl-C cleans up too
        with atomic_output(tmp_path / "new.bin") as tmp:
            raise KeyboardInterrupt
    assert [f.name for f in tmp_path.iterdir()] == ["out.bin"]


def test_writer_may_reopen_the_temporary_file(tmp_path):
    p = tmp_path / "x.txt"
    with atomic_output(p, fsync=False) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("hello")
    assert p.read_text(encoding="utf-8") == "hello"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_mode_honours_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_output(tmp_path / "m.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "m.bin").st_mode & 0o777 == 0o666 & ~umask
    assert _umask() == old


def test_refusals_happen_before_the_block_runs(tmp_path):
    p = tmp_path / "exists.bin"
    p.write_bytes(b"keep me")
    ran = []
    with pytest.raises(OutputError, match="exists; pass --overwrite to replace it"):
        with atomic_output(p, overwrite=False):
            ran.append(1)
    with pytest.raises(OutputError, match="folder .* does not exist"):
        with atomic_output(tmp_path / "no" / "x.bin"):
            ran.append(1)
    assert not ran and p.read_bytes() == b"keep me"
    assert [f.name for f in tmp_path.iterdir()] == ["exists.bin"]
    assert check_output_path(p, overwrite=True) == tmp_path
    assert str(check_output_path("bare.bin")) == "."


def test_unwritable_folder_is_an_output_error(tmp_path, monkeypatch):
    import hanrt.io.atomic as atomic_mod

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(atomic_mod.os, "open", denied)  # as in a read-only folder (root ignores chmod)
    with pytest.raises(OutputError, match="cannot write into .*Permission denied"):
        with atomic_output(tmp_path / "x.bin"):
            pass
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []

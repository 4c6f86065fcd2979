"""Atomic file output: write a temporary file beside the target, then rename it into place.

:func:`atomic_output` is the one way hanrt and its host-side packages (export,
benchmarks) write a result file, so that a failure of any kind (an exception, a full disk,
Ctrl-C) leaves either the old file or nothing at all, never a half-written one::

    with atomic_output("model.onnx", overwrite=True) as tmp:
        onnx.save(m, str(tmp))          # write ``tmp`` (a Path) however you like

On success the temporary file is flushed to disk (``fsync``) and renamed over the target
(``os.replace``: atomic on POSIX and Windows when both are in one folder). The file gets the mode a
plain ``open(path, "w")`` would give it (``0o666 & ~umask``), unlike ``tempfile.mkstemp``'s 0600.
Stdlib only (tier 0).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator

from ..errors import OutputError

__all__ = ["atomic_output", "check_output_path"]


def check_output_path(path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Refuse, with :class:`~hanrt.errors.OutputError`, an output that exists while ``overwrite``
    is false, or whose folder does not exist; return the folder (``.`` for a bare file name).

    Callers with slow work before the write call this first to fail early.
    """
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputError(f"{str(p)!r} exists; pass --overwrite to replace it.")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot write {str(p)!r}: folder {str(parent)!r} does not exist.")
    return parent


def _new_temp(p: Path, parent: Path) -> Path:
    for _ in range(100):
        tmp = parent / f".{p.name}.{secrets.token_hex(4)}.tmp"
        try:  # os.open with 0o666 honours the umask (mkstemp would make it 0600)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot write into {str(parent)!r}: {exc.strerror or exc}.") from None
        os.close(fd)
        return tmp
    raise OutputError(f"cannot create a temporary file in {str(parent)!r}.")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)  # Windows needs write access
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = True, fsync: bool = True) -> Iterator[Path]:
    """Yield a new, empty temporary file (a :class:`~pathlib.Path` in ``path``'s folder) to write;
    when the block ends without an exception, ``fsync`` it and rename it to ``path``.

    On any exception (including ``KeyboardInterrupt``) the temporary file is removed, the target is
    left as it was, and the exception propagates unchanged. Writers may reopen and truncate the
    temporary file (``open(tmp, "wb")``) but should not delete it.

    Raises :class:`~hanrt.errors.OutputError` before yielding when ``path`` exists and
    ``overwrite`` is false, when its folder does not exist, or when no temporary file can be
    created there. ``OSError`` from the final ``fsync``/rename propagates unchanged.
    ``fsync=False`` skips the flush to disk (the rename stays atomic, not durable after a crash).
    """
    p = Path(path)
    tmp = _new_temp(p, check_output_path(p, overwrite=overwrite))
    replaced = False
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, p)
        replaced = True
    finally:
        if not replaced:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

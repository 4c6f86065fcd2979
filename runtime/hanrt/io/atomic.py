"""Atomic file output: write a temporary file beside the target, then rename it into place.

:func:`atomic_output` is the one way hanrt and its host-side packages (``hanrt_export``,
``hanrt_bench``) write a result file, so that a failure of any kind (an exception, a full disk,
Ctrl-C) leaves either the old file or nothing at all, never a half-written one::

    with atomic_output("model.onnx", overwrite=True) as tmp:
        onnx.save(m, str(tmp))          # write ``tmp`` (a Path) however you like

On success the temporary file is flushed to disk (``fsync``) and renamed over the target
(``os.replace``: atomic on POSIX and Windows when both are in one folder). Without ``overwrite``
the file is published with a hard link, which fails if the target appeared meanwhile, so two
processes writing the same output never replace each other's result (on a file system without
hard links it falls back to a check then a rename). The file gets the mode a
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

__all__ = ["atomic_output", "check_output_path", "new_temp", "publish"]


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


def new_temp(path: str | os.PathLike, *, suffix: str = "") -> Path:
    """Create an empty, hidden temporary file beside ``path`` (``.NAME.HEX.tmp`` + ``suffix``) and
    return it. OutputError when the folder is not writable. Callers that cannot use
    :func:`atomic_output` (a writer with its own life time, like a video sink) pair it with
    :func:`publish` and remove the file on failure."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    for _ in range(100):
        tmp = parent / f".{p.name}.{secrets.token_hex(4)}.tmp{suffix}"
        try:  # os.open with 0o666 honours the umask (mkstemp would make it 0600)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot write into {str(parent)!r}: {exc.strerror or exc}.") from None
        try:
            os.close(fd)
        except BaseException:  # a signal between create and return must not leave the file
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return tmp
    raise OutputError(f"cannot create a temporary file in {str(parent)!r}.")


def publish(tmp: Path, path: str | os.PathLike, *, overwrite: bool, fsync: bool = True) -> None:
    """Move the finished temporary file ``tmp`` to ``path``. With ``overwrite`` an existing file is
    replaced (``os.replace``); without, the target is created only if it does not exist (a hard
    link, then the temporary name is removed), else :class:`~hanrt.errors.OutputError`. ``tmp`` is
    gone afterwards unless an exception is raised (the caller removes it then)."""
    p = Path(path)
    if fsync:
        _fsync(tmp)
    if overwrite:
        os.replace(tmp, p)
        return
    try:
        os.link(tmp, p)
    except FileExistsError:
        raise OutputError(f"{str(p)!r} appeared while it was being written (another process?); "
                          f"pass --overwrite to replace it.") from None
    except OSError:  # no hard links here (FAT, some network file systems): check, then rename
        if p.exists():
            raise OutputError(f"{str(p)!r} exists; pass --overwrite to replace it.") from None
        os.replace(tmp, p)
        return
    tmp.unlink()


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
    created there; when ``overwrite`` is false and the target appears while the block runs (another
    process), the new file is discarded with OutputError and the other one is kept.
    ``OSError`` from the final ``fsync``/rename propagates unchanged.
    ``fsync=False`` skips the flush to disk (the rename stays atomic, not durable after a crash).
    """
    p = Path(path)
    check_output_path(p, overwrite=overwrite)
    tmp = new_temp(p)
    try:
        yield tmp
        publish(tmp, p, overwrite=overwrite, fsync=fsync)
    finally:  # after a successful publish the temporary name is already gone
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()

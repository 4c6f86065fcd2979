"""A real ``hanrt serve`` (PyTriton + Triton's CPU build) for the Triton tests, in a subprocess.

PyTriton's Python-backend stub loads the system's ``libpython``, so the server must run under the
system Python (``/usr/bin/python3``; another 3.11 build such as pyenv's fails at model load,
PyTriton issue #51). :func:`server_python` makes a virtual environment from it holding
:data:`SERVER_REQUIREMENTS` (hanrt itself comes from this checkout through ``PYTHONPATH``), cached
under ``~/.cache/hanrt/triton-venv-<key>`` where the key hashes the requirements and the Python, so
later runs reuse it. It is built in a temporary folder and renamed into place, under a lock, so
concurrent runs never see half a venv.

Where no system Python exists the tests skip and say so, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = os.environ.get("HANRT_TRITON_PYTHON", "/usr/bin/python3")


def _ort_pin() -> str:
    try:  # the client's ONNX Runtime version, so server and local backend compute the same numbers
        return f"onnxruntime=={metadata.version('onnxruntime')}"
    except metadata.PackageNotFoundError:
        return "onnxruntime"


SERVER_REQUIREMENTS = ["nvidia-pytriton==0.7.0", "numpy<2", "Pillow>=9.5", _ort_pin()]


def _no_server(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the Triton tests cannot run in CI: {reason}")
    pytest.skip(reason)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hanrt"


def server_python() -> Path:
    """The Python of the cached server venv (made on first use); skips where no system Python exists."""
    py = Path(SYSTEM_PYTHON)
    if not py.is_file():
        _no_server(f"no system Python at {py} to run PyTriton's server (its stub loads the system libpython)")
    try:
        ver = subprocess.run([str(py), "-c", "import sys, venv, ensurepip; print(sys.version)"],
                             capture_output=True, text=True, timeout=60)
    except OSError as exc:
        _no_server(f"{py} cannot run ({exc})")
    if ver.returncode != 0:
        _no_server(f"{py} lacks the venv/ensurepip modules (Debian: apt-get install python3-venv): "
                   f"{ver.stderr.strip().splitlines()[-1:]}")
    key = hashlib.sha256(json.dumps([SERVER_REQUIREMENTS, ver.stdout.strip(), sys.platform]).encode()).hexdigest()[:12]
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"triton-venv-{key}"
    vpy = venv / "bin" / "python"
    if (venv / ".complete").is_file():
        return vpy
    with open(root / f"triton-venv-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / ".complete").is_file():
            return vpy
        tmp = Path(tempfile.mkdtemp(prefix=f"triton-venv-{key}.", dir=root))
        try:
            subprocess.run([str(py), "-m", "venv", str(tmp)], check=True, capture_output=True, text=True)
            r = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                *SERVER_REQUIREMENTS], capture_output=True, text=True, timeout=1200)
            if r.returncode != 0:
                raise RuntimeError(f"pip install {SERVER_REQUIREMENTS} into the server venv failed:\n{r.stderr[-3000:]}")
            (tmp / ".complete").write_text(json.dumps(SERVER_REQUIREMENTS))
            if venv.exists():  # an unfinished one from an interrupted run (no .complete)
                shutil.rmtree(venv)
            # the tests run ``venv/bin/python -m ...`` only, which finds its venv from its own
            # location (pyvenv.cfg), so the finished venv can be renamed into place
            os.rename(tmp, venv)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return vpy


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``hanrt serve MODEL`` on free loopback ports, in its own process group (PyTriton starts
    ``tritonserver`` and a backend stub as children: :meth:`kill` ends them all)."""

    def __init__(self, python: Path, model: str | os.PathLike, *, name: str = "tiny", log_dir: Path,
                 extra: tuple[str, ...] = ()) -> None:
        self.http, self.grpc, self.metrics = free_port(), free_port(), free_port()
        self.name = name
        self.log = log_dir / f"serve-{self.http}.log"
        # PyTriton's workspace (its IPC sockets must stay under 107 bytes: a short folder in /tmp),
        # removed by kill() even after a SIGKILL
        self.scratch = Path(tempfile.mkdtemp(prefix="hpt"))
        env = dict(os.environ, PYTHONPATH=str(ROOT / "runtime"), PYTHONUNBUFFERED="1",
                   PYTRITON_HOME=str(self.scratch))
        env.pop("VIRTUAL_ENV", None)
        self._fh = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [str(python), "-m", "hanrt", "serve", str(model), "--name", name, "--address", "127.0.0.1",
             "--http-port", str(self.http), "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics),
             "--threads", "1", *extra],
            stdout=self._fh, stderr=subprocess.STDOUT, env=env, cwd=str(log_dir), start_new_session=True)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.http}"

    def wait_ready(self, timeout: float = 120.0) -> None:
        import tritonclient.http as th

        deadline = time.monotonic() + timeout
        c = th.InferenceServerClient(self.url)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"hanrt serve exited with {self.proc.returncode}:\n{self.tail()}")
                with contextlib.suppress(Exception):
                    if c.is_server_ready() and c.is_model_ready(self.name):
                        return
                time.sleep(0.3)
        finally:
            c.close()
        raise RuntimeError(f"hanrt serve was not ready after {timeout:.0f} s:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        self._fh.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def kill(self) -> None:
        """SIGKILL the whole process group (the server dies as a crashed machine would), then remove
        the model folder tritonserver made under /tmp (its stub's first argument), which a killed
        server leaves behind."""
        stores = _model_stores(self.proc.pid)
        if self.proc.poll() is None or _group_alive(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        for d in [*stores, self.scratch]:
            shutil.rmtree(d, ignore_errors=True)
        self._fh.close()

    def stop(self) -> None:
        """SIGTERM (hanrt serve stops Triton cleanly), then :meth:`kill` whatever is left."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        self.kill()


def _model_stores(pgid: int) -> list[Path]:
    """``/tmp/folderXXXXXX`` model folders named on the command lines of process group ``pgid``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        for a in args:
            p = Path(a.decode(errors="replace"))
            if p.name == "model.py" and p.parent.parent.name.startswith("folder"):
                found.append(p.parent.parent)
    return found


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True

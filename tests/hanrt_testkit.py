"""Helpers shared by the test modules (importable as ``hanrt_testkit``: tests/ is on sys.path).

Kept out of conftest.py because several conftest.py files exist and ``from conftest import`` would
pick whichever was imported first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# Prepended to `python -c` snippets: makes importing any top-level package named in argv[1]
# (a JSON list) raise ImportError, as on a machine without that package.
IMPORT_BLOCKER = r"""
import importlib.abc, json, sys
BLOCKED = set(json.loads(sys.argv[1]))
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked by test: {name}")
        return None
sys.meta_path.insert(0, Blocker())
"""

TINY = dict(scale=4, n_resgroups=2, n_resblocks=1, n_feats=8, reduction=4)


def make_tiny_han(seed: int = 0, **overrides):
    """A tiny random HAN (eval mode) with nonzero attention gammas."""
    import torch

    from hanrt_export.han import HAN

    torch.manual_seed(seed)
    m = HAN(**{**TINY, **overrides}).eval()
    with torch.no_grad():
        m.la.gamma.fill_(0.5)
        m.csa.gamma.fill_(0.5)
    return m


def make_test_video(path, *, frames: int = 64, width: int = 96, height: int = 64, fps: int = 25,
                    audio: bool = True, codec: str = "libx264", pix_fmt: str = "yuv420p"):
    """Write a real video with PyAV: moving content, the frame index as 6 binary blocks (16x16 px,
    top row, white = 1), and (``audio=True``) a 440 Hz mono AAC track as long as the video.
    Returns ``path``. Needs PyAV (the test is skipped without it)."""
    from fractions import Fraction

    av = pytest.importorskip("av")
    out = av.open(str(path), "w")
    vs = out.add_stream(codec, rate=fps)
    vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
    if codec == "libx264":
        vs.options = {"preset": "ultrafast", "crf": "12"}
    aus = None
    if audio:
        aus = out.add_stream("aac", rate=48000)
        aus.layout = "mono"
    xs = np.arange(width)[None, :]
    ys = np.arange(height)[:, None]
    for i in range(frames):
        img = np.zeros((height, width, 3), np.uint8)
        img[:, :, 0] = (xs * 2 + i * 4) % 256
        img[:, :, 1] = (ys * 3 + i) % 256
        x0 = (i * 2) % max(1, width - 16)
        img[height // 2:height // 2 + 12, x0:x0 + 16, 2] = 255
        for b in range(6):
            if (i >> b) & 1 and (b + 1) * 16 <= width:
                img[0:16, b * 16:(b + 1) * 16] = 255
            elif (b + 1) * 16 <= width:
                img[0:16, b * 16:(b + 1) * 16] = 0
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts, f.time_base = i, Fraction(1, fps)
        for p in vs.encode(f):
            out.mux(p)
    for p in vs.encode(None):
        out.mux(p)
    if aus is not None:
        sr = 48000
        total = int(frames / fps * sr)
        sig = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / sr)).astype(np.float32)[None, :]
        for s in range(0, total, 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(sig[:, s:s + 1024]), format="fltp", layout="mono")
            af.sample_rate, af.pts = sr, s
            for p in aus.encode(af):
                out.mux(p)
        for p in aus.encode(None):
            out.mux(p)
    out.close()
    return path


def read_frame_index(image: np.ndarray, *, scale: int = 1) -> int:
    """Decode the 6-bit frame index that :func:`make_test_video` draws (after a ``scale`` x upscale)."""
    n = 0
    s = 16 * scale
    for b in range(6):
        if (b + 1) * s > image.shape[1]:
            break
        block = image[2 * scale:s - 2 * scale, b * s + 2 * scale:(b + 1) * s - 2 * scale]
        if block.mean() > 127:
            n |= 1 << b
    return n


# --- running the command in a child process (fault injection) --------------------------------

ROOT = Path(__file__).resolve().parents[1]

#: Exit codes ``hanrt`` may return (the README's error table): success, the error classes of
#: hanrt.errors, and 128 + signal for SIGINT / SIGTERM.
EXIT_CODES = {0, 2, 3, 4, 5, 6, 7, 8, 130, 143}


def hanrt_env() -> dict:
    """The environment for ``python -m hanrt`` from this checkout (no .pyc writes, so a file-size
    limit hits only what hanrt writes)."""
    import os

    env = dict(os.environ)
    paths = [str(ROOT / d) for d in ("runtime", "export", "benchmarks")]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def limit_file_size(nbytes: int):
    """A ``preexec_fn``: files may grow to ``nbytes`` (RLIMIT_FSIZE), writes past it fail with
    EFBIG like a full disk (SIGXFSZ ignored, so the write returns the error instead of killing)."""
    import resource
    import signal

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return apply


def hanrt_proc(args, *, fsize: int | None = None, **kw):
    """Start ``python -m hanrt ARGS`` (a ``subprocess.Popen``; stdout/stderr piped as text)."""
    import subprocess
    import sys

    if fsize:
        kw["preexec_fn"] = limit_file_size(fsize)
    return subprocess.Popen([sys.executable, "-m", "hanrt", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=hanrt_env(), **kw)


def run_hanrt(args, *, fsize: int | None = None, timeout: float = 120):
    """Run ``python -m hanrt ARGS`` to the end; returns ``(returncode, stdout, stderr)``."""
    p = hanrt_proc(args, fsize=fsize)
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, out, err


def temporaries(folder) -> list:
    """Hidden temporary files hanrt's writers leave if a cleanup failed (``.NAME.HEX.tmp*``)."""
    return sorted(p.name for p in Path(folder).rglob(".*.tmp*"))


def assert_no_traceback(text: str) -> None:
    assert "Traceback (most recent call last)" not in text, text


def make_deb(folder, package: str, files: dict, *, copyright: str | None = None) -> Path:
    """Build a real ``.deb`` (dpkg-deb) named ``package`` under ``folder``: ``files`` maps paths
    inside the package to bytes or PIL images; ``copyright`` becomes
    ``usr/share/doc/<package>/copyright``. Returns the .deb's path."""
    import subprocess

    root = Path(folder) / f"pkg-{package}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        f"Package: {package}\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n")
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            content.save(p)
    if copyright is not None:
        doc = root / "usr/share/doc" / package
        doc.mkdir(parents=True, exist_ok=True)
        (doc / "copyright").write_text(copyright)
    deb = Path(folder) / f"{package}.deb"
    subprocess.run(["dpkg-deb", "-b", str(root), str(deb)], check=True, capture_output=True)
    return deb

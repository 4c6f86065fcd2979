"""Fault injection through the ``hanrt`` command in child processes (issue 12).

- a full disk for every output format, image and video (``RLIMIT_FSIZE``: a write past the limit
  fails with EFBIG, as on a full disk; no tmpfs mount is needed, so it runs unprivileged);
- SIGINT and SIGTERM at random moments (seeded) of image batches and videos;
- two processes writing the same outputs;
- an unreadable input in the middle of a batch.

Afterwards, always: every output is complete and decodable or absent, no temporary file is left,
an existing file is unchanged unless it was replaced by a complete one, the exit code is the one
the README's table gives, and no traceback was printed.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hanrt.io.images import read_image
from hanrt_testkit import (assert_no_traceback, hanrt_proc, make_test_video, run_hanrt, temporaries)

pytest.importorskip("onnxruntime")
av = pytest.importorskip("av")

FAST = ["--backend", "ort-cpu", "--threads", "1", "--tile", "32", "--margin", "4"]
IMAGE_SUFFIXES = [".png", ".jpg", ".webp", ".tif", ".bmp", ".gif"]


def _decodes(path: Path) -> tuple[int, int]:
    """(width, height) of a complete image or video file; fails on a partial one."""
    if path.suffix.lower() in (".mp4", ".mkv", ".webm"):
        with av.open(str(path)) as c:
            frames = [f for f in c.decode(video=0)]
        assert frames, path
        return frames[0].width, frames[0].height
    with Image.open(path) as im:
        for i in range(getattr(im, "n_frames", 1)):
            im.seek(i)
            im.load()  # raises on truncated data
        return im.size


@pytest.fixture(scope="module")
def media(tmp_path_factory, photo):
    """Inputs: one 64x48 image per format, an animated GIF, two short videos (mp4, mkv)."""
    d = tmp_path_factory.mktemp("fault_media")
    img = photo[100:148, 200:264]
    (d / "img").mkdir()
    for suf in IMAGE_SUFFIXES:
        Image.fromarray(img).save(d / "img" / f"a{suf}")
    frames = [Image.fromarray(np.roll(img, 6 * i, axis=1)) for i in range(3)]
    frames[0].save(d / "img" / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    (d / "vid").mkdir()
    make_test_video(d / "vid" / "v.mp4", frames=8, width=48, height=32, audio=False)
    make_test_video(d / "vid" / "v.mkv", frames=8, width=48, height=32, audio=False)
    return d


def _prefill(out: Path, names: list[str]) -> dict[str, bytes]:
    """Good existing outputs (a different picture) that a failed run must leave as they were."""
    out.mkdir()
    keep = {}
    for n in names:
        p = out / n
        if p.suffix in (".mp4", ".mkv"):
            make_test_video(p, frames=2, width=32, height=32, audio=False)
        else:
            Image.fromarray(np.full((20, 20, 3), 77, np.uint8)).save(p)
        keep[n] = p.read_bytes()
    return keep


@pytest.mark.parametrize("kind", ["images", "videos"])
def test_full_disk_for_every_output_format(tmp_path, media, tiny_onnx, kind):
    """Every output is larger than the file-size limit: each fails with a clear message, exit 4,
    the existing (good) outputs stay byte for byte, nothing else is left."""
    src = media / ("img" if kind == "images" else "vid")
    names = sorted(p.name for p in src.iterdir())
    out = tmp_path / "out"
    keep = _prefill(out, names)
    rc, _, err = run_hanrt(["upscale", src, "-o", out, "--overwrite", "-m", tiny_onnx, *FAST],
                           fsize=6000 if kind == "images" else 2500)
    assert_no_traceback(err)
    assert rc == 4, err
    for n in names:
        assert re.search(rf"error: .*{re.escape(n)}.*File too large", err), (n, err)
        assert (out / n).read_bytes() == keep[n], n
    assert sorted(p.name for p in out.iterdir()) == names and temporaries(tmp_path) == []


def _batch(folder: Path, photo, n: int = 6, side: int = 160) -> list[str]:
    folder.mkdir()
    for i in range(n):
        Image.fromarray(np.roll(photo, 41 * i, axis=1)[:side, :side]).save(folder / f"img{i}.png")
    return sorted(p.name for p in folder.iterdir())


def _signal_at_random(proc, wait, sig: int, seed: int, max_delay: float) -> str:
    """Call ``wait()`` (returns the stderr lines it read) until the command is at the chosen point,
    wait a random moment more (seeded), send ``sig``; return the whole stderr once it has exited."""
    try:
        head = wait()
        time.sleep(random.Random(seed).uniform(0.0, max_delay))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(head) + err
    assert_no_traceback(err)
    return err


def _after_files(proc, k: int, out: Path):
    """``wait`` for :func:`_signal_at_random`: the command runs (it created ``out``; a signal during
    Python's start-up, before hanrt's code, gets Python's default handling), then read stderr until
    ``k`` files were written."""
    def wait() -> list[str]:
        deadline = time.time() + 60
        while not out.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        lines: list[str] = []
        while sum("wrote" in ln for ln in lines) < k:
            ln = proc.stderr.readline()
            if not ln:
                break
            lines.append(ln)
        return lines

    return wait


SIGNAL_CASES = [(sig, seed) for sig in (signal.SIGINT, signal.SIGTERM) for seed in (1, 2)]


@pytest.mark.parametrize("sig,seed", SIGNAL_CASES)
def test_signal_at_a_random_moment_of_an_image_batch(tmp_path, photo, tiny_onnx, sig, seed):
    """The moment: after a random number of finished files (0..n-3), then up to 50 ms more: during
    a read, an upscale or a write."""
    names = _batch(tmp_path / "in", photo, n=8, side=192)
    out = tmp_path / "out"
    p = hanrt_proc(["upscale", tmp_path / "in", "-o", out, "-m", tiny_onnx, *FAST])
    k = random.Random(seed).randint(0, len(names) - 3)
    err = _signal_at_random(p, _after_files(p, k, out), sig, seed, 0.05)
    done = sorted(f.name for f in out.iterdir()) if out.exists() else []
    assert p.returncode == 128 + sig, err
    m = re.search(rf"stopped by {signal.Signals(sig).name}: (\d+) of {len(names)} files upscaled", err)
    assert m and k <= int(m.group(1)) == len(done) < len(names), err
    for n in done:
        assert _decodes(out / n) == (768, 768)
    assert temporaries(tmp_path) == []


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    return make_test_video(tmp_path_factory.mktemp("long") / "long.mp4", frames=240, audio=False)


@pytest.mark.parametrize("sig,seed", SIGNAL_CASES[::3])
def test_signal_at_a_random_moment_of_a_video(tmp_path, long_clip, tiny_onnx, sig, seed):
    """A file transcode is written whole or not at all: stopped, nothing is left."""
    out = tmp_path / "v.mp4"
    p = hanrt_proc(["upscale", long_clip, "-o", out, "-m", tiny_onnx, *FAST])  # 240 frames: several s

    def opened() -> list[str]:  # the output (a temporary file) is open: decoding has started
        deadline = time.time() + 60
        while not (temporaries(tmp_path) or out.exists()) and p.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        return []

    err = _signal_at_random(p, opened, sig, seed, 1.0)
    assert p.returncode == 128 + sig, err
    assert "was not written" in err and not out.exists()
    assert temporaries(tmp_path) == []


def test_two_processes_writing_the_same_outputs(tmp_path, photo, tiny_onnx):
    """Without --overwrite, every output is written by exactly one of them; the other one reports
    it and exits 4; no result is replaced, none is half-written."""
    names = _batch(tmp_path / "in", photo, n=4, side=96)
    out = tmp_path / "out"
    procs = [hanrt_proc(["upscale", tmp_path / "in", "-o", out, "-m", tiny_onnx, *FAST]) for _ in range(2)]
    errs = []
    for p in procs:
        _, e = p.communicate(timeout=120)
        assert_no_traceback(e)
        errs.append(e)
    assert sorted(f.name for f in out.iterdir()) == names
    for n in names:
        writers = sum(len(re.findall(rf"wrote {re.escape(str(out / n))} ", e)) for e in errs)
        assert writers == 1, (n, errs)
        assert _decodes(out / n) == (384, 384)
    for p, e in zip(procs, errs):
        assert p.returncode in (0, 4)
        if p.returncode == 4:
            assert "exists" in e or "appeared while it was being written" in e
    assert temporaries(tmp_path) == []


def _without_root_file_access() -> None:
    """``preexec_fn``: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so the
    command (even as root) cannot read a file with mode 000."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_an_unreadable_input_in_the_middle_of_a_batch(tmp_path, photo, tiny_onnx):
    """The middle file cannot be opened (mode 000; as root, the command runs without the
    capabilities that bypass it): it is reported, the files before and after it are done, exit 3."""
    src = tmp_path / "in"
    names = _batch(src, photo, n=3, side=48)
    os.chmod(src / names[1], 0)
    out = tmp_path / "out"
    kw = {"preexec_fn": _without_root_file_access} if os.geteuid() == 0 else {}
    p = hanrt_proc(["upscale", src, "-o", out, "-m", tiny_onnx, *FAST], **kw)
    _, err = p.communicate(timeout=120)
    assert_no_traceback(err)
    assert p.returncode == 3, err
    assert re.search(rf"error: .*{names[1]}.*Permission denied", err), err
    assert "2 upscaled, 1 failed" in err
    assert sorted(f.name for f in out.iterdir()) == [names[0], names[2]]
    for n in (names[0], names[2]):
        assert _decodes(out / n) == (192, 192)
    assert temporaries(tmp_path) == []

"""``hanrt stream`` and the video branch of ``hanrt upscale``, in-process and (for signals) as a
subprocess, on real media and the tiny ONNX model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

av = pytest.importorskip("av")
pytest.importorskip("onnxruntime")

from hanrt.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--tile", "0", "--threads", "1", "--backend", "ort-cpu", "--no-progress"]


def _frames(path) -> list:
    with av.open(str(path)) as c:
        return [f for f in c.decode(video=0)]


def test_help_needs_no_extras(capsys):
    with pytest.raises(SystemExit) as e:
        main(["stream", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--realtime" in out and "--display" in out and "GStreamer" in out
    assert "--device" in out  # upscaler_from_args reads args.device, as for hanrt upscale


def test_stream_a_file_to_mp4_with_summary(sample_video, tiny_onnx, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    rc = main(["stream", str(sample_video), "-m", str(tiny_onnx), "-o", str(out), "--json", *FAST])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames_in"] == summary["frames_out"] == 64 and summary["dropped"] == 0
    assert summary["latency_p50_ms"] > 0 and summary["fps"] > 0
    frames = _frames(out)
    assert len(frames) == 64 and (frames[0].width, frames[0].height) == (384, 256)
    with av.open(str(out)) as c:
        assert c.streams.audio and c.streams.video[0].average_rate == 25


def test_text_summary_realtime_and_image_sequence_output(sample_video, tiny_onnx, tmp_path, capsys):
    folder = tmp_path / "frames"
    rc = main(["stream", str(sample_video), "-m", str(tiny_onnx), "-o", str(folder), "--realtime",
               "--rate", "200", *FAST])
    assert rc == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("frames in 64, out ") and "dropped" in line and "latency p50" in line
    written = sorted(folder.glob("*.png"))
    assert 0 < len(written) <= 64


def test_image_sequence_input_and_max_frames(tiny_onnx, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    src = tmp_path / "seq"
    src.mkdir()
    for i in range(5):
        Image.fromarray(np.full((12, 16, 3), 40 * i, np.uint8)).save(src / f"{i:03d}.png")
    out = tmp_path / "seq.mkv"
    assert main(["stream", str(src), "-m", str(tiny_onnx), "-o", str(out), "--codec", "mpeg4",
                 "--max-frames", "3", *FAST]) == 0
    assert len(_frames(out)) == 3


def test_stream_with_a_self_ensemble_equals_the_api(tiny_onnx, tmp_path):
    import numpy as np
    from PIL import Image

    from hanrt.upscaler import Upscaler

    rng = np.random.default_rng(3)
    src = tmp_path / "seq"
    src.mkdir()
    frames = [rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for _ in range(4)]
    for i, f in enumerate(frames):
        Image.fromarray(f).save(src / f"{i:03d}.png")
    out = tmp_path / "out"
    assert main(["stream", str(src), "-m", str(tiny_onnx), "-o", str(out), "--ensemble", "8", *FAST]) == 0
    written = sorted(out.glob("*.png"))
    assert len(written) == 4
    with Upscaler(tiny_onnx, backend="ort-cpu", tile=0, threads=1, ensemble=8) as up:
        for f, w in zip(frames, written):  # frames in flight through the pipeline, as one by one
            np.testing.assert_array_equal(np.asarray(Image.open(w).convert("RGB")), up.upscale(f))


@pytest.mark.parametrize("argv, code, text", [
    (["stream", "missing.mp4", "-o", "x.mp4"], 3, "does not exist"),
    (["stream", "{video}", "-o", "{tmp}/x.txt"], 2, "not a video suffix"),
    (["stream", "{video}", "-o", "{tmp}/nodir/x.mp4"], 4, "does not exist"),
    (["stream", "{video}", "-o", "{tmp}/x.mp4", "--codec", "nope"], 2, "not available"),
    (["stream", "{video}", "-o", "{tmp}/x.mp4", "--bitrate", "fast"], 2, "--bitrate"),
    (["stream", "{video}"], 2, "--output"),
    (["stream", "{video}", "--display"], None, "display"),
])
def test_bad_input_gives_one_clear_message(argv, code, text, sample_video, tiny_onnx, tmp_path, capsys):
    argv = [a.format(video=sample_video, tmp=tmp_path) for a in argv] + ["-m", str(tiny_onnx), *FAST]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc != 0 and (code is None or rc == code), err
    assert text in err and err.count("hanrt: error:") == 1


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("runtime", "export"))}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run_leaves_a_playable_file(sig, sample_video, tiny_onnx, tmp_path):
    out = tmp_path / "sig.mp4"
    cmd = [sys.executable, "-m", "hanrt", "stream", str(sample_video), "-m", str(tiny_onnx), "-o", str(out),
           "--rate", "20", *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.time() + 60
        while not any(tmp_path.iterdir()) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)  # the output (a temporary file until finalized) is open
        time.sleep(1.0)  # ~20 frames at --rate 20
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, stderr
    assert "[interrupted]" in stdout and "kept the recording" in stderr
    frames = _frames(out)
    assert 3 <= len(frames) < 64
    assert [f.time for f in frames] == pytest.approx([i / 25 for i in range(len(frames))], abs=1e-3)
    with av.open(str(out)) as c:
        assert c.streams.audio and sum(1 for p in c.demux(audio=0) if p.size) > 0
    assert f"frames in" in stdout and f"out {len(frames)}," in stdout


def test_upscale_command_takes_a_video(sample_video, tiny_onnx, tmp_path):
    """``hanrt upscale VIDEO --output OUT.mp4`` goes through the pipeline."""
    out = tmp_path / "u.mp4"
    rc = main(["upscale", str(sample_video), "--output", str(out), "-m", str(tiny_onnx), "--tile", "0",
               "--threads", "1", "--backend", "ort-cpu"])
    assert rc == 0 and len(_frames(out)) == 64


def test_run_upscale_videos_into_a_folder(sample_video, tiny_onnx, tmp_path, capsys):
    import argparse

    from hanrt.cli.stream import run_upscale_videos

    called = []
    args = argparse.Namespace(inputs=[str(sample_video), "x.png"], output=str(tmp_path / "outdir"),
                              model=str(tiny_onnx), backend="ort-cpu", tile=0, margin=None, batch=1, threads=1,
                              fp16=False, overwrite=False, quiet=True)
    rc = run_upscale_videos(args, [sample_video], ["x.png"], [], lambda a, i, m: called.append(i) or 0)
    assert rc == 0 and called == [["x.png"]]
    assert len(_frames(tmp_path / "outdir" / sample_video.name)) == 64


def test_killed_process_with_fragmented_mp4_keeps_what_was_encoded(sample_video, tiny_onnx, tmp_path):
    """SIGKILL leaves no chance to finalize: with --fragmented every finished fragment still plays."""
    out = tmp_path / "frag.mp4"
    cmd = [sys.executable, "-m", "hanrt", "stream", str(sample_video), "-m", str(tiny_onnx), "-o", str(out),
           "--rate", "20", "--fragmented", "--codec", "libx264", "--preset", "ultrafast", *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    try:
        deadline = time.time() + 60
        while (not out.exists() or out.stat().st_size < 20_000) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished
    from hanrt.io.video import VideoSource

    with VideoSource(out) as src:  # the last fragment may be cut short: read what decodes
        frames = list(src)
    assert 1 <= len(frames) < 64 and frames[0].image.shape == (256, 384, 3)
    # frame spacing kept (fragmented MP4 carries no edit list: a constant shift after frame 0 is allowed)
    gaps = [b.time - a.time for a, b in zip(frames[1:], frames[2:])]
    assert gaps == pytest.approx([0.04] * len(gaps), abs=1e-3)


def test_missing_pyav_names_the_extra(sample_video, tiny_onnx, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    rc = main(["stream", str(sample_video), "-m", str(tiny_onnx), "-o", str(tmp_path / "x.mp4"), *FAST])
    err = capsys.readouterr().err
    assert rc == 5 and "pip install 'hanrt[video]'" in err

"""PyAV sources and sinks on real media made in the test: counts, order, timestamps, audio,
corrupt packets, reconnects, unwritable outputs and a full disk."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from hanrt_testkit import make_test_video, read_frame_index

av = pytest.importorskip("av")

from hanrt.errors import InputError, OutputError, UsageError  # noqa: E402
from hanrt.io.frames import RetryPolicy  # noqa: E402
from hanrt.io.video import VideoSink, VideoSource, is_video_path, probe  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _nearest4(img: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(img, 4, axis=0), 4, axis=1)


def _video_times(path) -> tuple[list[float], int, int, tuple[int, int]]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        times = [f.time for f in c.decode(v)]
        size = (v.codec_context.width, v.codec_context.height)
    with av.open(str(path)) as c:
        audio = [p for p in c.demux(audio=0) if p.size] if c.streams.audio else []
        samples = sum(p.duration or 0 for p in audio)
    return times, len(audio), samples, size


def test_source_reads_every_frame_in_order_with_timestamps(sample_video):
    with VideoSource(sample_video) as src:
        assert (src.width, src.height, src.fps, src.frame_count) == (96, 64, 25, 64)
        assert src.audio is not None
        frames = list(src)
    assert [f.index for f in frames] == list(range(64))
    assert [read_frame_index(f.image) for f in frames] == list(range(64))
    assert all(f.image.shape == (64, 96, 3) and f.image.dtype == np.uint8 for f in frames)
    assert [f.time for f in frames] == pytest.approx([i / 25 for i in range(64)], abs=1e-6)
    assert src.stats.frames == 64 and src.stats.corrupt == 0


def test_sink_keeps_count_order_timestamps_and_audio(sample_video, tmp_path):
    out = tmp_path / "up.mp4"
    with VideoSource(sample_video) as src, VideoSink(out, fps=src.fps, audio=src.audio, crf=10) as sink:
        for f in src:
            sink.write(f.with_image(_nearest4(f.image)))
    times_in, apk_in, samples_in, _ = _video_times(sample_video)
    times_out, apk_out, samples_out, size = _video_times(out)
    assert size == (384, 256)
    assert len(times_out) == 64
    assert times_out == pytest.approx(times_in, abs=1e-3)
    assert (apk_out, samples_out) == (apk_in, samples_in) and apk_in > 100
    with av.open(str(out)) as c:
        assert c.streams.video[0].average_rate == 25
        idx = [read_frame_index(f.to_ndarray(format="rgb24"), scale=4) for f in c.decode(video=0)]
    assert idx == list(range(64))
    assert probe(out)["audio"] is True


def test_sink_keeps_gaps_in_timestamps(sample_video, tmp_path):
    """Dropped frames (realtime policy) leave gaps at the right times, not a shorter video."""
    out = tmp_path / "gaps.mkv"
    with VideoSource(sample_video, audio=False) as src, VideoSink(out, fps=src.fps, codec="mpeg4") as sink:
        kept = [f for f in src if f.index % 3 == 0]
        for f in kept:
            sink.write(f)
    times, _, _, _ = _video_times(out)
    assert times == pytest.approx([f.time for f in kept], abs=2e-3)


def test_codec_options_and_bad_codec(sample_video, tmp_path):
    with VideoSource(sample_video, audio=False) as src, \
            VideoSink(tmp_path / "b.mkv", fps=src.fps, codec="libx264", bitrate=200_000, preset="ultrafast",
                      pix_fmt="yuv444p") as sink:
        for f in src:
            sink.write(f)
    with av.open(str(tmp_path / "b.mkv")) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv444p"
    with pytest.raises(UsageError, match="not available"):
        VideoSink(tmp_path / "c.mp4", codec="no-such-codec")
    with pytest.raises(UsageError, match="not both"):
        VideoSink(tmp_path / "c.mp4", crf=20, bitrate=1000)


def test_corrupt_packet_is_skipped_and_counted(tmp_path):
    path = tmp_path / "mj.mkv"
    make_test_video(path, frames=20, codec="mjpeg", pix_fmt="yuvj420p", audio=False)
    with av.open(str(path)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    data = bytearray(path.read_bytes())
    pos, size = packets[7]
    data[pos + 20:pos + size - 10] = bytes(size - 30)  # wipe most of frame 7's JPEG data
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(bytes(data))
    with VideoSource(bad) as src:
        frames = list(src)
    assert src.stats.corrupt == 1
    assert [read_frame_index(f.image) for f in frames] == [i for i in range(20) if i != 7]


def test_truncated_file_ends_cleanly(sample_video, tmp_path):
    cut = tmp_path / "cut.mkv"
    with VideoSource(sample_video, audio=False) as src, VideoSink(cut, fps=src.fps, codec="mpeg4") as sink:
        for f in src:
            sink.write(f)
    data = cut.read_bytes()
    half = tmp_path / "half.mkv"
    half.write_bytes(data[: len(data) // 2])
    with VideoSource(half) as src:
        idx = [read_frame_index(f.image) for f in src]
    assert 10 < len(idx) < 64 and idx == list(range(len(idx)))


def test_live_source_reconnects_with_backoff_then_ends(tmp_path):
    path = tmp_path / "live.mp4"
    make_test_video(path, frames=10, audio=False)
    src = VideoSource(path, live=True, retry=RetryPolicy(retries=2, backoff=0.01))
    it = iter(src)
    first = [next(it) for _ in range(10)]
    second = [next(it) for _ in range(10)]  # the end of the file looked like a disconnect: re-opened
    os.remove(path)  # now the source is gone for good
    rest = list(it)
    assert rest == []
    assert src.stats.reconnects == 1 and src.stats.failed_reconnects == 2
    pts = [f.pts for f in first + second]
    assert pts == sorted(pts) and len(set(pts)) == 20  # timestamps keep increasing across the reconnect
    assert [f.index for f in first + second] == list(range(20))


def test_missing_and_non_video_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        VideoSource(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 10)
    with pytest.raises(InputError, match="cannot open video"):
        VideoSource(junk)
    assert is_video_path("a.MKV") and is_video_path("rtsp://h/s") and not is_video_path("a.png")


def test_unwritable_outputs(tmp_path, sample_video):
    with pytest.raises(OutputError, match="does not exist"):
        VideoSink(tmp_path / "no" / "dir" / "o.mp4")
    (tmp_path / "exists.mp4").write_bytes(b"x")
    with pytest.raises(OutputError, match="--overwrite"):
        VideoSink(tmp_path / "exists.mp4")
    d = tmp_path / "adir.mp4"
    d.mkdir()
    with pytest.raises(OutputError, match="it is a folder"):
        VideoSink(d)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full (always-full device) is not available")
def test_a_special_file_is_refused_as_a_video_target():
    with pytest.raises(OutputError, match="device or special file"):
        VideoSink("/dev/full", codec="mpeg4", format="matroska", overwrite=True)


_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))
from hanrt.errors import OutputError
from hanrt.io.video import VideoSink, VideoSource
import numpy as np
src = VideoSource(sys.argv[1], audio=False)
sink = VideoSink(sys.argv[2], fps=src.fps, codec="mpeg4", bitrate=4_000_000, keep_partial=sys.argv[3] == "1")
try:
    for f in src:
        sink.write(f.with_image(np.repeat(np.repeat(f.image, 4, 0), 4, 1)))
    sink.close()
except OutputError as exc:
    print("ERROR", exc)
    sink.close()
    sys.exit(4)
"""


@pytest.mark.parametrize("keep_partial", [False, True])
def test_file_size_limit_mid_run(sample_video, tmp_path, keep_partial):
    """A disk that fills mid-run (RLIMIT_FSIZE in a child process): a clear error. A file is written
    whole or not at all (no target, no temporary file); a live recording (keep_partial) keeps every
    frame encoded before the error in a playable file (Matroska survives truncation)."""
    out = tmp_path / "limited.mkv"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("runtime", "export"))}
    r = subprocess.run([sys.executable, "-c", _LIMITED, str(sample_video), str(out), str(int(keep_partial))],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 4, r.stdout + r.stderr
    assert "File too large" in r.stdout and "frames were encoded before the error" in r.stdout
    if not keep_partial:
        assert "the partial file is removed" in r.stdout
        assert list(tmp_path.iterdir()) == []
        return
    assert "kept" in r.stdout and [f.name for f in tmp_path.iterdir()] == ["limited.mkv"]
    with av.open(str(out)) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n > 5

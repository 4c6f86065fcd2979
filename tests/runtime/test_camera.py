"""Camera sources through OpenCV on what this machine offers: a video file through
cv2.VideoCapture (always), /dev/videoN and GStreamer's videotestsrc (when present)."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from hanrt_testkit import make_test_video, read_frame_index

cv2 = pytest.importorskip("cv2")

from hanrt.errors import InputError, MissingDependencyError, UsageError  # noqa: E402
from hanrt.io.camera import CameraSource, WindowSink, opencv_has_gstreamer, parse_camera_spec  # noqa: E402
from hanrt.io.frames import RetryPolicy  # noqa: E402
from hanrt.pipeline import Pipeline, PipelineOptions, open_source  # noqa: E402


def test_parse_specs():
    assert parse_camera_spec(0) == ("index", 0)
    assert parse_camera_spec("2") == ("index", 2)
    assert parse_camera_spec("/dev/video1") == ("v4l2", "/dev/video1")
    assert parse_camera_spec("videotestsrc ! appsink")[0] == "gstreamer"
    assert parse_camera_spec("clip.mp4") == ("file", "clip.mp4")


def test_file_through_opencv_gives_rgb_frames_in_order(sample_video):
    with CameraSource(str(sample_video)) as cam:
        assert (cam.width, cam.height) == (96, 64)
        assert cam.fps == 25 and cam.frame_count == 64 and not cam.live
        frames = list(cam)
    assert [read_frame_index(f.image) for f in frames] == list(range(64))
    f0 = frames[0].image
    assert f0.shape == (64, 96, 3) and f0.dtype == np.uint8 and f0.flags.c_contiguous
    # RGB, not BGR: the moving box is drawn in the blue channel (index 2)
    box = f0[32:44, 0:16]
    assert box[..., 2].mean() > 200 > box[..., 0].mean() + 100
    pts = [f.pts for f in frames]
    assert pts == sorted(pts) and frames[0].time_base == pytest.approx(0.001)
    assert all(f.t_capture > 0 for f in frames)


def test_camera_through_the_realtime_pipeline(sample_video):
    cam = CameraSource(str(sample_video))
    p = Pipeline(cam, lambda im: np.repeat(np.repeat(im, 2, 0), 2, 1),
                 options=PipelineOptions(realtime=True, source_rate=200))
    out = list(p.frames())
    assert p.stats.frames_out + p.stats.dropped == 64
    assert [f.index for f in out] == sorted(f.index for f in out)


def test_unplugged_camera_is_retried_then_ends(tmp_path):
    """A 'camera' that disappears: re-opened with backoff while it exists, then given up cleanly."""
    path = tmp_path / "cam.mkv"
    make_test_video(path, frames=8, codec="mpeg4", audio=False)
    cam = CameraSource(str(path), live=True, retry=RetryPolicy(retries=3, backoff=0.01))
    it = iter(cam)
    got = [next(it) for _ in range(16)]  # end of file = disconnect: re-opened once
    os.remove(path)
    assert list(it) == []
    assert cam.stats.reconnects == 1 and cam.stats.failed_reconnects == 3
    pts = [f.pts for f in got]
    assert pts == sorted(pts) and len(set(pts)) == 16


def test_missing_camera_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        CameraSource(str(tmp_path / "none.mp4"))
    free = next(i for i in range(64) if not os.path.exists(f"/dev/video{i}"))
    with pytest.raises(InputError, match="cannot open camera"):
        CameraSource(f"/dev/video{free}", retry=RetryPolicy(retries=0))


@pytest.mark.skipif(not glob.glob("/dev/video*"), reason="no /dev/video* device on this machine")
def test_v4l2_device():  # pragma: no cover - needs a camera
    dev = sorted(glob.glob("/dev/video*"))[0]
    with CameraSource(dev, retry=RetryPolicy(retries=0)) as cam:
        f = next(iter(cam))
    assert f.image.ndim == 3 and f.image.shape[2] == 3


def test_gstreamer_videotestsrc():
    if not opencv_has_gstreamer():
        with pytest.raises(MissingDependencyError, match="without GStreamer"):
            open_source("videotestsrc num-buffers=5 ! videoconvert ! appsink")
        pytest.skip("this OpenCV was built without GStreamer (cv2.getBuildInformation: 'GStreamer: NO'); "
                    "checked the clear error instead")
    src = open_source("videotestsrc num-buffers=5 ! video/x-raw,width=64,height=48 ! videoconvert ! "
                      "video/x-raw,format=BGR ! appsink", live=False)  # pragma: no cover
    frames = list(src)  # pragma: no cover
    assert len(frames) == 5 and frames[0].image.shape == (48, 64, 3)  # pragma: no cover


def test_window_sink_explains_what_is_missing(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises((MissingDependencyError, UsageError)):
        WindowSink()

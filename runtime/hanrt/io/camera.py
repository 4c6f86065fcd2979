"""Cameras through OpenCV: ``/dev/videoN`` (V4L2), a device index, a GStreamer pipeline string
(Jetson's ``nvarguscamerasrc ... ! appsink``), or any file/URL OpenCV's FFmpeg backend opens.
Also an optional display window (:class:`WindowSink`).

OpenCV is a tier-1 optional package (``pip install 'hanrt[camera]'``), imported when a camera is
opened. OpenCV delivers BGR; frames leave here as HxWx3 uint8 **RGB** (a new array per frame,
owned by the caller), with ``t_capture`` taken right after the grab and ``pts`` in milliseconds
(``time_base = 1/1000``) from the camera's clock when it gives one, else from the capture time.

A camera that stops delivering (unplugged, pipeline error) is released and re-opened following
its :class:`~hanrt.io.frames.RetryPolicy`; when the retries are spent the source ends cleanly.
A file opened as a camera simply ends at its last frame (``live=False``).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import InputError, MissingDependencyError, UsageError, require
from .frames import Frame, RetryPolicy, SourceStats, as_rgb_uint8, reopen_with_backoff

__all__ = ["CameraSource", "WindowSink", "parse_camera_spec", "is_camera_spec", "opencv_has_gstreamer"]

log = logging.getLogger(__name__)

_MS = Fraction(1, 1000)


def _cv2() -> Any:
    return require("cv2", extra="camera", purpose="cameras and the display window")


def is_camera_spec(spec: str | int) -> bool:
    """True for an int/digit string (device index), ``/dev/videoN``, or a GStreamer pipeline."""
    if isinstance(spec, int):
        return True
    s = str(spec).strip()
    return s.isdigit() or bool(re.fullmatch(r"/dev/video\d+", s)) or "!" in s


def parse_camera_spec(spec: str | int) -> tuple[str, Any]:
    """``("index", n)``, ``("v4l2", "/dev/videoN")``, ``("gstreamer", pipeline)`` or ``("file", path)``."""
    if isinstance(spec, int):
        return "index", spec
    s = str(spec).strip()
    if s.isdigit():
        return "index", int(s)
    if re.fullmatch(r"/dev/video\d+", s):
        return "v4l2", s
    if "!" in s:
        return "gstreamer", s
    return "file", s


def opencv_has_gstreamer() -> bool:
    """Whether the installed OpenCV was built with GStreamer (False if OpenCV is missing)."""
    try:
        import cv2
    except ImportError:
        return False
    info = cv2.getBuildInformation()
    m = re.search(r"GStreamer:\s*(\S+)", info)
    return bool(m and m.group(1).upper().startswith("YES"))


class CameraSource:
    """Frames from a camera (or anything ``cv2.VideoCapture`` opens), in capture order.

    ``spec``: device index (``0``), ``/dev/videoN``, a GStreamer pipeline ending in ``appsink``, or
    a file/URL. ``width``/``height``/``fps``: requested capture format (the camera may refuse;
    the actual values are in :attr:`width`, :attr:`height`, :attr:`fps`). ``live``: re-open on
    failure (default: True except for files). ``stop``: an event that ends iteration.
    """

    def __init__(
        self,
        spec: str | int,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        live: bool | None = None,
        retry: RetryPolicy | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.kind, self.target = parse_camera_spec(spec)
        self.spec = str(spec)
        self.live = (self.kind != "file") if live is None else bool(live)
        self.retry = retry or RetryPolicy()
        self.stop = stop or threading.Event()
        self.stats = SourceStats()
        self._want = (width, height, fps)
        self._cap: Any = None
        self._gen: Any = None
        if self.kind == "gstreamer" and not opencv_has_gstreamer():
            raise MissingDependencyError(
                f"{self.spec!r} is a GStreamer pipeline, but this OpenCV was built without GStreamer "
                "(cv2.getBuildInformation() shows 'GStreamer: NO'). Use an OpenCV built with GStreamer "
                "(on Jetson: the JetPack python3-opencv), or give a device (/dev/video0, 0) instead."
            )
        if self.kind == "file" and not Path(self.target).exists() and "://" not in self.target:
            raise InputError(f"camera/video {self.spec!r} does not exist.")
        self._open()
        cv2 = _cv2()
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        f = float(self._cap.get(cv2.CAP_PROP_FPS) or 0)
        self.fps: Fraction | None = Fraction(f).limit_denominator(1001) if f > 0 else None
        n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count: int | None = n if (self.kind == "file" and n > 0) else None

    def _open(self) -> None:
        cv2 = _cv2()
        if self.kind == "index":
            cap = cv2.VideoCapture(self.target)
        elif self.kind == "v4l2":
            cap = cv2.VideoCapture(self.target, cv2.CAP_V4L2)
        elif self.kind == "gstreamer":
            cap = cv2.VideoCapture(self.target, cv2.CAP_GSTREAMER)
        else:
            cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise InputError(f"cannot open camera {self.spec!r} with OpenCV ({self.kind}).")
        w, h, fps = self._want
        if w:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, w)
        if h:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, h)
        if fps:
            cap.set(cv2.CAP_PROP_FPS, fps)
        self._cap = cap

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def _reopen(self) -> bool:
        self._release()
        return reopen_with_backoff(self._open, retry=self.retry, stop=self.stop, stats=self.stats,
                                   what=f"camera {self.spec}", logger=log)

    def __iter__(self) -> Iterator[Frame]:
        if self._gen is not None:
            raise UsageError("a CameraSource can be iterated only once; open a new one.")
        self._gen = self._frames()
        return self._gen

    def _frames(self) -> Iterator[Frame]:
        try:
            yield from self._read()
        finally:
            self._release()

    def _read(self) -> Iterator[Frame]:
        cv2 = _cv2()
        index = 0
        t0 = time.perf_counter()
        last_pts = -1
        offset = 0
        fresh = True
        while not self.stop.is_set():
            if self._cap is None:
                return
            ok = self._cap.grab()
            t_cap = time.perf_counter()
            if not ok:
                if not self.live:
                    return
                log.warning("camera %s: no frame (disconnected?)", self.spec)
                if not self._reopen():
                    return
                fresh = True
                continue
            ok, bgr = self._cap.retrieve()
            if not ok or bgr is None or bgr.size == 0:
                self.stats.corrupt += 1
                log.warning("camera %s: skipped a frame that could not be decoded", self.spec)
                continue
            try:
                if bgr.ndim == 3 and bgr.shape[2] == 3:
                    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
                else:
                    rgb = as_rgb_uint8(bgr[:, :, ::-1] if bgr.ndim == 3 else bgr, what="camera frame")
            except InputError as exc:
                self.stats.corrupt += 1
                log.warning("camera %s: skipped a frame: %s", self.spec, exc)
                continue
            ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
            pts = int(round(ms)) if ms and ms > 0 else int(round((t_cap - t0) * 1000))
            if index == 0 and self.kind == "file":
                pts = max(pts, 0)
            if fresh and pts + offset <= last_pts:
                offset = last_pts + 1 - pts
            fresh = False
            pts += offset
            if pts <= last_pts:
                pts = last_pts + 1
            last_pts = pts
            yield Frame(image=rgb, index=index, pts=pts, time_base=_MS, t_capture=t_cap, fps=self.fps)
            index += 1
            self.stats.frames += 1

    def close(self) -> None:
        """Stop and release the device (safe to call twice; from another thread it only stops)."""
        self.stop.set()
        if self._gen is None:
            self._release()
            return
        try:
            self._gen.close()
        except ValueError:  # running in another thread; it releases the device when it sees stop
            pass

    def __enter__(self) -> "CameraSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WindowSink:
    """Show frames in an OpenCV window (``q`` or Esc in the window calls ``on_quit``).

    Needs an OpenCV with a GUI backend (``opencv-python``, not ``-headless``); otherwise
    :class:`~hanrt.errors.MissingDependencyError` says so when the sink is created.
    """

    def __init__(self, title: str = "hanrt", *, on_quit: Any = None) -> None:
        cv2 = _cv2()
        info = cv2.getBuildInformation()
        m = re.search(r"GUI:\s*(\S+)", info)
        if m and m.group(1).upper() == "NONE":
            raise MissingDependencyError(
                "this OpenCV has no GUI backend (GUI: NONE; opencv-python-headless?), so --display "
                "cannot open a window. Install opencv-python (with GUI), or write a file with --output."
            )
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) and os.name == "posix":
            raise UsageError("--display needs a graphical session (DISPLAY is not set); use --output instead.")
        self.title = title
        self.on_quit = on_quit
        self._open = False

    def write(self, frame: Frame) -> None:
        cv2 = _cv2()
        cv2.imshow(self.title, np.ascontiguousarray(frame.image[:, :, ::-1]))
        self._open = True
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27) and self.on_quit is not None:
            self.on_quit()

    def close(self) -> None:
        if self._open:
            _cv2().destroyWindow(self.title)
            self._open = False

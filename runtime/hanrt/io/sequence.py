"""Image sequences as a frame source and a frame sink (Pillow; tier 0).

A sequence is a folder of images (sorted by name, natural order: ``f2`` before ``f10``), a glob
(``frames/*.png``) or a printf pattern (``frames/%05d.png``). Frames are HxWx3 uint8 RGB read by
:func:`hanrt.io.images.read_rgb8` (EXIF orientation applied; grey replicated, alpha dropped,
16 bits rounded to 8); an unreadable image, or one above the default size guard, is skipped and
counted. The sink writes ``%06d.png`` (or the given pattern) atomically (temporary file, then
rename), so a sequence never holds a half-written image.
"""

from __future__ import annotations

import glob as _glob
import logging
import os
import re
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterator

from ..errors import InputError, OutputError, UsageError
from .frames import Frame, SourceStats, as_rgb_uint8
from .images import IMAGE_SUFFIXES, list_images, read_rgb8, write_image

__all__ = ["ImageSequenceSource", "ImageSequenceSink", "is_sequence_spec", "IMAGE_SUFFIXES"]

log = logging.getLogger(__name__)


def _natural_key(p: str) -> list[object]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p)]


def is_sequence_spec(spec: str) -> bool:
    """A folder, a glob (``*``/``?``/``[``) or a printf pattern (``%d``, ``%05d``)."""
    return os.path.isdir(spec) or any(c in spec for c in "*?[") or bool(re.search(r"%0?\d*d", spec))


def _expand(spec: str) -> list[str]:
    if os.path.isdir(spec):
        files = [str(p) for p in list_images(spec)]
    elif re.search(r"%0?\d*d", spec):
        files = []
        i = 0
        misses = 0
        while misses < 2:  # allow sequences starting at 0 or 1
            p = spec % i
            if os.path.isfile(p):
                files.append(p)
                misses = 0
            elif files:
                break
            else:
                misses += 1
            i += 1
    else:
        files = [p for p in _glob.glob(spec) if os.path.isfile(p)]
    return sorted(files, key=_natural_key)


class ImageSequenceSource:
    """Frames from image files in natural order; an unreadable image is skipped and counted.

    ``fps`` sets the timestamps (``pts = index``, ``time_base = 1/fps``); default 25.
    """

    live = False

    def __init__(self, spec: str | os.PathLike, *, fps: float | Fraction = 25, stop: threading.Event | None = None) -> None:
        self.spec = str(spec)
        self.files = _expand(self.spec)
        if not self.files:
            raise InputError(f"no images found for {self.spec!r} (a folder, a glob or a %05d pattern).")
        self.fps: Fraction | None = Fraction(fps).limit_denominator(1001)
        self.frame_count: int | None = len(self.files)
        self.stats = SourceStats()
        self.stop = stop or threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        tb = 1 / self.fps if self.fps else Fraction(1, 25)
        index = 0
        for i, path in enumerate(self.files):
            if self.stop.is_set():
                return
            try:
                rgb = read_rgb8(path)
            except InputError as exc:
                self.stats.corrupt += 1
                log.warning("skipped unreadable image %s (%s)", path, exc)
                continue
            self.stats.frames += 1
            yield Frame(image=rgb, index=index, pts=i, time_base=tb,
                        t_capture=time.perf_counter(), fps=self.fps)
            index += 1

    def close(self) -> None:
        self.stop.set()


class ImageSequenceSink:
    """Write each frame as an image: ``folder/%06d.png`` by default, or a printf ``pattern``.

    The number is the frame's source index, so dropped frames leave gaps. ``overwrite``: replace
    existing files (else OutputError at the first clash).
    """

    def __init__(self, folder: str | os.PathLike, *, pattern: str = "%06d.png", overwrite: bool = False) -> None:
        self.folder = Path(folder)
        if not re.search(r"%0?\d*d", pattern):
            raise UsageError(f"the image pattern needs a frame number like %06d, got {pattern!r}.")
        if Path(pattern).suffix.lower() not in IMAGE_SUFFIXES:
            raise UsageError(f"unknown image type in {pattern!r}; use one of {sorted(IMAGE_SUFFIXES)}.")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the folder {str(self.folder)!r}: {exc.strerror or exc}.") from None
        self.pattern = pattern
        self.overwrite = overwrite
        self.frames = 0

    def write(self, frame: Frame) -> None:
        path = self.folder / (self.pattern % frame.index)
        # atomic (temporary file removed on any failure); OutputError if it exists without overwrite
        write_image(path, as_rgb_uint8(frame.image), overwrite=self.overwrite, fsync=False)
        self.frames += 1

    def close(self) -> None:
        pass

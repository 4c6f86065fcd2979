"""Frames, source statistics, retry policy and the sink protocol shared by video and camera I/O.

Stdlib and numpy only (tier 0): the heavy packages (PyAV, OpenCV) are imported by the modules that
need them, when a source or sink is opened.

Conventions for every frame that crosses hanrt's streaming code:

- ``Frame.image`` is an **HxWx3 uint8 RGB** numpy array (values 0..255), C-contiguous. The
  frame owns it: sources never reuse a returned array, so a consumer may keep it.
- ``Frame.pts`` / ``Frame.time_base`` are the container timestamp (``pts * time_base`` seconds)
  when the source has one, else ``None``; ``Frame.time`` is that in seconds (or ``index / fps``).
- ``Frame.t_capture`` is ``time.perf_counter()`` seconds taken when the source produced the frame;
  the pipeline measures capture-to-output latency from it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import numpy as np

from ..errors import InputError

__all__ = [
    "Frame",
    "SourceStats",
    "RetryPolicy",
    "FrameSource",
    "FrameSink",
    "CallbackSink",
    "NullSink",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Frame:
    """One video frame: ``image`` HxWx3 uint8 RGB (owned by the frame) plus timing.

    ``index`` counts frames the source delivered (0, 1, 2, ...; skipped corrupt frames do not
    take an index). ``pts`` is in units of ``time_base`` seconds (``None`` if unknown).
    """

    image: np.ndarray
    index: int
    pts: int | None = None
    time_base: Fraction | None = None
    t_capture: float = 0.0
    fps: Fraction | None = None

    @property
    def time(self) -> float | None:
        """Presentation time in seconds (``pts * time_base``, else ``index / fps``, else None)."""
        if self.pts is not None and self.time_base is not None:
            return float(self.pts * self.time_base)
        if self.fps:
            return float(self.index / self.fps)
        return None

    def with_image(self, image: np.ndarray) -> "Frame":
        """The same frame (index, timestamps, capture time) carrying another image."""
        return replace(self, image=image)


@dataclass
class SourceStats:
    """Counters a source updates while it is read (thread-safe enough: one writer)."""

    frames: int = 0  # frames delivered
    corrupt: int = 0  # frames (or packets) that failed to decode and were skipped
    reconnects: int = 0  # successful re-opens after a disconnect
    failed_reconnects: int = 0  # re-open attempts that failed


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How a live source retries after it disconnects or stops delivering.

    ``retries`` attempts, waiting ``backoff`` seconds before the first and multiplying the
    wait by ``factor`` each time up to ``max_backoff`` seconds. ``retries=0`` ends at once.
    """

    retries: int = 5
    backoff: float = 0.5
    factor: float = 2.0
    max_backoff: float = 8.0

    def delays(self) -> Iterator[float]:
        d = self.backoff
        for _ in range(self.retries):
            yield min(d, self.max_backoff)
            d *= self.factor


def sleep_unless(stop: threading.Event | None, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; returns True if stopped."""
    if stop is None:
        time.sleep(seconds)
        return False
    return stop.wait(seconds)


def reopen_with_backoff(open_fn: Callable[[], None], *, retry: "RetryPolicy", stop: threading.Event | None,
                        stats: "SourceStats", what: str, logger: logging.Logger) -> bool:
    """Call ``open_fn`` after each of ``retry``'s delays until it stops raising InputError.

    Counts successes in ``stats.reconnects`` and failures in ``stats.failed_reconnects``; returns
    False when ``stop`` is set or the retries are used up (the source then ends cleanly).
    """
    for delay in retry.delays():
        if sleep_unless(stop, delay):
            return False
        try:
            open_fn()
        except InputError as exc:
            stats.failed_reconnects += 1
            logger.warning("%s: reopen failed (%s); retrying", what, exc)
            continue
        stats.reconnects += 1
        logger.warning("%s: reconnected", what)
        return True
    logger.warning("%s: gave up after %d attempts; ending", what, retry.retries)
    return False


@runtime_checkable
class FrameSource(Protocol):
    """Anything iterable over :class:`Frame` with ``stats``, ``fps`` and ``close()``.

    ``fps`` is the nominal rate (``None`` if unknown); ``frame_count`` an estimate (``None`` if
    unknown or live); ``live`` is True for cameras and network streams (no end expected).
    """

    stats: SourceStats
    fps: Fraction | None
    frame_count: int | None
    live: bool

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


@runtime_checkable
class FrameSink(Protocol):
    """Where upscaled frames go. ``write`` is called from one thread, in frame order;
    ``close`` finalizes (a container's trailer) and must be safe to call twice."""

    def write(self, frame: Frame) -> None: ...

    def close(self) -> None: ...


class CallbackSink:
    """A sink that calls ``fn(frame)`` for every upscaled frame (for embedding programs).

    The frame's image is owned by the callee (the pipeline keeps no reference to it).
    """

    def __init__(self, fn: Callable[[Frame], Any]) -> None:
        self._fn = fn

    def write(self, frame: Frame) -> None:
        self._fn(frame)

    def close(self) -> None:
        pass

    def __enter__(self) -> "CallbackSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullSink:
    """A sink that discards frames (benchmarks: measure everything but the encoder)."""

    def __init__(self) -> None:
        self.frames = 0

    def write(self, frame: Frame) -> None:
        self.frames += 1

    def close(self) -> None:
        pass


def as_rgb_uint8(image: np.ndarray, *, what: str = "frame") -> np.ndarray:
    """Check/normalize to HxWx3 uint8 C-contiguous RGB; grayscale HxW is replicated."""
    from ..errors import InputError

    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise InputError(f"{what}: expected uint8 pixels, got {a.dtype}.")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise InputError(f"{what}: expected an HxWx3 image, got shape {a.shape}.")
    if a.shape[2] == 4:
        a = a[:, :, :3]
    return np.ascontiguousarray(a)


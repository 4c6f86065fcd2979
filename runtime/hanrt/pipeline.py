"""Frames in -> upscaled frames out: decode ∥ infer ∥ encode, with bounded queues.

Three stages run concurrently: a **reader** thread pulls frames from the source (decoding), a
**worker** thread runs the frame processor (tiling + inference), and the **writer** (the thread
that calls :meth:`Pipeline.run`, or the consumer of :meth:`Pipeline.frames`) hands results to the
sink (encoding). Stdlib and numpy only; PyAV/OpenCV live in the sources and sinks.

Guarantees

- **Order**: one reader, one worker, one writer, FIFO queues: frames come out in source order.
- **Back-pressure**: the queues hold ``queue_size`` frames each; a slow encoder slows inference,
  a slow model slows decoding. Memory is bounded by ``2 * queue_size`` frames (+ in-flight ones).
- **Realtime** (``realtime=True``): the reader never waits. The worker always takes the *latest*
  frame; a frame replaced before the worker took it is dropped and counted
  (``stats.dropped``). Timestamps of the kept frames are preserved, so the output video shows the
  gaps at the right times.
- **Latency**: per frame, from ``Frame.t_capture`` (set by the source when it produced the frame,
  or by the reader when it paces a file) to the moment the sink returned (``stats.latency_ms``).
- **Stop** (:meth:`Pipeline.stop`, e.g. from SIGINT/SIGTERM via :func:`handle_signals`): the reader
  stops reading; what is queued is processed and written; the sink is closed (the container's
  trailer written); ``stats.interrupted`` is True. A second signal raises KeyboardInterrupt.
- **Errors**: an exception in any stage stops the others; the sink is still closed, so everything
  encoded before the error is kept; then :meth:`Pipeline.run` re-raises the first error.

Frame processors

- *sync*: an object with ``upscale(image) -> image`` (hanrt's :class:`~hanrt.upscaler.Upscaler`) or a
  callable ``f(image) -> image``; images are HxWxC uint8 numpy arrays; the result must be owned by
  the caller (not a view into a buffer the processor reuses).
- *async*: an object with ``submit(image) -> handle`` and ``wait(handle) -> image`` and an ``in_flight``
  attribute (>= 1): up to ``in_flight`` frames are submitted before the oldest is waited for, so on
  a CUDA backend with N slots frame k+1's host-to-device copy overlaps frame k's compute. ``wait`` is
  called in submission order. When no new frame is waiting, finished frames (``handle.done()``) are
  handed on at once. hanrt's :class:`~hanrt.upscaler.Upscaler` is one (``submit``/``wait`` over its
  slots; ``python -m hanrt_bench.overlap`` measures the overlap).

CUDA host-memory strategy (an option of the CUDA backends, not of this module): ``copy`` (default
on discrete GPUs) stages each frame in pinned (page-locked) host buffers and copies it to device
memory on the slot's stream; ``mapped`` (the right default on Jetson, whose GPU shares DRAM with
the CPU) allocates mapped pinned host memory that the GPU reads and writes in place (zero-copy),
so no copies are enqueued. See :mod:`hanrt_export.torch_stream` for the PyTorch implementation.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol, runtime_checkable

import numpy as np

from .errors import InputError, UsageError
from .io.frames import Frame, FrameSink, SourceStats

__all__ = [
    "FrameProcessor",
    "AsyncFrameProcessor",
    "PipelineOptions",
    "PipelineStats",
    "Pipeline",
    "handle_signals",
    "upscale_video",
    "open_source",
]

log = logging.getLogger(__name__)

_END = object()


@runtime_checkable
class FrameProcessor(Protocol):
    """``upscale(image: HxWxC uint8) -> HxWxC uint8`` (result owned by the caller)."""

    def upscale(self, image: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class AsyncFrameProcessor(Protocol):
    """Submit/wait processing with ``in_flight`` frames in flight; ``wait`` in submission order."""

    in_flight: int

    def submit(self, image: np.ndarray) -> Any: ...

    def wait(self, handle: Any) -> np.ndarray: ...


@dataclass(frozen=True, kw_only=True)
class PipelineOptions:
    """Pipeline settings.

    ``queue_size``: frames held between reader and worker and between worker and writer (>= 1).
    ``realtime``: latest-frame policy (drop stale frames instead of queueing them).
    ``source_rate``: pace the reader at this many frames per second (simulates a live source from
    a file; ``t_capture`` is then the scheduled capture time). ``None``: read as fast as the source
    gives frames. ``max_frames``: stop after reading this many frames.
    """

    queue_size: int = 4
    realtime: bool = False
    source_rate: float | None = None
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.queue_size < 1:
            raise UsageError(f"queue_size must be >= 1, got {self.queue_size}.")
        if self.source_rate is not None and self.source_rate <= 0:
            raise UsageError(f"source_rate must be > 0 frames/s, got {self.source_rate}.")
        if self.max_frames is not None and self.max_frames < 0:
            raise UsageError(f"max_frames must be >= 0, got {self.max_frames}.")


@dataclass
class PipelineStats:
    """What happened. Times in seconds except ``latency_ms`` (milliseconds, most recent 100k)."""

    frames_in: int = 0  # frames the reader got from the source
    frames_out: int = 0  # frames written to the sink / yielded
    dropped: int = 0  # realtime policy: stale frames replaced before processing
    corrupt: int = 0  # skipped by the source (decode errors) or by the writer (bad frame)
    reconnects: int = 0
    compute_s: float = 0.0  # time inside the processor (worker thread)
    wall_s: float = 0.0
    interrupted: bool = False  # stopped early (stop() / signal)
    expected: int | None = None  # frames the source announced, if known
    latency_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100_000))

    @property
    def fps(self) -> float:
        """Output frames per second of wall time."""
        return self.frames_out / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def compute_fps(self) -> float:
        """Frames per second of processor time (what the model alone would sustain)."""
        n = self.frames_out + 0
        return n / self.compute_s if self.compute_s > 0 else 0.0

    def latency_percentile(self, q: float) -> float | None:
        if not self.latency_ms:
            return None
        return float(np.percentile(np.fromiter(self.latency_ms, dtype=np.float64), q))

    def summary(self) -> dict[str, Any]:
        p50 = self.latency_percentile(50)
        p99 = self.latency_percentile(99)
        return {
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped": self.dropped,
            "corrupt": self.corrupt,
            "reconnects": self.reconnects,
            "fps": round(self.fps, 2),
            "compute_fps": round(self.compute_fps, 2),
            "wall_s": round(self.wall_s, 3),
            "latency_p50_ms": None if p50 is None else round(p50, 2),
            "latency_p99_ms": None if p99 is None else round(p99, 2),
            "interrupted": self.interrupted,
        }


class _Latest:
    """A one-frame mailbox for the realtime policy: put replaces (and reports) a stale frame."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._item: Any = None
        self._has = False
        self._ended = False

    def put(self, item: Any) -> bool:
        with self._cv:
            dropped = self._has
            self._item, self._has = item, True
            self._cv.notify()
            return dropped

    def end(self) -> None:
        with self._cv:
            self._ended = True
            self._cv.notify()

    def get(self, timeout: float) -> Any:
        """The latest item, ``_END`` once ended and empty, or ``None`` on timeout."""
        with self._cv:
            if not self._has and not self._ended:
                self._cv.wait(timeout)
            if self._has:
                item, self._item, self._has = self._item, None, False
                return item
            return _END if self._ended else None


class _Bounded:
    """A bounded FIFO whose blocking put/get give up when ``abort`` is set."""

    def __init__(self, size: int, abort: threading.Event) -> None:
        self._q: collections.deque[Any] = collections.deque()
        self._cv = threading.Condition()
        self._size = size
        self._abort = abort

    def put(self, item: Any, *, force: bool = False) -> bool:
        with self._cv:
            while not force and len(self._q) >= self._size:
                if self._abort.is_set():
                    return False
                self._cv.wait(0.1)
            self._q.append(item)
            self._cv.notify_all()
            return True

    def get(self, timeout: float) -> Any:
        with self._cv:
            if not self._q:
                self._cv.wait(timeout)
            if not self._q:
                return None
            item = self._q.popleft()
            self._cv.notify_all()
            return item


def _sync_fn(processor: Any) -> Callable[[np.ndarray], np.ndarray]:
    fn = getattr(processor, "upscale", None)
    if callable(fn):
        return fn
    if callable(processor):
        return processor
    raise UsageError(f"a frame processor needs upscale(image) or to be callable; got {type(processor).__name__}.")


#: How long the worker waits for the next frame, with frames in flight, before it looks for finished ones.
_POLL_S = 0.005


def _ready(handle: Any) -> bool:
    """Whether an async processor's handle is finished (``handle.done()``, as futures and
    :class:`~hanrt.upscaler.UpscaleJob` have); a handle without ``done`` counts as finished."""
    done = getattr(handle, "done", None)
    return bool(done()) if callable(done) else True


def _is_async(processor: Any) -> bool:
    return all(callable(getattr(processor, n, None)) for n in ("submit", "wait"))


class Pipeline:
    """Run ``source`` frames through ``processor`` into ``sink`` with concurrent stages.

    ``source``: an iterable of :class:`~hanrt.io.frames.Frame` (a video/camera/sequence source, or
    any generator); its ``stats`` (corrupt frames, reconnects) are folded into ours if present.
    ``processor``: see the module docstring. ``sink``: a :class:`~hanrt.io.frames.FrameSink` or a
    callable ``f(frame)``; ``None`` with :meth:`frames` (iterator API). The pipeline closes the sink
    (not the source's owner resources: it calls ``source.close()`` if it has one when stopping).

    Use :meth:`run` (blocking; the calling thread writes) or :meth:`frames` (a generator of
    upscaled frames). A pipeline runs once.
    """

    def __init__(self, source: Iterable[Frame], processor: Any, sink: FrameSink | Callable[[Frame], Any] | None = None,
                 *, options: PipelineOptions | None = None) -> None:
        self.source = source
        self.processor = processor
        self.sink = sink
        self.options = options or PipelineOptions()
        self.stats = PipelineStats()
        self.stats.expected = getattr(source, "frame_count", None)
        if self.options.max_frames is not None:
            self.stats.expected = min(self.stats.expected or self.options.max_frames, self.options.max_frames)
        self._stop = threading.Event()  # graceful: stop reading, drain
        self._abort = threading.Event()  # error: everyone leaves now
        self._errors: list[BaseException] = []
        self._ran = False
        self._async = _is_async(processor)
        self._fn = None if self._async else _sync_fn(processor)
        q = self.options.queue_size
        self._in: _Latest | _Bounded = _Latest() if self.options.realtime else _Bounded(q, self._abort)
        self._out = _Bounded(q, self._abort)
        self._threads: list[threading.Thread] = []
        self.signal_received: int | None = None  # set by handle_signals

    # -- control ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a graceful stop: stop reading, finish what is queued, close the sink.
        Safe from any thread and from a signal handler."""
        self._stop.set()
        self.stats.interrupted = True

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _fail(self, exc: BaseException) -> None:
        self._errors.append(exc)
        self._abort.set()
        self._stop.set()

    # -- stages -------------------------------------------------------------------------------

    def _reader(self) -> None:
        opts = self.options
        it = iter(self.source)
        period = (1.0 / opts.source_rate) if opts.source_rate else None
        t0 = time.perf_counter()
        n = 0
        try:
            while not self._stop.is_set():
                if opts.max_frames is not None and n >= opts.max_frames:
                    break
                try:
                    frame = next(it)
                except StopIteration:
                    break
                if period is not None:
                    due = t0 + n * period
                    delay = due - time.perf_counter()
                    if delay > 0 and self._stop.wait(delay):
                        break
                    frame = Frame(image=frame.image, index=frame.index, pts=frame.pts, time_base=frame.time_base,
                                  t_capture=max(due, time.perf_counter()) if delay > 0 else time.perf_counter(),
                                  fps=frame.fps)
                n += 1
                self.stats.frames_in = n
                if isinstance(self._in, _Latest):
                    if self._in.put(frame):
                        self.stats.dropped += 1
                elif not self._in.put(frame):
                    return  # aborted
        except BaseException as exc:  # noqa: BLE001 - handed to run()
            self._fail(exc)
        finally:
            self._source_done()
            if isinstance(self._in, _Latest):
                self._in.end()
            else:
                self._in.put(_END, force=True)

    def _source_done(self) -> None:
        close = getattr(self.source, "close", None)
        if callable(close):
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - closing a source must not hide the result
                log.debug("closing the source: %s", exc)

    def _worker(self) -> None:
        pending: collections.deque[tuple[Frame, Any]] = collections.deque()
        depth = max(1, int(getattr(self.processor, "in_flight", 1))) if self._async else 1
        try:
            while not self._abort.is_set():
                item = self._in.get(_POLL_S if pending else 0.1)
                if item is None:
                    # the source is idle: hand out frames that are done instead of holding them
                    # back until the next frame arrives (a live source's latency)
                    while pending and _ready(pending[0][1]):
                        self._emit_oldest(pending)
                    continue
                if item is _END:
                    break
                frame: Frame = item
                t = time.perf_counter()
                if self._async:
                    pending.append((frame, self.processor.submit(frame.image)))
                    self.stats.compute_s += time.perf_counter() - t
                    if len(pending) >= depth:
                        self._emit_oldest(pending)
                    continue
                out = self._fn(frame.image)  # type: ignore[misc]
                self.stats.compute_s += time.perf_counter() - t
                if not self._out.put(frame.with_image(out)):
                    return
            while pending and not self._abort.is_set():
                self._emit_oldest(pending)
        except BaseException as exc:  # noqa: BLE001 - handed to run()
            self._fail(exc)
        finally:
            self._out.put(_END, force=True)

    def _emit_oldest(self, pending: collections.deque[tuple[Frame, Any]]) -> None:
        frame, handle = pending.popleft()
        t = time.perf_counter()
        out = self.processor.wait(handle)
        self.stats.compute_s += time.perf_counter() - t
        self._out.put(frame.with_image(out))

    def _start(self) -> None:
        if self._ran:
            raise UsageError("a Pipeline runs once; build a new one.")
        self._ran = True
        self._t0 = time.perf_counter()
        for name, target in (("hanrt-read", self._reader), ("hanrt-infer", self._worker)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def _join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.perf_counter() + timeout
        for t in self._threads:
            while t.is_alive():
                t.join(0.1)
                if deadline is not None and time.perf_counter() > deadline:
                    log.warning("thread %s did not stop within %.0f s; leaving it (daemon)", t.name, timeout)
                    break
        src: SourceStats | None = getattr(self.source, "stats", None)
        if isinstance(src, SourceStats):
            self.stats.corrupt += src.corrupt
            self.stats.reconnects = src.reconnects
        self.stats.wall_s = time.perf_counter() - self._t0

    def _outputs(self) -> Iterator[Frame]:
        while True:
            item = self._out.get(0.1)
            if item is None:
                if self._abort.is_set() and not any(t.is_alive() for t in self._threads):
                    return
                continue
            if item is _END:
                return
            yield item

    # -- public -------------------------------------------------------------------------------

    def run(self, *, progress: Callable[[PipelineStats], Any] | None = None,
            progress_interval: float = 0.25) -> PipelineStats:
        """Run to the end of the source (or :meth:`stop`); returns the statistics.

        The sink is closed in all cases. The first error of any stage is re-raised after that.
        """
        if self.sink is None:
            raise UsageError("Pipeline.run() needs a sink; use frames() to iterate instead.")
        write = getattr(self.sink, "write", None) or self.sink
        self._start()
        last = 0.0
        try:
            for frame in self._outputs():
                try:
                    write(frame)
                except InputError as exc:  # a frame the sink cannot take (size change, ...)
                    self.stats.corrupt += 1
                    log.warning("skipped frame %d: %s", frame.index, exc)
                    continue
                self._account(frame)
                if progress is not None:
                    now = time.perf_counter()
                    if now - last >= progress_interval:
                        last = now
                        self.stats.wall_s = now - self._t0
                        progress(self.stats)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after cleanup
            self._fail(exc)
        finally:
            self._join(timeout=10.0 if self._abort.is_set() else None)
            close = getattr(self.sink, "close", None)
            if callable(close):
                try:
                    close()
                except BaseException as exc:  # noqa: BLE001
                    if self._errors:
                        log.error("closing the output after an error also failed: %s", exc)
                    else:
                        self._errors.append(exc)
            if progress is not None:
                progress(self.stats)
        if self._errors:
            raise self._errors[0]
        return self.stats

    def frames(self) -> Iterator[Frame]:
        """Iterate over upscaled frames (the caller is the writer stage).

        Each yielded :class:`Frame` carries the source's index and timestamps and an upscaled image
        the caller owns. Leaving the loop early stops the pipeline; errors are re-raised.
        """
        self._start()
        done = False
        try:
            for frame in self._outputs():
                self._account(frame)
                yield frame
            done = True
        finally:
            if not done:  # the caller left the loop early (or an error): stop everyone
                if not self._abort.is_set():
                    self.stop()
                self._abort.set()
            self._join(timeout=None if done else 10.0)
        if self._errors:
            raise self._errors[0]

    def _account(self, frame: Frame) -> None:
        now = time.perf_counter()
        self.stats.frames_out += 1
        if frame.t_capture:
            self.stats.latency_ms.append((now - frame.t_capture) * 1000.0)


@contextlib.contextmanager
def handle_signals(pipeline: Pipeline, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """While active, the first SIGINT/SIGTERM calls ``pipeline.stop()`` (drain, finalize); a second
    raises KeyboardInterrupt. Only the main thread can install handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}
    count = [0]

    def handler(signum: int, _frame: Any) -> None:
        count[0] += 1
        pipeline.signal_received = signum
        if count[0] > 1:
            raise KeyboardInterrupt
        log.warning("%s: stopping; finishing the queued frames and closing the output (again to abort)",
                    signal.Signals(signum).name)
        pipeline.stop()

    for s in signals:
        previous[s] = signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def upscale_video(
    source: str | Any,
    output: str,
    processor: Any,
    *,
    realtime: bool = False,
    codec: str = "libx264",
    crf: int | None = None,
    bitrate: int | None = None,
    pix_fmt: str = "yuv420p",
    preset: str | None = None,
    audio: bool = True,
    overwrite: bool = False,
    fragmented: bool = False,
    queue_size: int = 4,
    max_frames: int | None = None,
    source_rate: float | None = None,
    progress: Callable[[PipelineStats], Any] | None = None,
    signals: bool = False,
    codec_options: dict[str, str] | None = None,
) -> PipelineStats:
    """Upscale a video file (or stream URL) into ``output`` with ``processor``; returns stats.

    ``source`` is a path/URL or an already opened frame source. Audio is copied, the frame rate
    and timestamps kept (see :class:`hanrt.io.video.VideoSink` for the codec options). With
    ``signals=True`` (main thread only) SIGINT/SIGTERM stop reading, drain and finalize; then
    ``stats.interrupted`` is True.
    """
    from .io.video import VideoSink, VideoSource

    src = VideoSource(source) if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__") else source
    try:
        sink = VideoSink(output, fps=getattr(src, "fps", None), codec=codec, crf=crf, bitrate=bitrate,
                         pix_fmt=pix_fmt, preset=preset, audio=getattr(src, "audio", None) if audio else None,
                         overwrite=overwrite, fragmented=fragmented, codec_options=codec_options)
    except BaseException:
        close = getattr(src, "close", None)
        if callable(close):
            close()
        raise
    pipe = Pipeline(src, processor, sink, options=PipelineOptions(
        queue_size=queue_size, realtime=realtime, max_frames=max_frames, source_rate=source_rate))
    try:
        with handle_signals(pipe) if signals else contextlib.nullcontext():
            return pipe.run(progress=progress)
    finally:
        close = getattr(src, "close", None)
        if callable(close):
            close()


def open_source(
    spec: str | int | Any,
    *,
    live: bool | None = None,
    audio: bool = True,
    retries: int | None = None,
    backoff: float | None = None,
    fps: float | None = None,
    stop: threading.Event | None = None,
) -> Any:
    """Open a frame source from a command-line spec:

    - a device index (``0``), ``/dev/videoN`` or a GStreamer pipeline (contains ``!``): a camera
      through OpenCV (:class:`hanrt.io.camera.CameraSource`);
    - a folder, glob or ``%05d`` pattern of images: :class:`hanrt.io.sequence.ImageSequenceSource`
      (``fps`` sets its timestamps);
    - anything else (a video file, ``rtsp://``, ``http://``...): :class:`hanrt.io.video.VideoSource`.

    ``retries``/``backoff`` set the reconnect policy of live sources. An object that is already a
    frame source (iterable) is returned unchanged.
    """
    from .io.frames import RetryPolicy

    if not isinstance(spec, (str, int, bytes)) and not hasattr(spec, "__fspath__"):
        return spec
    policy_kw: dict[str, Any] = {}
    if retries is not None:
        policy_kw["retries"] = retries
    if backoff is not None:
        policy_kw["backoff"] = backoff
    policy = RetryPolicy(**policy_kw)
    s = spec if isinstance(spec, int) else str(spec)
    from .io.camera import is_camera_spec

    if is_camera_spec(s):
        from .io.camera import CameraSource

        return CameraSource(s, live=live, retry=policy, stop=stop)
    from .io.sequence import is_sequence_spec

    if isinstance(s, str) and is_sequence_spec(s):
        from .io.sequence import ImageSequenceSource

        return ImageSequenceSource(s, fps=fps or 25, stop=stop)
    from .io.video import VideoSource

    return VideoSource(s, live=live, audio=audio, retry=policy, stop=stop)

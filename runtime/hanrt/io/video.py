"""Video sources and sinks through PyAV (FFmpeg ships inside its wheel): files, network streams
(RTSP, RTMP, HTTP, UDP, SRT), and encoded video files with the audio copied through.

PyAV is a tier-1 optional package (``pip install 'hanrt[video]'``); it is imported when a source
or sink is opened, never when this module is imported.

Frames are HxWx3 uint8 RGB (see :mod:`hanrt.io.frames`). Timestamps are kept: a frame carries the
container's ``pts`` and ``time_base``; :class:`VideoSink` writes each frame at its ``pts`` (so a
variable frame rate, or the gaps the realtime policy leaves, survive) and declares the source's
nominal frame rate. The audio stream is remuxed packet by packet (not re-encoded) through an
:class:`AudioPassthrough` that the source fills while demuxing and the sink drains while writing.

Faults:

- a packet that fails to decode (or a frame FFmpeg flags as corrupt) is skipped and counted in
  ``source.stats.corrupt``;
- a live source (network stream; ``live=True``) that errors or ends is re-opened following its
  :class:`~hanrt.io.frames.RetryPolicy` (backoff), its timestamps shifted to stay increasing; when
  the retries are spent the source ends cleanly;
- a sink writes a hidden temporary file beside its target (``.NAME.HEX.tmp.SUFFIX``) and renames it
  into place when it is finalized, so a failed write never leaves a half-written video. A sink that
  cannot create or write its file raises :class:`~hanrt.errors.OutputError` naming the path and the
  OS reason ("No space left on device", ...) and removes the temporary file, unless
  ``keep_partial=True`` (live recordings) and the file still plays (``fragmented=True``): then the
  recording up to the error is kept under the target name and a warning says so;
- a codec the container cannot hold (``libx264`` in ``.webm`` or ``.gif``) or a pixel format the
  encoder refuses is a :class:`~hanrt.errors.UsageError` when the sink is created, before any
  frame is decoded.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ..errors import InputError, OutputError, UsageError, require
from .atomic import check_output_path, new_temp, publish
from .frames import Frame, RetryPolicy, SourceStats, as_rgb_uint8, reopen_with_backoff
from .kinds import VIDEO_SUFFIXES

__all__ = [
    "VideoSource",
    "VideoSink",
    "AudioPassthrough",
    "VIDEO_SUFFIXES",
    "is_video_path",
    "is_network_url",
    "probe",
]

log = logging.getLogger(__name__)

_LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "udp://", "tcp://", "srt://", "rtp://")
_NET_SCHEMES = _LIVE_SCHEMES + ("http://", "https://")
# FFmpeg's network I/O timeout, in microseconds, so a dead stream does not block forever.
_NET_TIMEOUT_US = "5000000"


#: Encoder used when none is given, by output suffix (anything else: libx264).
DEFAULT_CODECS = {".webm": "libvpx-vp9", ".ogv": "libtheora"}
#: Output suffixes a video is never written to, and why.
_REFUSED_OUTPUTS = {
    ".gif": "hanrt does not encode video as GIF (256 colours); write .mp4, .mkv or .webm. "
            "Animated GIF input is upscaled to .gif/.webp/.png by hanrt upscale ANIM.gif --output OUT.gif",
}


def default_codec(path: str | os.PathLike) -> str:
    """The encoder a video written to ``path`` gets when none is asked for."""
    return DEFAULT_CODECS.get(Path(path).suffix.lower(), "libx264")


def check_output_codec(path: str | os.PathLike, codec: str, pix_fmt: str = "yuv420p", *,
                       format: str | None = None) -> None:
    """Raise :class:`~hanrt.errors.UsageError` unless ``path``'s container can hold ``codec`` and
    the encoder takes ``pix_fmt``: checked on an in-memory container, before any work."""
    import io

    av = _av()
    suffix = Path(path).suffix.lower()
    if format is None and suffix in _REFUSED_OUTPUTS:
        raise UsageError(f"cannot write a video to {str(path)!r}: {_REFUSED_OUTPUTS[suffix]}.")
    if codec not in av.codecs_available:
        raise UsageError(f"the video codec {codec!r} is not available in this FFmpeg build "
                         f"(PyAV {av.__version__}); try libx264, mpeg4 or ffv1.")
    try:
        fmt = format or av.format.ContainerFormat(_container_name(suffix), "w").name
        with av.open(io.BytesIO(), mode="w", format=fmt) as c:
            vs = c.add_stream(codec, rate=25)
            formats = {f.name for f in (vs.codec_context.codec.video_formats or ())}
    except (ValueError, av.FFmpegError) as exc:
        raise UsageError(f"cannot write {codec} video to {str(path)!r}: {exc}. Pick another --codec "
                         f"(libx264 for .mp4/.mkv/.mov, libvpx-vp9 for .webm) or another suffix.") from None
    if formats and pix_fmt not in formats:
        raise UsageError(f"the encoder {codec} does not take --pix-fmt {pix_fmt}; it takes "
                         f"{', '.join(sorted(formats))}.")


def _container_name(suffix: str) -> str:
    """FFmpeg muxer name for an output suffix (what av.open guesses from the file name)."""
    return {".mkv": "matroska", ".m4v": "mp4", ".ts": "mpegts", ".mts": "mpegts", ".m2ts": "mpegts",
            ".wmv": "asf", ".mpg": "mpeg", ".mpeg": "mpeg", ".ogv": "ogg", ".3gp": "3gp",
            ".y4m": "yuv4mpegpipe"}.get(suffix, suffix.lstrip(".") or "mp4")


def _av():
    return require("av", extra="video", purpose="video files and network streams")


def is_video_path(path: str | os.PathLike) -> bool:
    """True if ``path`` names a video file (by suffix) or a network stream URL."""
    s = str(path)
    return is_network_url(s) or Path(s).suffix.lower() in VIDEO_SUFFIXES


def is_network_url(spec: str) -> bool:
    return spec.lower().startswith(_NET_SCHEMES)


def _fraction(x: Any) -> Fraction | None:
    if x is None:
        return None
    try:
        f = Fraction(x)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return f if f > 0 else None


class AudioPassthrough:
    """Audio packets handed from a source's demuxer to a sink's muxer, not re-encoded.

    The source (its reader thread) calls :meth:`put`; the sink (its writer thread) calls
    :meth:`take`. Packets are kept only once a sink has attached (:attr:`active`, set by
    :class:`VideoSink`), so a source whose audio nobody copies holds nothing. Thread-safe (a lock around a deque). At most ``max_packets`` are held; older ones
    are dropped with a warning (only if the writer stalls for a long time). ``template`` is the
    input audio stream, used to create the output stream; ``time_base`` its packet time base.
    """

    def __init__(self, template: Any, *, max_packets: int = 20000) -> None:
        self.template = template
        self.time_base: Fraction | None = _fraction(template.time_base)
        self._q: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._max = max_packets
        self.dropped = 0
        self.pts_offset = 0  # added to packet timestamps after a reconnect (in time_base units)
        self.active = False  # set when a sink will copy the packets

    def put(self, packet: Any) -> None:
        if not self.active or (packet.dts is None and packet.pts is None):
            return  # nobody copies audio, or a demuxer's flush packet
        with self._lock:
            if len(self._q) >= self._max:
                self._q.popleft()
                self.dropped += 1
                if self.dropped == 1:
                    log.warning("audio passthrough: the writer is stalled; dropping old audio packets")
            if self.pts_offset:
                if packet.pts is not None:
                    packet.pts += self.pts_offset
                if packet.dts is not None:
                    packet.dts += self.pts_offset
            self._q.append(packet)

    def take(self, until: float | None = None) -> list[Any]:
        """Remove and return the packets whose time is <= ``until`` seconds (all if None)."""
        out = []
        with self._lock:
            while self._q:
                p = self._q[0]
                if until is not None and self.time_base is not None:
                    ts = p.dts if p.dts is not None else p.pts
                    if ts is not None and float(ts * self.time_base) > until:
                        break
                out.append(self._q.popleft())
        return out

    def __len__(self) -> int:
        return len(self._q)


class VideoSource:
    """Decoded frames of a video file or network stream (PyAV), in order, with timestamps.

    ``url``: a file path or a URL (``rtsp://``, ``http://``, ...). ``live``: re-open on error or end
    (default: True for stream schemes like RTSP/RTMP/UDP/SRT, False for files and HTTP).
    ``audio``: collect the first audio stream's packets in :attr:`audio` for a sink to copy.
    ``options``: FFmpeg demuxer options (e.g. ``{"rtsp_transport": "tcp"}``).
    ``stop``: an event that, when set, makes iteration end at the next frame (and aborts backoff).

    Iterating yields :class:`Frame` objects whose ``image`` (HxWx3 uint8 RGB) the caller owns.
    Iterate once; :meth:`close` (or the context manager) releases the container.
    """

    def __init__(
        self,
        url: str | os.PathLike,
        *,
        live: bool | None = None,
        audio: bool = True,
        retry: RetryPolicy | None = None,
        options: Mapping[str, str] | None = None,
        threads: int = 0,
        stop: threading.Event | None = None,
    ) -> None:
        self.url = str(url)
        self.network = is_network_url(self.url)
        self.live = self.url.lower().startswith(_LIVE_SCHEMES) if live is None else bool(live)
        if not self.network and not Path(self.url).is_file():
            raise InputError(f"video {self.url!r} does not exist or is not a file.")
        self.retry = retry or RetryPolicy()
        self._options = dict(options or {})
        if self.network:
            self._options.setdefault("timeout", _NET_TIMEOUT_US)
        self._threads = threads
        self._want_audio = audio
        self.stop = stop or threading.Event()
        self.stats = SourceStats()
        self.audio: AudioPassthrough | None = None
        self._container: Any = None
        self._iterated = False
        self._gen: Any = None
        self._open()  # fail early, and know size/fps/audio before the first frame
        v = self._container.streams.video[0]
        self.fps: Fraction | None = _fraction(v.average_rate) or _fraction(v.guessed_rate)
        self.time_base: Fraction = _fraction(v.time_base) or Fraction(1, 90000)
        self.width: int = int(v.codec_context.width)
        self.height: int = int(v.codec_context.height)
        n = int(v.frames or 0)
        if not n and self._container.duration and self.fps:
            n = int(round(self._container.duration / 1_000_000 * float(self.fps)))
        self.frame_count: int | None = None if self.live or not n else n
        if audio and self._container.streams.audio:
            self.audio = AudioPassthrough(self._container.streams.audio[0])

    # -- opening ------------------------------------------------------------------------------

    def _open(self) -> None:
        av = _av()
        try:
            # metadata_errors="replace": a tag that is not UTF-8 must not make the file unreadable
            c = av.open(self.url, mode="r", options=self._options or None, metadata_errors="replace")
        except FileNotFoundError as exc:
            raise InputError(f"video {self.url!r}: {exc.strerror or exc}.") from None
        except (av.FFmpegError, OSError) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise InputError(f"cannot open video {self.url!r}: {why} (not a video FFmpeg can read, or "
                             f"damaged).") from None
        if not c.streams.video:
            c.close()
            raise InputError(f"{self.url!r} has no video stream.")
        vs = c.streams.video[0]
        if vs.codec_context is None:  # a stream header FFmpeg has no decoder for (damaged or unknown codec)
            c.close()
            raise InputError(f"{self.url!r}: its video stream cannot be decoded (damaged header or unknown "
                             f"codec).")
        vs.thread_type = "AUTO"
        if self._threads:
            vs.codec_context.thread_count = self._threads
        self._container = c

    def _reopen(self) -> bool:
        """Try to re-open a live source with backoff; True on success."""
        self._close_container()
        return reopen_with_backoff(self._open, retry=self.retry, stop=self.stop, stats=self.stats,
                                   what=f"source {self.url}", logger=log)

    # -- reading ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Frame]:
        if self._iterated:
            raise UsageError("a VideoSource can be iterated only once; open a new one.")
        self._iterated = True
        self._gen = self._frames()
        return self._gen

    def _frames(self) -> Iterator[Frame]:
        try:
            yield from self._read()
        finally:
            self._close_container()

    def _read(self) -> Iterator[Frame]:
        av = _av()
        index = 0
        last_pts: int | None = None
        offset = 0  # added to pts after a reconnect so timestamps keep increasing
        while True:
            c = self._container
            vs = c.streams.video[0]
            tb = _fraction(vs.time_base) or self.time_base
            streams = [vs] + ([c.streams.audio[0]] if self.audio is not None and c.streams.audio else [])
            first_after_open = True
            failed = False
            try:
                for packet in c.demux(*streams):
                    if self.stop.is_set():
                        return
                    if packet.stream.type == "audio":
                        if self.audio is not None:
                            self.audio.put(packet)
                        continue
                    try:
                        decoded = packet.decode()
                    except av.FFmpegError as exc:
                        if isinstance(exc, av.error.ExitError):
                            raise
                        self.stats.corrupt += 1
                        log.warning("source %s: skipped a corrupt packet (%s)", self.url, exc)
                        continue
                    for vf in decoded:
                        if getattr(vf, "is_corrupt", False):
                            self.stats.corrupt += 1
                            log.warning("source %s: skipped a frame flagged corrupt", self.url)
                            continue
                        pts = vf.pts
                        if pts is not None:
                            if first_after_open and last_pts is not None and pts + offset <= last_pts:
                                offset = last_pts + 1 - pts
                                if self.audio is not None and self.audio.time_base:
                                    self.audio.pts_offset = int(
                                        round(offset * tb / self.audio.time_base))
                            pts += offset
                            if last_pts is not None and pts <= last_pts:
                                pts = last_pts + 1  # keep timestamps strictly increasing
                            last_pts = pts
                        first_after_open = False
                        try:
                            img = vf.to_ndarray(format="rgb24")
                        except (av.FFmpegError, ValueError) as exc:
                            self.stats.corrupt += 1
                            log.warning("source %s: skipped a frame that cannot be converted (%s)",
                                        self.url, exc)
                            continue
                        frame = Frame(image=np.ascontiguousarray(img), index=index, pts=pts,
                                      time_base=tb, t_capture=time.perf_counter(), fps=self.fps)
                        index += 1
                        self.stats.frames += 1
                        yield frame
            except (av.FFmpegError, OSError) as exc:
                if not self.live:
                    # A broken file: what was decoded stands; end here.
                    self.stats.corrupt += 1
                    log.warning("source %s: read error (%s); ending the stream", self.url, exc)
                    return
                failed = True
                log.warning("source %s: disconnected (%s)", self.url, exc)
            if not self.live or self.stop.is_set():
                return
            if not failed:
                log.warning("source %s: stream ended", self.url)
            if not self._reopen():
                return

    # -- closing ------------------------------------------------------------------------------

    def _close_container(self) -> None:
        c, self._container = self._container, None
        if c is not None:
            try:
                c.close()
            except Exception as exc:  # closing a broken network container may fail; nothing to keep
                log.debug("closing %s: %s", self.url, exc)

    def close(self) -> None:
        """Stop reading and release the container. Safe to call twice. From another thread while
        a frame is being read, it only sets :attr:`stop`; the reading thread then releases it."""
        self.stop.set()
        gen = self._gen
        if gen is None:
            self._close_container()
            return
        try:
            gen.close()  # runs the generator's finally: closes the container
        except ValueError:  # the generator is running in another thread; it will stop itself
            pass

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self._close_container()
        except Exception:
            pass


def probe(url: str | os.PathLike) -> dict[str, Any]:
    """Basic facts about a video: width, height, fps, frames, duration_s, audio (bool)."""
    with VideoSource(url, audio=True, live=False) as s:
        c = s._container
        return {
            "width": s.width,
            "height": s.height,
            "fps": s.fps,
            "frames": s.frame_count,
            "duration_s": (c.duration / 1_000_000) if c.duration else None,
            "audio": s.audio is not None,
        }


def _os_reason(exc: BaseException) -> str:
    en = getattr(exc, "errno", None)
    if en:
        return f"{os.strerror(en)} (errno {errno.errorcode.get(en, en)})"
    return str(exc)


class VideoSink:
    """Encode frames into a video file with PyAV, keeping timestamps and copying audio.

    ``path``: output file (the container format follows the suffix unless ``format`` is given).
    ``codec``: an FFmpeg encoder (``libx264`` default, ``libx265``, ``libvpx-vp9``, ``ffv1``,
    ``mpeg4``, ``h264_nvenc`` where FFmpeg has it). ``crf`` (quality; libx264/libx265/vp9) or
    ``bitrate`` (bits per second), not both. ``pix_fmt``: encoder pixel format (``yuv420p``
    plays everywhere). ``preset``: encoder speed preset (libx264/libx265). ``fps``: the nominal
    rate written in the header; ``time_base``: the frames' pts unit (from the source).
    ``audio``: an :class:`AudioPassthrough` from the source, remuxed without re-encoding.
    ``fragmented``: write a fragmented MP4/MOV (playable even if the process dies before close).
    ``codec=None``: :func:`default_codec` of the suffix. The codec, container and pixel format are
    checked when the sink is created (:func:`check_output_codec`).

    The file is written under a temporary name beside ``path`` and moved into place by
    :meth:`close` (``commit_on_close=True``, the default) or by :meth:`commit`. Without
    ``overwrite`` the move fails, keeping the other file, if ``path`` appeared meanwhile. When
    writing fails the temporary file is removed, unless ``keep_partial`` and the container plays
    when cut (fragmented MP4, Matroska, MPEG-TS; a live recording): then it is kept under ``path``,
    with a warning. Such a live recording in such a container is written in place from the start
    (so even a killed process leaves what was recorded).
    :meth:`discard` (after :meth:`close`) removes an uncommitted file.

    The streams are created at the first :meth:`write` (when the frame size is known). Frames
    must be written in order; a frame's ``pts`` (in its ``time_base``) is kept; a frame without
    pts gets ``previous + 1 frame``. :meth:`close` flushes the encoder, writes the remaining audio
    and the trailer; it is safe to call twice and is also run by the context manager.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fps: Fraction | float | None = None,
        time_base: Fraction | None = None,
        codec: str | None = None,
        crf: int | None = None,
        bitrate: int | None = None,
        pix_fmt: str = "yuv420p",
        preset: str | None = None,
        audio: AudioPassthrough | None = None,
        overwrite: bool = False,
        fragmented: bool = False,
        format: str | None = None,
        codec_options: Mapping[str, str] | None = None,
        keep_partial: bool = False,
        commit_on_close: bool = True,
    ) -> None:
        av = _av()
        self.path = Path(path)
        if crf is not None and bitrate is not None:
            raise UsageError("give --crf or --bitrate, not both.")
        codec = codec or default_codec(self.path)
        check_output_codec(self.path, codec, pix_fmt, format=format)
        if self.path.exists() and not self.path.is_file() and not self.path.is_dir():
            raise OutputError(f"cannot write a video to {str(self.path)!r}: it is a device or special "
                              f"file; give a file name in a folder.")
        if self.path.is_dir():
            raise OutputError(f"cannot create {str(self.path)!r}: it is a folder; give a file name.")
        check_output_path(self.path, overwrite=overwrite)
        self.fps = _fraction(fps) or Fraction(25)
        self.time_base = time_base
        self.codec = codec
        self.crf = crf
        self.bitrate = bitrate
        self.pix_fmt = pix_fmt
        self.preset = preset
        self.audio = audio
        self.overwrite = overwrite
        self.keep_partial = bool(keep_partial)
        self.fragmented = bool(fragmented)
        self._commit_on_close = commit_on_close
        self._codec_options = dict(codec_options or {})
        opts: dict[str, str] = {}
        fmt = format
        if fragmented and (fmt in (None, "mp4", "mov") and self.path.suffix.lower() in (".mp4", ".m4v", ".mov")
                           or fmt in ("mp4", "mov")):
            # a fragment at every keyframe and at least every second, so little is lost on a crash
            opts["movflags"] = "frag_keyframe+empty_moov+default_base_moof"
            opts["frag_duration"] = "1000000"
        else:
            self.fragmented = False
        fmt = fmt or _container_name(self.path.suffix.lower())
        # what was written before a failure still plays: fragmented MP4, Matroska, MPEG-TS
        self.playable_when_cut = self.fragmented or fmt in ("matroska", "webm", "mpegts")
        # A live recording in a container that plays when cut is written in place, as it happens
        # (a SIGKILL or power cut leaves what was recorded); anything else goes through a temporary file.
        self.direct = self.keep_partial and self.playable_when_cut
        self.temp: Path | None = None if self.direct else new_temp(self.path, suffix=self.path.suffix)
        try:
            self._out = av.open(str(self.path if self.direct else self.temp), mode="w", format=fmt,
                                options=opts or None)
        except (av.FFmpegError, OSError) as exc:
            self.discard()
            raise OutputError(f"cannot create {str(self.path)!r}: {_os_reason(exc)}") from None
        except BaseException:
            self.discard()
            raise
        if audio is not None:
            audio.active = True
        self._vs: Any = None
        self._as: Any = None
        self._last_pts: int | None = None
        self._closed = False
        self._failed = False
        self._finalized = False
        self.committed = False
        self.frames = 0
        self.audio_packets = 0
        self.size: tuple[int, int] | None = None  # (width, height)

    # -- writing ------------------------------------------------------------------------------

    def _setup(self, width: int, height: int, tb: Fraction) -> None:
        av = _av()
        try:
            vs = self._out.add_stream(self.codec, rate=self.fps)
        except (ValueError, av.FFmpegError) as exc:  # checked at creation; kept as an error, not a crash
            raise UsageError(f"cannot write {self.codec} video to {str(self.path)!r}: {exc}.") from None
        vs.width, vs.height = width, height
        try:
            vs.pix_fmt = self.pix_fmt
        except (ValueError, av.FFmpegError) as exc:
            raise UsageError(f"pixel format {self.pix_fmt!r} is not accepted by {self.codec}: {exc}") from None
        vs.codec_context.time_base = tb
        opts = dict(self._codec_options)
        if self.crf is not None:
            opts.setdefault("crf", str(self.crf))
        if self.preset is not None:
            opts.setdefault("preset", self.preset)
        if opts:
            vs.options = opts
        if self.bitrate is not None:
            vs.bit_rate = int(self.bitrate)
        self._vs = vs
        if self.audio is not None:
            try:
                self._as = self._out.add_stream_from_template(self.audio.template)
            except (av.FFmpegError, ValueError) as exc:
                log.warning("audio cannot be copied into %s (%s); writing video only", self.path, exc)
                self.audio = None
        self.size = (width, height)

    def write(self, frame: Frame) -> None:
        """Encode one frame (HxWx3 uint8 RGB). Raises OutputError if the file cannot be written."""
        if self._closed:
            raise UsageError("write() after close()")
        av = _av()
        img = as_rgb_uint8(frame.image, what=f"frame {frame.index}")
        h, w = img.shape[:2]
        tb = frame.time_base if (frame.pts is not None and frame.time_base) else None
        if self._vs is None:
            self._tb = self.time_base or tb or (1 / self.fps)
            self._setup(w, h, Fraction(self._tb))
        elif (w, h) != self.size:
            raise InputError(f"frame {frame.index} is {w}x{h} but the video is {self.size[0]}x{self.size[1]}.")
        pts: int
        if frame.pts is not None and tb is not None:
            pts = int(round(frame.pts * tb / self._tb))
        elif self._last_pts is None:
            pts = 0
        else:
            pts = self._last_pts + max(1, int(round(1 / (self.fps * self._tb))))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        vf = av.VideoFrame.from_ndarray(img, format="rgb24")
        vf.pts = pts
        vf.time_base = self._tb
        t = float(pts * self._tb)
        self._mux_audio(until=t)
        self._guard(lambda: [self._out.mux(p) for p in self._vs.encode(vf)])
        self.frames += 1

    def _mux_audio(self, until: float | None) -> None:
        if self.audio is None or self._as is None:
            return
        for p in self.audio.take(until=until):
            p.stream = self._as
            self._guard(lambda p=p: self._out.mux(p))
            self.audio_packets += 1

    def _guard(self, fn: Any) -> None:
        av = _av()
        try:
            fn()
        except (av.FFmpegError, OSError) as exc:
            self._failed = True
            raise OutputError(f"writing {str(self.path)!r} failed: {_os_reason(exc)}. "
                              f"{self.frames} frames were encoded before the error; {self._fate()}.") from None

    def _fate(self) -> str:
        """What happens to the file after a write error (for the message)."""
        if self.keep_partial and self.playable_when_cut:
            return "the recording up to here is kept"
        return "the partial file is removed"

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Flush the encoder, copy the remaining audio, write the trailer; then (``commit_on_close``)
        move the file into place. Safe to call twice. On a write error the temporary file is removed
        (or kept, see ``keep_partial``) and OutputError is raised."""
        if self._closed:
            return
        self._closed = True
        av = _av()
        err: OutputError | None = None
        try:
            if self._vs is not None and not self._failed:
                try:
                    self._guard(lambda: [self._out.mux(p) for p in self._vs.encode(None)])
                    self._mux_audio(until=None)
                except OutputError as exc:
                    err = exc
        finally:
            try:
                self._out.close()
            except (av.FFmpegError, OSError) as exc:
                if err is None and not self._failed:
                    self._failed = True
                    err = OutputError(f"finalizing {str(self.path)!r} failed: {_os_reason(exc)}. "
                                      f"{self.frames} frames were encoded before the error; {self._fate()}.")
            except BaseException:
                self.discard()
                raise
        self._finalized = True
        if self._vs is None and err is None:  # an empty container is no video: write nothing
            log.warning("no frames were given: nothing was written to %s", self.path)
            self.discard()
            return
        if self._failed or err is not None:
            if self.keep_partial and self.playable_when_cut and self.frames:
                try:
                    self.commit(fsync=False)
                    log.warning("kept the partial recording %s (%d frames; it plays up to the error)",
                                self.path, self.frames)
                except OutputError as exc2:
                    log.error("%s", exc2)
            else:
                self.discard()
            if err is not None:
                raise err
            return
        if self._commit_on_close:
            self.commit()

    def commit(self, *, fsync: bool = True) -> None:
        """Move the finalized temporary file to :attr:`path` (after :meth:`close`). OutputError if it
        cannot (the temporary file is then removed)."""
        if not self._finalized:
            raise UsageError("commit() before close()")
        if self.direct:
            self.committed = True
            return
        if self.temp is None:
            return
        try:
            publish(self.temp, self.path, overwrite=self.overwrite, fsync=fsync)
        except OSError as exc:
            self.discard()
            raise OutputError(f"cannot write {str(self.path)!r}: {exc.strerror or exc}.") from None
        except BaseException:
            self.discard()
            raise
        self.temp = None
        self.committed = True

    def discard(self) -> None:
        """Remove the temporary file (nothing is written to :attr:`path`; a recording written in place
        is removed only if it holds no frame). Safe to call twice."""
        if self.direct and not self.frames and not self.committed:
            self.temp, self.direct = self.path, False
        tmp, self.temp = self.temp, None
        if tmp is not None:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> "VideoSink":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            if not self.keep_partial:
                self._commit_on_close = False
            try:
                self.close()
            except OutputError as exc:
                log.error("%s", exc)
            finally:
                if not self.keep_partial:
                    self.discard()

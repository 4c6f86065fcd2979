"""``hanrt stream``: video files, network streams, cameras and image sequences through the pipelined
runtime (decode ∥ infer ∥ encode), and the video branch of ``hanrt upscale`` (:func:`run_video`).

Needs the [video] extra (PyAV) for video files and streams, [camera] (OpenCV) for cameras and
``--display``; ``--help`` works without them. Progress (frames, fps, ETA) goes to stderr; the
closing summary (frames in/out, dropped, corrupt, fps, latency p50/p99) to stdout.
Exit codes: 0 done, 130 stopped by SIGINT, 143 by SIGTERM, others per :mod:`hanrt.errors`.
A video file is written atomically (a temporary file renamed when finalized): a run that fails or is
stopped while reading a file source leaves no output. A live source (network stream, camera, or a
file paced with --realtime/--rate) is a recording: when stopped it is finalized and kept (it plays),
and stderr says so; with --fragmented (or .mkv/.ts) it is written in place as it is recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from . import Command
from ._common import add_model_options as _add_model_options
from ._common import upscaler_from_args

EPILOG = """\
sources: a video file, rtsp:// rtmp:// http:// udp:// srt:// URLs, a camera (0, /dev/video0, or a
GStreamer pipeline such as "nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720 !
nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1"),
or an image sequence (a folder, a glob, or frames/%05d.png).

examples:
  hanrt stream input.mp4 --output out.mp4
  hanrt stream rtsp://cam/stream --realtime --output live.mp4 --fragmented
  hanrt stream 0 --realtime --display
  hanrt stream clip.mp4 --realtime --rate 30 --output out.mp4   # simulate a 30 fps camera
"""


MODEL_HELP = {
    "model": "model: .onnx graph, .plan engine or .pt checkpoint or a bundled model: photo (default), art, document",
    "backend": "backend (default auto)",
    "tile": "tile side in input pixels, margin included (0: whole frame; default: the Upscaler's)",
    "batch": "tiles per backend call (default 1)",
    "threads": "CPU threads for the backend (0: its default)",
    "device": "CUDA device (GPU backends; default 0)",
    "fp16": "FP16 where the backend supports it (torch on CUDA)",
}


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--model --backend --tile --margin --batch --threads --device --fp16`` (as ``upscale`` has),
    in a "model" group (:func:`hanrt.cli._common.add_model_options`)."""
    _add_model_options(p.add_argument_group("model"), MODEL_HELP, metavar={"device": "ID"})


def add_encoder_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("video output")
    g.add_argument("--codec", default=None,
                   help="FFmpeg video encoder: libx264 (default; libvpx-vp9 for .webm), libx265, libvpx-vp9, "
                        "mpeg4, ffv1, h264_nvenc")
    q = g.add_mutually_exclusive_group()
    q.add_argument("--crf", type=int, default=None, help="constant quality (libx264/libx265/vp9; lower is better)")
    q.add_argument("--bitrate", default=None, help="target bitrate in bits/s, e.g. 8M or 2500k")
    g.add_argument("--pix-fmt", default="yuv420p", help="encoder pixel format (default yuv420p: plays everywhere)")
    g.add_argument("--preset", default=None, help="encoder preset (libx264/libx265: ultrafast..veryslow)")
    g.add_argument("--no-audio", action="store_true", help="do not copy the audio stream")
    g.add_argument("--fragmented", action="store_true",
                   help="fragmented MP4: what was written stays playable even if the process is killed")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output")


def configure(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("source", help="video file, stream URL, camera (0, /dev/video0, GStreamer pipeline) or image sequence")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--output", "-o", default=None,
                     help="output video file (.mp4, .mkv, ...) or, without a video suffix, a folder of PNG frames")
    out.add_argument("--display", action="store_true", help="show the upscaled frames in a window (q quits)")
    out.add_argument("--null", action="store_true", help="discard the output (measure throughput)")
    p.add_argument("--realtime", action="store_true",
                   help="latest-frame policy: drop stale frames instead of queueing them (cameras, live streams)")
    p.add_argument("--rate", type=float, default=None,
                   help="read the source at this many frames/s, like a live camera (default: as fast as it decodes)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many source frames")
    p.add_argument("--queue", type=int, default=4, help="frames buffered between stages (default 4)")
    p.add_argument("--retries", type=int, default=5, help="reconnect attempts for live sources (default 5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the closing summary as JSON")
    add_model_options(p)
    add_encoder_options(p)


def _parse_bitrate(text: str | None) -> int | None:
    from hanrt.errors import UsageError

    if text is None:
        return None
    t = str(text).strip().lower()
    mult = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(t[-1:], 1)
    try:
        v = float(t[:-1] if mult != 1 else t) * mult
    except ValueError:
        raise UsageError(f"--bitrate must be a number of bits/s like 8M or 2500k, got {text!r}.") from None
    if v <= 0:
        raise UsageError(f"--bitrate must be > 0, got {text!r}.")
    return int(v)


class _Progress:
    """A tqdm bar (frames, fps, ETA) on stderr; a no-op when disabled or tqdm is missing."""

    def __init__(self, total: int | None, enabled: bool, desc: str) -> None:
        self.bar: Any = None
        self.n = 0
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        # disable=None: no bar when stderr is not a terminal (no \r updates in logs)
        self.bar = tqdm(total=total, unit="frame", desc=desc, file=sys.stderr, dynamic_ncols=True,
                        smoothing=0.1, leave=True, disable=None)

    def __call__(self, stats: Any) -> None:
        if self.bar is None:
            return
        self.bar.update(stats.frames_out - self.n)
        self.n = stats.frames_out
        post = {}
        if stats.dropped:
            post["dropped"] = stats.dropped
        if stats.corrupt:
            post["corrupt"] = stats.corrupt
        if post:
            self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def print_summary(stats: Any, *, as_json: bool, output: str | None) -> None:
    s = stats.summary()
    if output:
        s["output"] = output
    if as_json:
        print(json.dumps(s))
        return
    lat = ("n/a" if s["latency_p50_ms"] is None
           else f"p50 {s['latency_p50_ms']:.1f} ms, p99 {s['latency_p99_ms']:.1f} ms")
    print(f"frames in {s['frames_in']}, out {s['frames_out']}, dropped {s['dropped']}, corrupt {s['corrupt']}"
          + (f", reconnects {s['reconnects']}" if s["reconnects"] else "")
          + f"; {s['fps']:.2f} fps (model {s['compute_fps']:.2f} fps); latency {lat}"
          + (" [interrupted]" if s["interrupted"] else "")
          + (f" -> {output}" if output else ""))


def is_recording(args: argparse.Namespace, src: Any) -> bool:
    """A live source (network stream, camera), or one paced like it (``--realtime``, ``--rate``): its
    output is a recording, kept (and playable) when stopped. Other outputs are written whole or not at all."""
    return bool(getattr(src, "live", False) or getattr(args, "realtime", False)
                or getattr(args, "rate", None) is not None)


def _open_sink(args: argparse.Namespace, src: Any, pipe_stop: Any) -> tuple[Any, str | None]:
    from hanrt.errors import UsageError
    from hanrt.io.frames import NullSink

    if getattr(args, "display", False):
        from hanrt.io.camera import WindowSink

        return WindowSink(on_quit=pipe_stop), None
    if getattr(args, "null", False):
        return NullSink(), None
    out = getattr(args, "output", None)
    if not out:
        raise UsageError("say where the frames go: --output OUT.mp4, --output FOLDER (PNG frames), "
                         "--display or --null.")
    from hanrt.io.video import VIDEO_SUFFIXES

    from pathlib import Path

    if Path(out).suffix.lower() in VIDEO_SUFFIXES:
        from hanrt.io.video import VideoSink

        return VideoSink(out, fps=getattr(src, "fps", None), codec=args.codec, crf=args.crf,
                         bitrate=_parse_bitrate(args.bitrate), pix_fmt=args.pix_fmt, preset=args.preset,
                         audio=None if args.no_audio else getattr(src, "audio", None),
                         overwrite=args.overwrite, fragmented=args.fragmented,
                         keep_partial=is_recording(args, src), commit_on_close=False), out
    if Path(out).suffix:
        raise UsageError(f"--output {out!r}: not a video suffix ({', '.join(sorted(VIDEO_SUFFIXES))}); "
                         "give a video file or a folder for PNG frames.")
    from hanrt.io.sequence import ImageSequenceSink

    return ImageSequenceSink(out, overwrite=args.overwrite), out


def run_stream(args: argparse.Namespace, source: Any | None = None) -> int:
    """Run one source through the pipeline per ``args`` (see :func:`configure`); returns the exit code."""
    from hanrt.errors import UsageError
    from hanrt.pipeline import Pipeline, PipelineOptions, handle_signals, open_source

    from ._common import validate_model_options

    for name in ("queue", "max_frames", "retries"):
        v = getattr(args, name, None)
        if v is not None and v < (1 if name == "queue" else 0):
            raise UsageError(f"--{name.replace('_', '-')} must be >= {1 if name == 'queue' else 0}, got {v}.")
    if getattr(args, "rate", None) is not None and args.rate <= 0:
        raise UsageError(f"--rate must be > 0 frames/s, got {args.rate}.")
    validate_model_options(args)
    src = open_source(source if source is not None else args.source, audio=not getattr(args, "no_audio", False),
                      retries=getattr(args, "retries", None), fps=getattr(args, "rate", None))
    sink = None
    try:
        up = upscaler_from_args(args)
    except BaseException:
        src.close()
        raise
    with up:
        w, h = getattr(src, "width", 0) or 0, getattr(src, "height", 0) or 0
        if w and h:  # frames in flight: the queues between the stages, plus one in each stage
            from pathlib import Path

            from .upscale import check_run_memory

            try:
                check_run_memory(up, Path(str(getattr(src, "url", "video"))), (h, w, 3), 1,
                                 frames=2 * getattr(args, "queue", 4) + 3, in_flight=up.in_flight)
            except BaseException:
                src.close()
                raise
        holder: list[Any] = []
        try:
            sink, out = _open_sink(args, src, lambda: holder[0].stop() if holder else None)
        except BaseException:
            src.close()
            raise
        pipe = Pipeline(src, up, sink, options=PipelineOptions(
            queue_size=getattr(args, "queue", 4), realtime=getattr(args, "realtime", False),
            source_rate=getattr(args, "rate", None), max_frames=getattr(args, "max_frames", None)))
        holder.append(pipe)
        bar = _Progress(pipe.stats.expected, not getattr(args, "no_progress", False) and not getattr(args, "quiet", False),
                        desc="upscaling")
        done = False
        try:
            with handle_signals(pipe), _short_switch_interval():
                stats = pipe.run(progress=bar)
            done = True
        finally:
            bar.close()
            src.close()
            if not done and hasattr(sink, "discard"):
                sink.discard()
    stopped = pipe.signal_received
    note = _finish_video(sink, out, stopped)
    if not getattr(sink, "committed", True):
        out = None  # discarded: nothing was written there
    if getattr(args, "json", False) or not getattr(args, "quiet", False):
        print_summary(stats, as_json=getattr(args, "json", False), output=out)
    if note:
        print(f"hanrt: {note}", file=sys.stderr)
    return 128 + int(stopped) if stopped is not None else 0


def _finish_video(sink: Any, out: str | None, stopped: int | None) -> str:
    """Commit a video sink's file after a run that returned: always when it ran to the end; when
    stopped by a signal, only a live recording (``keep_partial``), else discard it. Returns the
    note for stderr ("" for none)."""
    import signal as _signal

    if not hasattr(sink, "commit"):
        return ""
    if getattr(sink, "committed", False):  # kept after a write error (a live recording)
        return ""
    if stopped is not None and not sink.keep_partial:
        sink.discard()
        return (f"stopped by {_signal.Signals(stopped).name}: {out} was not written (a video file is "
                f"written whole or not at all; {sink.frames} frames had been encoded).")
    if not sink.frames:
        from hanrt.errors import InputError

        sink.discard()
        raise InputError("no frame of the source could be decoded (damaged or empty video); nothing was written.")
    sink.commit()
    if stopped is not None:
        return f"stopped by {_signal.Signals(stopped).name}: kept the recording {out} ({sink.frames} frames; it plays)."
    return ""


@contextlib.contextmanager
def _short_switch_interval(seconds: float = 0.001):
    """Hand the GIL between the decode/infer/encode threads every ``seconds`` (Python's default is 5 ms).

    With the default, the encoder thread waited on the GIL behind the busy inference thread: a
    1-minute 160x90 clip ran end to end at 0.82 of compute-only fps; with 1 ms, 0.95 (one run each,
    the benchmarks' ``stream_bench --clip clip.mp4 --make-clip 160x90 --seconds 60 --processor ort``,
    tiny model, shared 2-core CPU). The CLI owns the process, so it sets this; the library does not.
    """
    old = sys.getswitchinterval()
    sys.setswitchinterval(min(old, seconds))
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def run_video(args: argparse.Namespace, source: str) -> int:
    """The video branch of ``hanrt upscale VIDEO --output OUT.mp4``: ``source`` is the video, the
    other settings come from ``args`` (missing attributes take ``hanrt stream``'s defaults)."""
    defaults = argparse.Namespace()
    p = argparse.ArgumentParser(add_help=False)
    configure(p)
    defaults = p.parse_args([str(source)])
    for k, v in vars(args).items():
        setattr(defaults, k, v)
    defaults.source = str(source)
    if getattr(defaults, "output", None) is None:
        from hanrt.errors import UsageError

        raise UsageError("a video needs --output OUT.mp4 (or a folder for PNG frames).")
    return run_stream(defaults)


def run(args: argparse.Namespace) -> int:
    return run_stream(args)


COMMAND = Command(
    "stream",
    "upscale a video, stream, camera or image sequence through the pipelined runtime",
    configure,
    run,
    order=35,
    description="Upscale a video file, network stream, camera or image sequence: decoding, inference and "
    "encoding run concurrently; audio, frame rate and timestamps are kept.",
)


def run_upscale_videos(args: argparse.Namespace, videos: list[Any], images: list[Any],
                       misses: list[tuple[str, str]], upscale_images: Any) -> int:
    """``hanrt upscale`` with video inputs (the hook in :func:`hanrt.cli.upscale.dispatch`).

    One video and ``--output`` with a video suffix: that file. Otherwise ``--output`` is a folder
    (created if needed, removed again if nothing was written into it) and each video keeps its
    file name; an ``--output`` with an image suffix, or an existing file, is refused before any
    work. Images beside the videos go to ``upscale_images(args, images, misses)``. Returns the
    first nonzero exit code (128 + the signal number at once if a video was stopped by
    SIGINT/SIGTERM).
    """
    from pathlib import Path

    from hanrt.errors import HanrtError, OutputError, UsageError
    from hanrt.io.atomic import check_output_path
    from hanrt.io.images import IMAGE_SUFFIXES
    from hanrt.io.video import VIDEO_SUFFIXES

    from .upscale import make_output_folder, remove_if_empty, same_file

    out = Path(args.output)
    single = (len(videos) == 1 and not images and len(getattr(args, "inputs", [1])) == 1
              and not out.is_dir() and out.suffix.lower() in VIDEO_SUFFIXES)
    if not single and not out.is_dir() and out.suffix.lower() in IMAGE_SUFFIXES:
        raise UsageError(f"--output {args.output!r} names an image file, but {videos[0]} is a video: give a "
                         f"video file (.mp4, .mkv, .webm) for one video, or a folder.")
    targets = [(v, out if single else out / Path(v).name) for v in videos]
    for v, dst in targets:
        if same_file(v, dst):
            raise OutputError(f"{str(dst)!r} is the input {str(v)!r}; hanrt never writes over its input. "
                              f"Choose another --output.")
    created = None if single else make_output_folder(out)
    code = 0
    try:
        for v, dst in targets:
            try:  # before any work, as for images
                check_output_path(dst, overwrite=args.overwrite)
            except OutputError as exc:
                print(f"hanrt: error: {v}: {exc}", file=sys.stderr)
                code = code or exc.exit_code
                continue
            ns = argparse.Namespace(**vars(args))
            ns.output = str(dst)
            try:
                rc = run_video(ns, str(v))
            except HanrtError as exc:
                print(f"hanrt: error: {v}: {exc}", file=sys.stderr)
                rc = exc.exit_code
            if rc in (130, 143):
                return rc
            code = code or rc
        if images or misses:
            rc = upscale_images(args, images, misses)
            code = code or rc
    finally:
        if created is not None:
            remove_if_empty(created)
    return code

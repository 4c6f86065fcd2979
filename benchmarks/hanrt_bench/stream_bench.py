"""Streaming throughput: end-to-end pipeline fps against compute-only fps on the same frames.

    python -m hanrt_bench.stream_bench --clip clip.mp4 --make-clip 160x90 --seconds 60 \
        --processor ort --model tiny.onnx --threads 1
    python -m hanrt_bench.stream_bench --processor torch-cuda --synthetic 640x360 --frames 300 --fp16

*compute-only*: the processor alone over frames already decoded into memory, measured before and
after the end-to-end run and averaged (the load of a shared machine drifts) (async processors
keep ``in_flight`` frames in flight, as in the pipeline). *end-to-end*: the pipeline (decode ∥
infer ∥ encode, audio copied) from the clip to a video file; with ``--synthetic`` (no PyAV) the
pipeline runs from in-memory frames into a null sink. Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def make_clip(path: str, width: int, height: int, seconds: float, fps: int = 25) -> None:
    """A clip with moving content and a 440 Hz AAC track (PyAV)."""
    from fractions import Fraction

    import av

    n = int(round(seconds * fps))
    with av.open(path, "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"preset": "veryfast", "crf": "18"}
        aus = out.add_stream("aac", rate=48000)
        aus.layout = "mono"
        xs, ys = np.arange(width)[None, :], np.arange(height)[:, None]
        for i in range(n):
            img = np.empty((height, width, 3), np.uint8)
            img[..., 0] = (xs * 2 + i * 3) % 256
            img[..., 1] = (ys * 3 + 2 * i) % 256
            img[..., 2] = ((xs + ys + i) * 5) % 256
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        sr = 48000
        sig = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * sr)) / sr)).astype(np.float32)[None]
        for s in range(0, sig.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(sig[:, s:s + 1024]), format="fltp", layout="mono")
            af.sample_rate, af.pts = sr, s
            for p in aus.encode(af):
                out.mux(p)
        for p in aus.encode(None):
            out.mux(p)


def compute_only(proc: Any, images: list[np.ndarray]) -> float:
    """Frames per second of the processor alone (no decode, no encode)."""
    t = time.perf_counter()
    if all(callable(getattr(proc, n, None)) for n in ("submit", "wait")):
        pending: collections.deque = collections.deque()
        depth = max(1, int(getattr(proc, "in_flight", 1)))
        for im in images:
            pending.append(proc.submit(im))
            if len(pending) >= depth:
                proc.wait(pending.popleft())
        while pending:
            proc.wait(pending.popleft())
    else:
        fn = getattr(proc, "upscale", proc)
        for im in images:
            fn(im)
    return len(images) / (time.perf_counter() - t)


def open_processor(args: argparse.Namespace) -> Any:
    if args.processor == "ort":
        from hanrt.upscaler import Upscaler

        return Upscaler(args.model, backend="ort-cpu", tile=args.tile, threads=args.threads)
    import torch

    from hanrt_export.han import HAN
    from hanrt_export.torch_stream import TorchStreamProcessor

    torch.manual_seed(0)
    model = HAN(scale=4, n_resgroups=args.groups, n_resblocks=args.blocks, n_feats=args.feats, reduction=16
                if args.feats >= 32 else 4).eval()
    return TorchStreamProcessor(model, fp16=args.fp16, slots=args.slots, memory=args.memory)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hanrt_bench.stream_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", help="input video (made first with --make-clip WxH)")
    p.add_argument("--make-clip", help="make the clip: WxH (e.g. 160x90)")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--synthetic", help="no video I/O: WxH frames in memory (GPU machines without PyAV)")
    p.add_argument("--frames", type=int, default=300, help="frames for --synthetic")
    p.add_argument("--processor", choices=["ort", "torch-cuda"], default="ort")
    p.add_argument("--model", help="ONNX model for --processor ort")
    p.add_argument("--tile", type=int, default=0, help="ort: tile side (0: whole frame)")
    p.add_argument("--threads", type=int, default=0, help="ort: intra-op threads")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--memory", choices=["copy", "mapped"], default="copy")
    p.add_argument("--feats", type=int, default=64)
    p.add_argument("--groups", type=int, default=10)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--preset", default="veryfast", help="libx264 preset for the end-to-end output")
    p.add_argument("--encoder-threads", type=int, default=0, help="libx264 threads (0: FFmpeg's default)")
    p.add_argument("--output", help="end-to-end output video (default: a temporary file)")
    p.add_argument("--switch-interval", type=float, default=0.001,
                   help="GIL switch interval in s during the run, as `hanrt stream` sets it (0: Python's default)")
    args = p.parse_args(argv)
    if args.switch_interval > 0:
        sys.setswitchinterval(args.switch_interval)

    from hanrt.io.frames import Frame, NullSink
    from hanrt.pipeline import Pipeline, upscale_video

    if args.synthetic:
        w, h = (int(v) for v in args.synthetic.lower().split("x"))
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        images = [np.roll(base, i, axis=1) for i in range(args.frames)]
    else:
        if args.make_clip:
            w, h = (int(v) for v in args.make_clip.lower().split("x"))
            t = time.perf_counter()
            make_clip(args.clip, w, h, args.seconds)
            print(f"made {args.clip} ({args.make_clip}, {args.seconds:g} s) in {time.perf_counter() - t:.1f} s",
                  file=sys.stderr)
        from hanrt.io.video import VideoSource

        images = [f.image for f in VideoSource(args.clip, audio=False)]
    proc = open_processor(args)
    try:
        compute_only(proc, images[: min(10, len(images))])  # warm-up
        c_fps = compute_only(proc, images)
        if args.synthetic:
            frames = (Frame(image=im, index=i, t_capture=time.perf_counter()) for i, im in enumerate(images))
            stats = Pipeline(frames, proc, NullSink()).run()
            c_fps2 = compute_only(proc, images)
        else:
            out = args.output or str(Path(tempfile.mkdtemp()) / "bench_out.mp4")
            stats = upscale_video(args.clip, out, proc, preset=args.preset, overwrite=True,
                                  codec_options={"threads": str(args.encoder_threads)} if args.encoder_threads else None)
        c_fps2 = compute_only(proc, images)  # again after: the machine's load may drift
    finally:
        close = getattr(proc, "close", None)
        if close:
            close()
    c_before = c_fps
    c_fps = (c_fps + c_fps2) / 2
    res = {"processor": args.processor, "fp16": args.fp16, "slots": args.slots, "memory": args.memory,
           "frames": len(images), "size": list(images[0].shape[:2]), "compute_only_fps": round(c_fps, 2),
           "compute_only_fps_before_after": [round(c_before, 2), round(c_fps2, 2)],
           "end_to_end_fps": round(stats.fps, 2), "ratio": round(stats.fps / c_fps, 3),
           "io": "synthetic->null" if args.synthetic else "decode->encode(+audio)", **stats.summary()}
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

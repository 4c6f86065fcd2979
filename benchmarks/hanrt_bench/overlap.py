"""Frames in flight: does the pipeline run at the speed of its slowest stage?

``python -m hanrt_bench.overlap [--frames 40] [--decode-ms 20] [--compute-ms 30] [--encode-ms 20]``
runs a :class:`~hanrt.pipeline.Pipeline` whose source sleeps ``decode-ms`` per frame, whose sink
sleeps ``encode-ms`` per frame, and whose Upscaler runs on :class:`FixedTimeBackend`: a backend
whose ``submit`` hands the batch to a "device" thread that takes ``compute-ms`` per frame (split
evenly over the frame's tiles) and returns at once, as a GPU stream does. The host work in between
(the Upscaler's gather and stitch) is real. It prints frames/s for

- ``async``: the Upscaler as the pipeline uses it (``submit``/``wait``, frames in flight);
- ``sync``: the same Upscaler behind a plain ``upscale`` call (one frame at a time, slots drained
  between frames: the behaviour before frames were kept in flight);

and each one's share of the slowest stage's rate: 1 / max(decode, compute, encode) seconds per
frame, each stage's time as it actually ran (sleeps overshoot on a loaded machine).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import threading
import time
from typing import Any, Iterator

import numpy as np

from hanrt.backends.base import Backend, Slot, check_batch
from hanrt.io.frames import Frame
from hanrt.model_info import ModelInfo

__all__ = ["FixedTimeBackend", "run_overlap", "main"]


class FixedTimeBackend(Backend):
    """An asynchronous test backend: one "device" thread runs submitted batches in order, each
    taking ``seconds_per_pixel * input pixels`` (mostly a sleep, so the host is free meanwhile,
    like a GPU), and produces a nearest-neighbour ``scale``x upscale (float32 NCHW 0..255).

    ``submit`` returns at once; ``wait`` blocks until the slot's batch is done. Records the
    largest number of batches that were queued or running on the device at once (``max_queued``)
    and every batch's device start/end times (``spans``)."""

    name = "fixed-time"

    def __init__(self, *, seconds_per_pixel: float, scale: int = 4) -> None:
        self.info = ModelInfo(scale=scale)
        self.seconds_per_pixel = seconds_per_pixel
        self._device = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fake-device")
        self._lock = threading.Lock()
        self._queued = 0
        self.max_queued = 0
        self.spans: list[tuple[float, float]] = []

    def run(self, batch: np.ndarray) -> np.ndarray:
        check_batch(self.info, batch, source=self.name)
        s = self.info.scale
        return batch.repeat(s, axis=2).repeat(s, axis=3)

    def _device_run(self, batch: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.run(batch)  # the work, then a sleep for the rest of the batch's fixed time
        rest = t0 + self.seconds_per_pixel * batch.shape[0] * batch.shape[2] * batch.shape[3] - time.perf_counter()
        if rest > 0:
            time.sleep(rest)
        with self._lock:
            self._queued -= 1
            self.spans.append((t0, time.perf_counter()))
        return out

    def submit(self, slot: Slot, n: int) -> None:
        if slot.pending:
            raise RuntimeError(f"slot {slot.index} submitted twice")
        batch = slot.input[:n].copy()  # the "host-to-device copy": the slot may be refilled now
        with self._lock:
            self._queued += 1
            self.max_queued = max(self.max_queued, self._queued)
        slot.n, slot.pending = n, True
        slot.handle = self._device.submit(self._device_run, batch)

    def wait(self, slot: Slot) -> np.ndarray:
        out = slot.handle.result()
        slot.pending = False
        return out

    def close(self) -> None:
        self._device.shutdown(wait=True)


class _SyncOnly:
    """Hides ``submit``/``wait``: the pipeline then calls ``upscale`` one frame at a time."""

    def __init__(self, up: Any) -> None:
        self.up = up

    def upscale(self, image: np.ndarray) -> np.ndarray:
        return self.up.upscale(image)


def _source(n: int, h: int, w: int, decode_s: float, spent: list[float]) -> Iterator[Frame]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for i in range(n):
        t0 = time.perf_counter()
        time.sleep(decode_s)
        img = np.roll(base, i, axis=1)
        spent.append(time.perf_counter() - t0)
        yield Frame(image=img, index=i)


def run_overlap(*, frames: int = 40, size: tuple[int, int] = (96, 128), decode_ms: float = 20.0,
                compute_ms: float = 30.0, encode_ms: float = 20.0, tile: int | str | None = 64,
                margin: int = 4, slots: int = 2, mode: str = "async") -> dict[str, Any]:
    """One pipeline run; returns frames/s, the slowest stage's rate and the backend's records."""
    from hanrt.pipeline import Pipeline, PipelineOptions
    from hanrt.upscaler import Upscaler

    h, w = size
    probe = Upscaler(FixedTimeBackend(seconds_per_pixel=0.0), tile=tile, margin=margin)
    px = sum(a * b for a, b in (probe.plan(h, w).window(t) for t in probe.plan(h, w).tiles))
    be = FixedTimeBackend(seconds_per_pixel=compute_ms / 1000.0 / px)
    up = Upscaler(be, tile=tile, margin=margin, slots=slots)
    proc: Any = up if mode == "async" else _SyncOnly(up)

    decode_spent: list[float] = []
    encode_spent: list[float] = []

    def sink(_frame: Frame) -> None:
        t0 = time.perf_counter()
        time.sleep(encode_ms / 1000.0)
        encode_spent.append(time.perf_counter() - t0)

    pipe = Pipeline(_source(frames, h, w, decode_ms / 1000.0, decode_spent), proc, sink,
                    options=PipelineOptions(queue_size=4))
    try:
        stats = pipe.run()
    finally:
        up.close()
        be.close()
    n = max(stats.frames_out, 1)
    # each stage's time per frame as it actually ran (sleeps overshoot on a loaded machine)
    stage_s = {"decode": sum(decode_spent) / n, "compute": sum(b - a for a, b in be.spans) / n,
               "encode": sum(encode_spent) / n}
    slowest = max(stage_s.values())
    return {"mode": mode, "frames": stats.frames_out, "fps": stats.fps, "slowest_stage_fps": 1.0 / slowest,
            "share_of_slowest": stats.fps * slowest, "stage_ms": {k: v * 1e3 for k, v in stage_s.items()},
            "tiles_per_frame": probe.plan(h, w).count, "max_queued_on_device": be.max_queued,
            "device_busy": _busy(be.spans, stats.wall_s)}


def _busy(spans: list[tuple[float, float]], wall: float) -> float:
    return sum(b - a for a, b in spans) / wall if wall > 0 else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hanrt_bench.overlap", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--size", default="96x128", help="frame HxW (default 96x128)")
    p.add_argument("--decode-ms", type=float, default=20.0)
    p.add_argument("--compute-ms", type=float, default=30.0, help="device time per frame")
    p.add_argument("--encode-ms", type=float, default=20.0)
    p.add_argument("--tile", default="64", help="tile side, 0 (whole frame) or auto (default 64)")
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="runs per mode, interleaved (async, sync, async, ...)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    h, w = (int(v) for v in a.size.lower().split("x"))
    tile: int | str = a.tile if a.tile == "auto" else int(a.tile)
    rows = []
    for _ in range(a.repeats):
        for mode in ("async", "sync"):
            rows.append(run_overlap(frames=a.frames, size=(h, w), decode_ms=a.decode_ms, compute_ms=a.compute_ms,
                                    encode_ms=a.encode_ms, tile=tile, slots=a.slots, mode=mode))
    if a.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"stages: decode {a.decode_ms} ms, compute {a.compute_ms} ms (device), encode {a.encode_ms} ms per frame; "
          f"{a.frames} frames of {w}x{h}, tile {a.tile}, {a.slots} slots")
    print("| mode | fps | decode / compute / encode ms per frame (as run) | slowest stage fps | share of slowest "
          "| tiles/frame | device busy |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        st = r["stage_ms"]
        print(f"| {r['mode']} | {r['fps']:.1f} | {st['decode']:.1f} / {st['compute']:.1f} / {st['encode']:.1f} | "
              f"{r['slowest_stage_fps']:.1f} | {r['share_of_slowest']:.2f} | {r['tiles_per_frame']} | "
              f"{r['device_busy']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Latency measurement: warm-up, N timed iterations, order statistics, throughput, stages.

Clocks: the wall time of each iteration is taken with :func:`time.perf_counter` (seconds).
Stages inside an iteration (decode, pre-process, H2D, compute, D2H, stitch, encode for the
baselines; decode, prepare, gather, compute, stitch, finish, encode for hanrt, whose
:class:`~hanrt.upscaler.Upscaler` reports its own, see :data:`hanrt.upscaler.STAGES`) are timed
by a :class:`StageTimer`: ``perf_counter`` on CPUs; on CUDA, a timer created with
``cuda=True`` records ``torch.cuda.Event`` pairs on the current stream and reads them after the
iteration has synchronised (GPU time of the work enqueued inside the stage, not host time).

Statistics (:class:`LatencyStats`): percentiles by linear interpolation between order
statistics (numpy's default, "type 7"); ``std_s`` is the sample standard deviation (ddof=1;
0 for one sample).
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["LatencyStats", "StageTimer", "Measurement", "measure", "summarize"]

#: Stage names in pipeline order (a row has the ones its method times; hanrt's are the Upscaler's).
STAGES = ("decode", "prepare", "preprocess", "gather", "h2d", "compute", "d2h", "stitch", "finish", "encode")


@dataclass(frozen=True)
class LatencyStats:
    """Order statistics of per-iteration latencies, in seconds."""

    n: int
    mean_s: float
    std_s: float
    min_s: float
    p50_s: float
    p90_s: float
    p99_s: float
    max_s: float

    def as_ms(self) -> dict[str, float]:
        """The same figures in milliseconds (keys ``mean_ms``, ``p50_ms``, ...) plus ``n``."""
        d: dict[str, float] = {"n": float(self.n)}
        for k, v in asdict(self).items():
            if k.endswith("_s"):
                d[k[:-2] + "_ms"] = v * 1e3
        return d


def summarize(samples_s: Sequence[float]) -> LatencyStats:
    """Statistics of a sequence of latencies in seconds (at least one finite, >= 0 value)."""
    a = np.asarray(list(samples_s), dtype=np.float64)
    if a.size == 0:
        raise ValueError("summarize: no samples")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError("summarize: samples must be finite and >= 0")
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return LatencyStats(
        n=int(a.size), mean_s=float(a.mean()), std_s=float(a.std(ddof=1)) if a.size > 1 else 0.0,
        min_s=float(a.min()), p50_s=float(p50), p90_s=float(p90), p99_s=float(p99), max_s=float(a.max()),
    )


class StageTimer:
    """Accumulates time per named stage over one or more iterations.

    ``with timer.stage("compute"): ...`` adds the stage's duration (seconds). With ``cuda=True``
    (needs torch with CUDA) the duration is GPU time between two CUDA events recorded on the
    current stream; call :meth:`resolve` after synchronising to convert the pending events.
    Not thread-safe: one timer per measuring thread.
    """

    def __init__(self, *, cuda: bool = False) -> None:
        self.cuda = cuda
        self._totals: dict[str, list[float]] = {}
        self._pending: list[tuple[str, Any, Any]] = []
        self._iter: dict[str, float] = {}
        if cuda:
            import torch  # noqa: F401  (lazy: only GPU timing needs it)

    @property
    def clock(self) -> str:
        return "cuda-events" if self.cuda else "perf_counter"

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.cuda:
            import torch

            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._pending.append((name, start, end))
        else:
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self._iter[name] = self._iter.get(name, 0.0) + time.perf_counter() - t0

    def add(self, name: str, seconds: float) -> None:
        """Add a duration measured elsewhere (e.g. stage times a backend reports)."""
        self._iter[name] = self._iter.get(name, 0.0) + float(seconds)

    def resolve(self) -> None:
        """Convert pending CUDA events (the stream must have been synchronised)."""
        for name, start, end in self._pending:
            self._iter[name] = self._iter.get(name, 0.0) + start.elapsed_time(end) / 1e3
        self._pending.clear()

    def end_iteration(self) -> None:
        """Close one iteration: its per-stage sums become one sample per stage."""
        self.resolve()
        for k, v in self._iter.items():
            self._totals.setdefault(k, []).append(v)
        self._iter = {}

    def discard_iteration(self) -> None:
        self._pending.clear()
        self._iter = {}

    def reset(self) -> None:
        self._totals.clear()
        self.discard_iteration()

    def means(self) -> dict[str, float]:
        """Mean seconds per iteration for each stage, stages in pipeline order first."""
        order = [s for s in STAGES if s in self._totals] + [s for s in self._totals if s not in STAGES]
        return {k: float(np.mean(self._totals[k])) for k in order}


@dataclass
class Measurement:
    """One measured configuration: latencies of whole iterations and what each produced.

    ``frames`` and ``out_pixels`` are per iteration (a batch of 4 frames is 4 frames).
    """

    name: str
    stats: LatencyStats
    frames: int
    out_pixels: int
    stages_s: dict[str, float] = field(default_factory=dict)
    clock: str = "perf_counter"
    warmup: int = 0
    samples_s: list[float] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Frames per second from the mean latency."""
        return self.frames / self.stats.mean_s if self.stats.mean_s > 0 else math.inf

    @property
    def out_mpix_per_s(self) -> float:
        """Output megapixels per second from the mean latency."""
        return self.out_pixels / self.stats.mean_s / 1e6 if self.stats.mean_s > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, **self.stats.as_ms(), "fps": self.fps, "out_mpix_per_s": self.out_mpix_per_s,
            "frames": self.frames, "out_pixels": self.out_pixels, "clock": self.clock, "warmup": self.warmup,
            "stages_ms": {k: v * 1e3 for k, v in self.stages_s.items()},
        }


def measure(
    step: Callable[[StageTimer], Any],
    *,
    name: str,
    frames: int,
    out_pixels: int,
    warmup: int = 1,
    iters: int = 5,
    max_seconds: float | None = None,
    timer: StageTimer | None = None,
    sync: Callable[[], None] | None = None,
) -> Measurement:
    """Run ``step(timer)`` ``warmup`` times untimed, then ``iters`` times timed.

    ``step`` performs one iteration and may time its parts with ``timer.stage(name)``. ``sync``
    (e.g. ``torch.cuda.synchronize``) is called before each clock read so asynchronous work is
    counted. ``max_seconds`` stops the timed loop early (after at least one iteration) when the
    accumulated time exceeds it. Returns a :class:`Measurement`.
    """
    if iters < 1 or warmup < 0:
        raise ValueError(f"measure: need iters >= 1 and warmup >= 0, got {iters}, {warmup}")
    t = timer or StageTimer()
    for _ in range(warmup):
        step(t)
        if sync:
            sync()
        t.discard_iteration()
    samples: list[float] = []
    total = 0.0
    for i in range(iters):
        if sync:
            sync()
        t0 = time.perf_counter()
        step(t)
        if sync:
            sync()
        dt = time.perf_counter() - t0
        t.end_iteration()
        samples.append(dt)
        total += dt
        log.debug("%s: iteration %d: %.3f ms", name, i, dt * 1e3)
        if max_seconds is not None and total > max_seconds and i + 1 < iters:
            log.info("%s: stopped after %d of %d iterations (time limit %.1f s)", name, i + 1, iters, max_seconds)
            break
    return Measurement(name=name, stats=summarize(samples), frames=frames, out_pixels=out_pixels,
                       stages_s=t.means(), clock=t.clock, warmup=warmup, samples_s=samples)

"""``Upscaler``: a model (or engine) + the tiler + a backend, behind one call.

>>> with Upscaler("hanrt_x4.onnx", backend="ort-cpu") as up:      # doctest: +SKIP
...     big = up.upscale(photo)                                     # HxWx3 uint8 -> 4Hx4Wx3 uint8

Images: numpy arrays ``HxWx3`` (RGB), ``HxWx4`` (RGBA), ``HxW``/``HxWx1`` (grey) or ``HxWx2``
(grey + alpha), dtype ``uint8`` (0..255) or ``uint16`` (0..65535); the result has the same
channels and dtype, ``scale`` times larger. Grey goes through the model as replicated RGB and
comes back as BT.601 luma; alpha is upscaled separately (Pillow bicubic) and re-attached. With
a float-I/O model, 16-bit input keeps its precision (divided by 257 into the 0..255 float range);
a uint8-I/O graph reduces it to 8 bits on the way in.

Memory: the result buffer is allocated once (or is the caller's ``out``); tiles are converted
and written into it one batch at a time, so peak memory is the input, the output and a few
tiles -- never a full-size float copy (except the self-ensemble's one float32 sum, below).

**Self-ensemble** (``ensemble=N``, N in :data:`ENSEMBLES`; the papers' "+" results, e.g. HAN+):
the image is upscaled N times, as it is and mirrored/flipped/transposed
(:func:`hanrt.tiling.dihedral_view`), and the N results, each back in the original orientation, are
averaged before rounding. N times the compute for a little more fidelity (README, "Self-ensemble"
has the measured gain per N). Each pass is a job of its own in the tile stream, using every slot,
so on an asynchronous backend the passes overlap like frames; the N outputs are summed into one
float32 buffer of the result's size (written through views: no pass is copied or turned back). A
non-square image's transposed passes need transposed windows: their slots are made beside the
first orientation's and both are kept, so later passes and frames of that size reuse them (slots
are reused whenever a plan's windows are among those already made).

**Tiling** (``tile="auto"``, the default): on backends that take any shape (ONNX Runtime,
PyTorch) an image whose whole run fits :func:`hanrt.resources.whole_image_allowance` runs whole
(CPU backends: measured fastest where it fits, and exact); a larger one gets an exact grid of tiles
-- cores differing by at most a pixel, margins only towards neighbours, nothing padded -- at the
window size the backend's cost table (:data:`hanrt.tiling.CPU_TILE_COST`) predicts fastest within
its memory budget. A number is the largest tile side (the fewest grid tiles that fit it); ``0`` the whole image.
Engines with optimization profiles (TensorRT) tile within their shapes (:func:`plan_for_profiles`).

**Frames in flight**: :meth:`Upscaler.submit` queues an image and returns a handle at once;
:meth:`Upscaler.wait` returns its result. One worker thread per Upscaler runs the queued frames'
tiles through the slots without draining them between frames, so on an asynchronous backend (TensorRT
slots) frame k+1's copies and first tiles overlap frame k's last ones; :class:`~hanrt.pipeline.Pipeline`
uses this (``in_flight`` frames).

**Buffer ownership**: ``upscale`` never modifies ``image``; it returns ``out`` when given (written
in place) or a new array the caller owns (likewise ``submit``/``wait``; the image must stay unchanged
until ``wait`` returned). **Thread safety**: one ``Upscaler`` may be shared between threads; calls
are serialized by a lock (a backend runs one batch at a time). For parallel work open one
``Upscaler`` per thread (and per GPU).

**Stage timings** (``upscale(..., timings=d)``): the call adds the seconds (``time.perf_counter``,
host wall time) it spent in each stage of :data:`STAGES` to ``d``:

- ``prepare``: input checks, output allocation, channel split, tile plan, slot (re)allocation;
- ``gather``: cutting tiles out of the image into a slot's input buffer (dtype and layout
  conversion, reflect padding, filler tiles);
- ``compute``: host time inside the backend's ``submit`` and ``wait``. For synchronous backends
  (ONNX Runtime, PyTorch) that is the inference itself. For asynchronous ones (TensorRT slots)
  it is the time the host waited for the device: with two or more slots the device runs slot k
  while the host gathers and stitches the others, so device time hidden behind host work is not
  counted, and a small ``compute`` means the device is kept fed;
- ``stitch``: writing the cropped tile outputs into the result (clamping and rounding, grey's
  BT.601 luma and 16-bit scaling happen here, per tile);
- ``finish``: what follows the tiles (the alpha channel's bicubic upscale; 0 without alpha).

The stages do not overlap and lie inside the call, so their sum is at most its wall time; the
rest is waiting for the lock (a shared Upscaler), ``progress`` callbacks and interpreter
overhead. With ``timings=None`` (the default) no clock is read: the hot path is unchanged.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .backends import Backend, get_spec, open_backend, remote_backend
from .errors import InputError, ModelError, UsageError
from .model_info import DEFAULT_MARGIN, MarginSource, ModelInfo, describe_margin, resolve_margin
from .models import BUNDLED, bundled_dir, resolve_model
from .tiling import (CPU_TILE_COST, ENSEMBLES, TileCost, TilePlan, describe, dihedral_view, extract_tile,
                     grid_for_tile, legal_tile, place_tile, plan_auto, plan_grid, plan_tiles, store_mean)

__all__ = ["Upscaler", "UpscaleJob", "AUTO", "ENGINE_TILE", "ENSEMBLES", "plan_for_profiles", "default_model_path",
           "DEFAULT_TILE", "DEFAULT_MARGIN", "DEFAULT_MODEL", "STAGES", "resolve_margin", "describe_margin",
           "MarginSource"]

log = logging.getLogger(__name__)

#: Default tiling and margin. The margin is a measured property of each model: an explicit margin
#: (``Upscaler(margin=N)``, ``--margin N``) wins; else the margin recorded in the model's description
#: (:attr:`hanrt.model_info.ModelInfo.margin`, written by the benchmarks' ``tiling_study
#: --write-margin``, which states the rule); else :data:`DEFAULT_MARGIN` (:func:`resolve_margin`).
#: 8 is the safe default for a model nobody measured (e.g. full-size HAN: no trained weights here to
#: measure it with); the bundled models record their own (README, "Tiling"). Both live in
#: :mod:`hanrt.model_info` and are re-exported here.
DEFAULT_TILE = "auto"
#: ``tile="auto"``: on backends that take any shape, an exact grid at the backend's cheapest tile
#: size (:func:`hanrt.tiling.plan_auto`); on engines with optimization profiles, :data:`ENGINE_TILE`
#: clamped into the profiles (:func:`plan_for_profiles`).
AUTO = "auto"
ENGINE_TILE = 128
DEFAULT_MODEL = "hanrt_x4.onnx"

Progress = Callable[[int, int], None]


def __getattr__(name: str):
    """``plan_for_profiles`` is re-exported here (hanrt.upscaler's API) but imported on first use
    (PEP 562), so a CPU run does not import the TensorRT profile code at start-up."""
    if name == "plan_for_profiles":
        from .backends.tensorrt.profiles import plan_for_profiles

        return plan_for_profiles
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The stages ``Upscaler.upscale(..., timings=d)`` reports, in pipeline order (module docstring).
STAGES = ("prepare", "gather", "compute", "stitch", "finish")


class _Laps:
    """Adds the time since the previous mark to a stage of ``sink`` (seconds, ``perf_counter``).

    Stages are consecutive laps, so they never overlap; :meth:`skip` drops time that belongs
    to no stage (lock waits, progress callbacks)."""

    __slots__ = ("sink", "t")

    def __init__(self, sink: dict[str, float]) -> None:
        for name in STAGES:
            sink.setdefault(name, 0.0)
        self.sink = sink
        self.t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.sink[stage] += now - self.t
        self.t = now

    def skip(self) -> None:
        self.t = time.perf_counter()


def default_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of a bundled model (``hanrt/models/NAME``); ModelError if it is not installed."""
    p = bundled_dir() / name
    if not p.is_file():
        raise ModelError(
            f"the bundled default model {name} is not installed (looked for {str(p)!r}). Pass a model "
            f"explicitly (--model model.onnx / Upscaler('model.onnx')), or export one with: "
            f"hanrt export --checkpoint CKPT.pt --output {name}"
        )
    return p


class Upscaler:
    """Upscale images with a HAN model through a backend, in tiles (see the module docstring).

    ``model``: ``.onnx`` graph, ``.plan``/``.engine`` TensorRT engine or ``.pt`` checkpoint, or a
    bundled model's name (``photo``, ``document``: :mod:`hanrt.models`); ``None`` is ``photo``. Or an open :class:`~hanrt.backends.base.Backend` (not closed here).
    ``backend``: one of :data:`hanrt.backends.BACKENDS` (``auto``, ``ort-cpu``...).
    ``tile``: network input side in pixels, margin included (``None``/``0`` or at least the image:
    whole-image inference; with an engine it is clamped into the shapes the engine was built for,
    see :func:`plan_for_profiles`).
    ``margin``: context pixels cropped on every interior tile side; ``None`` (the default): the
    margin measured for this model and recorded in it (:attr:`ModelInfo.margin`), else
    :data:`DEFAULT_MARGIN` (:func:`resolve_margin`; :attr:`margin_source` says which was used).
    ``batch``: tiles per backend call. ``slots``: buffer sets in flight (async backends); with a
    TensorRT engine each is one execution context, all sharing the engine's profile for the tile.
    ``servers``: Triton servers (``HOST:PORT``, ``grpc://HOST:PORT``) for ``backend="triton"`` (implied
    by ``auto``); ``model`` is then the model's name on them (or a file whose stem is that name).
    ``ensemble``: passes per image (1, 2, 4 or 8), averaged: the self-ensemble (module docstring).
    """

    def __init__(
        self,
        model: str | os.PathLike | Backend | None = None,
        *,
        backend: str = "auto",
        tile: int | str | None = DEFAULT_TILE,
        margin: int | None = None,
        batch: int = 1,
        slots: int = 2,
        threads: int = 0,
        device_id: int = 0,
        fp16: bool = False,
        servers: Sequence[str] = (),
        ensemble: int = 1,
    ) -> None:
        if ensemble not in ENSEMBLES:
            raise UsageError(f"ensemble must be one of {', '.join(map(str, ENSEMBLES))} (passes per image), "
                             f"got {ensemble!r}.")
        remote = bool(servers) or (not isinstance(model, Backend) and backend != "auto" and get_spec(backend).remote)
        if servers and backend == "auto":
            backend = remote_backend().name
        if servers and not get_spec(backend).remote:
            raise UsageError(f"--server names servers; it goes with --backend {remote_backend().name}, not {backend}.")
        if isinstance(tile, str):
            if tile != AUTO:
                raise UsageError(f"tile must be a number of pixels, 0 (whole image) or {AUTO!r}, got {tile!r}.")
        elif tile is not None and tile < 0:
            raise UsageError(f"tile must be >= 0 (0: whole image), got {tile}.")
        if margin is not None and margin < 0:
            raise UsageError(f"margin must be >= 0, got {margin}.")
        if batch < 1 or slots < 1:
            raise UsageError(f"batch and slots must be >= 1, got batch {batch}, slots {slots}.")
        if isinstance(model, Backend):
            self._backend = model
            self._owns = False
            self.model_path: Path | None = None
        elif remote:  # the model is a name on the servers (a file's stem stands for it), not a local file
            self._backend = open_backend(DEFAULT_MODEL if model is None else model, backend,
                                         servers=tuple(servers))
            self._owns = True
            self.model_path = None
        else:
            path = resolve_model(model)
            if not path.exists():
                raise ModelError(f"model {str(path)!r} does not exist (nor is it a bundled model name: "
                                 f"{', '.join(BUNDLED)}).")
            self._backend = open_backend(path, backend, device_id=device_id, threads=threads,
                                         fp16=fp16, slots=slots)
            self._owns = True
            self.model_path = path
        self.tile: int | str | None = tile or None
        self.ensemble = ensemble
        self.margin, self.margin_source = resolve_margin(margin, self._backend.info)
        log.debug("tiling margin %s", describe_margin(self.margin, self.margin_source, self._backend.info.margin_note))
        if isinstance(tile, int) and tile and 2 * self.margin >= tile:  # asked or recorded margin alike
            if self._owns:
                self._backend.close()
            raise UsageError(f"margin {describe_margin(self.margin, self.margin_source, self._backend.info.margin_note)} leaves no "
                             f"core in a {tile}-pixel tile (need 2*margin < tile): use a larger --tile or a "
                             f"smaller --margin.")
        self.batch = batch if self._backend.max_batch is None else min(batch, self._backend.max_batch)
        if self._backend.info.max_batch:  # a graph right only for this many tiles per call (ModelInfo)
            self.batch = min(self.batch, self._backend.info.max_batch)
        # a remote backend asks for more batches in flight (two per Triton server) than a local one
        self.n_slots = max(slots, self._backend.min_slots)
        self._lock = threading.Lock()
        self._slots: list = []  # every slot made, flat (what release_slots gets)
        self._lanes: list[dict] = []  # per lane (slots in flight at once): window shape -> slot
        self._slot_shape: tuple | None = None
        # id() of the ensemble image the slots were last made for (an id, not the job: no output is
        # kept alive; a reused id merely keeps a few more slots)
        self._slot_image: int | None = None
        self._closed = False
        self._jobs: collections.deque[UpscaleJob] = collections.deque()
        self._jobs_cv = threading.Condition()
        self._worker: threading.Thread | None = None
        self.tile_cost: TileCost | None = self._backend.tile_cost

    # -- properties -------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        """The model's description (scale, I/O kind, precision...)."""
        return self._backend.info

    @property
    def scale(self) -> int:
        return int(self._backend.info.scale)

    @property
    def backend(self) -> Backend:
        return self._backend

    def __enter__(self) -> "Upscaler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish the submitted frames, then release the slots and (if this Upscaler opened it) the
        backend. Idempotent."""
        with self._jobs_cv:
            if self._closed:
                return
            self._closed = True
            worker = self._worker
            self._jobs_cv.notify_all()
        if worker is not None and worker is not threading.current_thread():
            worker.join()
        with self._lock:
            if self._slots:
                self._backend.release_slots(self._slots)
                self._slots, self._lanes = [], []
            if self._owns:
                self._backend.close()

    # -- planning ---------------------------------------------------------------------------
    def plan(self, height: int, width: int) -> TilePlan:
        """The tile plan this Upscaler uses for a ``height x width`` input."""
        return self._plan(height, width)[0]

    def _plan(self, height: int, width: int) -> tuple[TilePlan, int, int]:
        """``(plan, tiles per slot, smallest batch the backend accepts)`` for a ``height x width`` input."""
        info = self._backend.info
        tile = ENGINE_TILE if self.tile == AUTO else self.tile  # engines: clamped into their shapes
        planned = self._backend.plan_tiles(height, width, tile=tile, margin=self.margin, batch=self.batch)
        if planned is not None:  # fixed shapes (an engine's profiles): the backend plans
            return planned
        tile = self.tile
        if tile is not None and tile != AUTO and tile >= max(height, width):
            tile = None  # a tile at least as large as the image: whole-image inference
        if info.min_tile > 1 or info.tile_multiple > 1:  # shape rules: equal legal tiles, padded
            if tile == AUTO:
                tile = self._cost().best_side
            if tile:  # a tile breaking the rules is rounded up to them (hanrt.tiling.legal_tile)
                tile = legal_tile(tile, info.min_tile, info.tile_multiple)
            plan = plan_tiles(height, width, tile=tile, margin=self.margin, scale=info.scale,
                              min_tile=info.min_tile, tile_multiple=info.tile_multiple)
        elif tile is None:
            plan = plan_grid(height, width, rows=1, cols=1, margin=0, scale=info.scale)
        elif tile == AUTO:
            cost = self._cost()
            if self._whole_fits(height, width, cost):
                plan = plan_grid(height, width, rows=1, cols=1, margin=0, scale=info.scale)
            else:
                plan = plan_auto(height, width, margin=self.margin, scale=info.scale, cost=cost)
        else:  # an asked tile side: the fewest tiles of an exact grid whose windows fit it
            plan = plan_grid(height, width, rows=grid_for_tile(height, tile, self.margin),
                             cols=grid_for_tile(width, tile, self.margin), margin=self.margin, scale=info.scale)
        return plan, min(self.batch, plan.count), 1

    def _whole_fits(self, height: int, width: int, cost: TileCost) -> bool:
        """``tile="auto"`` with a host-memory cost table (the CPU's): run the image whole when the
        whole run's estimate fits :func:`hanrt.resources.whole_image_allowance` (the whole image was
        measured as fast as or faster than every tiling where it fits; README "Tiling")."""
        if not cost.memory_budget:
            return False
        from .resources import estimate_run_bytes, fmt_bytes, whole_image_allowance

        need = estimate_run_bytes(self._backend.info, height=height, width=width, channels=3, itemsize=1,
                                  tile_h=height, tile_w=width, batch=1)
        allowance = whole_image_allowance()
        fits = need <= allowance
        log.debug("tile auto, %dx%d: whole image needs ~%s, allowance %s -> %s", width, height, fmt_bytes(need),
                  fmt_bytes(allowance), "whole" if fits else "exact grid")
        return fits

    def _cost(self) -> TileCost:
        """The backend's measured tile cost table, or the CPU table (:data:`hanrt.tiling.CPU_TILE_COST`)."""
        return self.tile_cost or CPU_TILE_COST

    def output_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        s = self.scale
        return (image_shape[0] * s, image_shape[1] * s, *image_shape[2:])

    # -- work -------------------------------------------------------------------------------
    def upscale(self, image: np.ndarray, out: np.ndarray | None = None, *, progress: Progress | None = None,
                timings: dict[str, float] | None = None) -> np.ndarray:
        """Upscale ``image`` (see the module docstring for shapes and dtypes); return the result.

        ``out``: optional caller buffer of shape ``(H*s, W*s[, C])`` and the image's dtype, written
        in place and returned. ``progress(done_tiles, total_tiles)`` is called after each batch.
        ``timings``: a dict the call adds its seconds per stage to (every name of :data:`STAGES`
        is set, missing ones start at 0, existing values are added to, so one dict can sum many
        calls); see "Stage timings" in the module docstring. ``None``: nothing is timed.
        """
        laps = None if timings is None else _Laps(timings)
        img = self._check_image(image)
        job = self._new_job(img, out, progress, laps)
        if laps is not None:
            laps.lap("prepare")
        with self._lock:
            if laps is not None:
                laps.skip()  # waiting for another thread's call is no stage of this one
            if self._closed:
                raise UsageError("this Upscaler was closed.")
            todo = collections.deque(job.passes or (job,))
            self._stream(lambda: todo.popleft() if todo else None)
        if job.error is not None:
            raise job.error
        return job.out

    def _check_image(self, image: np.ndarray) -> np.ndarray:
        if not isinstance(image, np.ndarray):
            raise InputError(f"image must be a numpy array, got {type(image).__name__}.")
        if image.dtype not in (np.uint8, np.uint16):
            raise InputError(f"image dtype must be uint8 or uint16, got {image.dtype}.")
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)):
            raise InputError(f"image must be HxW or HxWxC with C in 1..4, got shape {image.shape}.")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise InputError(f"image is empty ({image.shape[0]}x{image.shape[1]} pixels).")
        if self.info.n_colors != 3:
            raise ModelError(f"the model has {self.info.n_colors} channels; hanrt upscales RGB models (3).")
        return image

    # -- frames in flight ------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Frames :class:`~hanrt.pipeline.Pipeline` keeps submitted (:meth:`submit`) before it waits
        for the oldest: enough for one frame's last tiles to overlap the next frame's first."""
        return max(2, self.n_slots)

    def submit(self, image: np.ndarray, out: np.ndarray | None = None) -> "UpscaleJob":
        """Queue ``image`` for upscaling and return at once; :meth:`wait` returns the result.

        Frames are processed in submission order by one worker thread of this Upscaler, through
        the same slots as :meth:`upscale`, *without draining the slots between frames*: on an
        asynchronous backend the first tiles of frame k+1 are gathered and submitted while the
        last tiles of frame k are still computing. ``image`` must not be modified until
        :meth:`wait` returned (it is read by the worker). Errors are raised by :meth:`wait`.
        """
        img = self._check_image(image)
        job = self._new_job(img, out, None, None)
        with self._jobs_cv:
            if self._closed:
                raise UsageError("this Upscaler was closed.")
            self._jobs.extend(job.passes or (job,))
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="hanrt-upscaler", daemon=True)
                self._worker.start()
            self._jobs_cv.notify()
        return job

    def wait(self, job: "UpscaleJob", timeout: float | None = None) -> np.ndarray:
        """Block until ``job`` (from :meth:`submit`) is done; return its result (owned by the caller)."""
        if not job.event.is_set():
            with self._jobs_cv:
                job.waited = True  # the worker collects its tiles now instead of waiting for more frames
                for p in job.passes:
                    p.waited = True
                self._jobs_cv.notify_all()
        if not job.event.wait(timeout):
            raise TimeoutError(f"upscaling a {job.image.shape[1]}x{job.image.shape[0]} image took more than {timeout} s.")
        if job.error is not None:
            raise job.error
        return job.out

    def _work(self) -> None:
        """The worker behind :meth:`submit`: takes queued jobs in order and keeps the slots busy."""
        while True:
            with self._jobs_cv:
                while not self._jobs and not self._closed:
                    self._jobs_cv.wait()
                if not self._jobs:  # closed and nothing left
                    self._worker = None
                    return
            with self._lock:
                self._stream(self._next_job, frames=True)

    def _await_collect(self, owner: "UpscaleJob") -> bool:
        """Block until a new frame is queued (False) or ``owner`` is waited for or the Upscaler
        closes (True: collect now)."""
        with self._jobs_cv:
            while not self._jobs and not owner.waited and not self._closed:
                self._jobs_cv.wait()
            return not self._jobs

    def _next_job(self) -> "UpscaleJob | None":
        with self._jobs_cv:
            return self._jobs.popleft() if self._jobs else None

    # -- the tile stream ------------------------------------------------------------------------
    def _new_job(self, img: np.ndarray, out: np.ndarray | None, progress: Progress | None,
                 laps: _Laps | None) -> "UpscaleJob":
        shape = self.output_shape(img.shape)
        if out is None:
            out = np.empty(shape, dtype=img.dtype)
        elif not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != img.dtype:
            got = (getattr(out, "shape", None), getattr(out, "dtype", None))
            raise UsageError(f"out must be a {shape} {img.dtype} array, got {got}.")
        c = img.shape[2] if img.ndim == 3 else 1
        alpha = None
        if c in (2, 4):
            color, alpha = img[..., :c - 1], img[..., c - 1]
            if c == 2:
                color = color[..., 0]
            out_color = out[..., :c - 1] if c == 4 else out[..., 0]
        else:
            color = img[..., 0] if (img.ndim == 3 and c == 1) else img
            out_color = out[..., 0] if (img.ndim == 3 and c == 1) else out
        job = UpscaleJob(img, out, color, out_color, alpha, progress, laps)
        n = self.ensemble
        if n > 1:  # one pass per view, each adding into one float32 sum in the original orientation
            job.total = np.zeros(out_color.shape, dtype=np.float32)
            job.left = n
            job.passes = [UpscaleJob(img, out, dihedral_view(color, k), dihedral_view(job.total, k), None,
                                     None if progress is None else _pass_progress(progress, k, n), laps, parent=job)
                          for k in range(n)]
        return job

    def _stream(self, next_job: Callable[[], "UpscaleJob | None"], *, frames: bool = False) -> None:
        """Run jobs' tiles through the slots, round robin, until ``next_job()`` returns None; a job
        is finished (stitched, alpha re-attached, ``done`` set) as soon as its last tile is back.
        Slots are drained only when no job is left, so consecutive frames overlap. ``frames``: more
        jobs may follow (:meth:`submit`), so every slot is used even when a frame has fewer batches."""
        be = self._backend
        layout = be.info.layout
        lanes: list = []
        pending: list = []  # per lane: (job, group) in flight, or None
        k = 0
        job = next_job()
        try:
            while job is not None:
                laps = job.laps
                try:
                    img = job.color
                    if img.ndim == 3 and img.shape[2] != be.info.n_colors:
                        raise InputError(f"image has {img.shape[2]} colour channels; the model takes {be.info.n_colors}.")
                    plan, batch, min_batch = self._plan(img.shape[0], img.shape[1])
                    log.debug("tiles: %s", describe(plan))
                    groups = list(plan.batches(batch))
                    # a self-ensemble's passes follow one another like frames: every slot is used
                    n_lanes = (self.n_slots if frames or job.parent is not None
                               else min(self.n_slots, len(groups)))
                    cur = self._slot_shape
                    same = cur is not None and cur[:2] == (n_lanes, batch)
                    if not (same and set(plan.shapes) <= set(cur[2])):  # the slots made do not fit
                        shapes = plan.shapes
                        if same and job.parent is not None and id(job.parent) == self._slot_image:
                            # the transposed passes of a non-square image: keep both orientations'
                            # slots, so the image's next passes and a stream's next frames reuse them
                            shapes = tuple(dict.fromkeys(cur[2] + shapes))
                        self._drain(lanes, pending)  # earlier frames' tiles come back first
                        self._make_lanes(n_lanes, batch, shapes)
                        self._slot_shape = (n_lanes, batch, shapes)
                        self._slot_image = id(job.parent) if job.parent is not None else None
                        k = 0
                    lanes = self._lanes
                    if len(pending) != len(lanes):
                        pending = [None] * len(lanes)
                    job.plan, job.remaining = plan, plan.count
                except BaseException as exc:  # noqa: BLE001 - this job fails, the stream goes on
                    self._fail_job(job, exc)
                    if not isinstance(exc, Exception):
                        raise
                    job = next_job()
                    continue
                if laps is not None:
                    laps.lap("prepare")
                for group in groups:
                    lane = lanes[k]
                    if pending[k] is not None:
                        self._collect(lane, pending[k], layout)
                        pending[k] = None
                    if job.error is not None:
                        break
                    shape = plan.window(group[0])
                    slot = lane[shape]
                    try:
                        for i, t in enumerate(group):
                            extract_tile(img, plan, t, slot.input[i], layout=layout)
                        n = max(len(group), min_batch)  # an engine profile may refuse a short last batch
                        if n > len(group):
                            slot.input[len(group):n] = 0  # filler tiles; their outputs are ignored
                        if laps is not None:
                            laps.lap("gather")
                        be.submit(slot, n)
                        if laps is not None:
                            laps.lap("compute")
                    except Exception as exc:  # noqa: BLE001 - this job fails, the stream goes on
                        self._fail_job(job, exc)
                        self._settle(lane, slot)
                        break
                    pending[k] = (job, group, slot)
                    k = (k + 1) % len(lanes)
                job = next_job()
                while job is None and any(p is not None for p in pending):
                    # nothing queued: bring back the oldest batch in flight once its frame is
                    # waited for (which lets the caller submit the next one); until then a new
                    # frame may still arrive and be fed to the device behind it
                    i = next(j % len(lanes) for j in range(k, k + len(lanes)) if pending[j % len(lanes)] is not None)
                    if frames and not self._await_collect(pending[i][0]):
                        job = next_job()
                        continue
                    item, pending[i] = pending[i], None
                    self._collect(lanes[i], item, layout)
                    job = next_job()
                if job is not None and job.laps is not None:
                    job.laps.skip()
        except BaseException as exc:  # noqa: BLE001 - interrupts: leave no slot pending, fail its jobs
            for i, item in enumerate(pending):
                if item is not None:
                    self._settle(lanes[i], item[2])
                    self._fail_job(item[0], exc)
            raise

    def _make_lanes(self, n_lanes: int, batch: int, shapes: tuple[tuple[int, int], ...]) -> None:
        """(Re)allocate the slots: ``n_lanes`` lanes, each with one slot per window shape."""
        be = self._backend
        if self._slots:
            be.release_slots(self._slots)
            self._slots, self._lanes = [], []
        self._slot_shape = None
        per_shape = [be.make_slots(n_lanes, batch, h, w) for h, w in shapes]
        n = min(len(v) for v in per_shape)  # a TensorRT engine may give fewer (see its warning)
        for extra in per_shape:
            if len(extra) > n:
                be.release_slots(extra[n:])
        self._lanes = [{shape: per_shape[j][i] for j, shape in enumerate(shapes)} for i in range(n)]
        self._slots = [lane[shape] for lane in self._lanes for shape in shapes]

    def _drain(self, lanes: list, pending: list) -> None:
        for i, item in enumerate(pending):
            if item is not None:
                pending[i] = None
                self._collect(lanes[i], item, self._backend.info.layout)

    def _settle(self, lane: dict, slot) -> None:
        """After an error: wait for ``slot`` if it is still pending, discarding its result."""
        if slot.pending:
            try:
                self._backend.wait(slot)
            except Exception:  # the original error matters more; this slot's result is dropped
                log.debug("discarding a slot after an error")

    def _collect(self, lane: dict, item: tuple, layout: str) -> None:
        job, group, slot = item
        laps = job.laps
        if laps is not None:
            laps.skip()  # time since the job's last mark belongs to another job's work
        try:
            result = self._backend.wait(slot)
        except Exception as exc:  # noqa: BLE001 - its job fails; others go on
            self._fail_job(job, exc)
            return
        if job.error is not None:
            return
        if laps is not None:
            laps.lap("compute")
        try:
            accumulate = job.parent is not None
            for i, t in enumerate(group):
                place_tile(result[i], job.plan, t, job.out_color, layout=layout, accumulate=accumulate)
        except Exception as exc:  # noqa: BLE001
            self._fail_job(job, exc)
            return
        if laps is not None:
            laps.lap("stitch")
        job.remaining -= len(group)
        if job.progress:
            job.progress(job.plan.count - job.remaining, job.plan.count)
            if laps is not None:
                laps.skip()
        if job.remaining == 0:
            self._finish(job)

    def _finish(self, job: "UpscaleJob") -> None:
        parent = job.parent
        if parent is not None:  # one self-ensemble pass: the image is done with its last pass
            job.event.set()
            parent.left -= 1
            if parent.left or parent.error is not None:
                return
            job = parent
            try:
                store_mean(job.total, len(job.passes), job.out_color)
            except Exception as exc:  # noqa: BLE001
                self._fail_job(job, exc)
                return
            # no pass is in flight any more: dropping them (and their views of the sum) breaks the
            # image-pass reference cycle, so the sum is freed now, not at the next garbage collection
            job.total, job.passes = None, []
        try:
            if job.alpha is not None:
                c = job.image.shape[2]
                job.out[..., c - 1] = _resize_channel(job.alpha, self.scale)
            if job.laps is not None:
                job.laps.lap("finish")
        except Exception as exc:  # noqa: BLE001
            self._fail_job(job, exc)
            return
        job.event.set()

    @staticmethod
    def _fail_job(job: "UpscaleJob", exc: BaseException) -> None:
        if job.parent is not None:  # a failed pass fails its image, and the other passes stop early
            job = job.parent
            for p in job.passes:
                if p.error is None:
                    p.error = exc
                p.event.set()
            job.total, job.passes = None, []  # as in _finish: no cycle left for the collector
        if job.error is None:
            job.error = exc
        job.event.set()


class UpscaleJob:
    """A frame handed to :meth:`Upscaler.submit`; pass it to :meth:`Upscaler.wait`."""

    __slots__ = ("image", "out", "color", "out_color", "alpha", "progress", "laps", "plan", "remaining",
                 "event", "error", "waited", "parent", "passes", "total", "left")

    def __init__(self, image: np.ndarray, out: np.ndarray, color: np.ndarray, out_color: np.ndarray,
                 alpha: np.ndarray | None, progress: Progress | None, laps: _Laps | None, *,
                 parent: "UpscaleJob | None" = None) -> None:
        self.image, self.out, self.color, self.out_color, self.alpha = image, out, color, out_color, alpha
        # self-ensemble: a pass knows its image (``parent``); the image its passes, their float32
        # sum and how many are still running (``Upscaler._new_job``)
        self.parent = parent
        self.passes: list[UpscaleJob] = []
        self.total: np.ndarray | None = None
        self.left = 0
        self.progress, self.laps = progress, laps
        self.plan: TilePlan | None = None
        self.remaining = -1
        self.event = threading.Event()
        self.error: BaseException | None = None
        self.waited = False

    def done(self) -> bool:
        """True once the frame is upscaled (or failed); :meth:`Upscaler.wait` then returns at once."""
        return self.event.is_set()


def _pass_progress(progress: Progress, k: int, n: int) -> Progress:
    """Pass ``k`` of ``n``'s progress as the whole image's: its tiles come after the earlier passes'."""
    return lambda done, total: progress(k * total + done, n * total)


def _resize_channel(channel: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic-upscale one ``HxW`` uint8/uint16 channel by ``scale`` with Pillow."""
    from PIL import Image

    h, w = channel.shape
    im = Image.fromarray(np.ascontiguousarray(channel))
    return np.asarray(im.resize((w * scale, h * scale), Image.BICUBIC))

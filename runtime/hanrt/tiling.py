"""Tile planning, splitting and stitching: pure functions plus a frozen plan.

Why tiles at all: memory. A backend sees fixed-shape tiles (TensorRT engines are built for
them), never the whole picture, so memory is bounded by the tile size plus the output image.

Vocabulary (all sizes in **input** pixels unless said otherwise):

- ``tile`` (T): the side of the network input, context margin included. Every tile of one plan
  has the same shape ``(tile_h, tile_w)``, so tiles batch.
- ``margin`` (m): context on every interior side of a tile. It is run through the network and
  then cropped away; only the tile's *core* is written to the output. Windows are spread evenly,
  so neighbouring windows overlap by at least ``2m`` and every seam lies at least ``m`` pixels
  inside both windows. The compute overhead is about ``(T / (T - 2m))**2``.
- Windows never leave the image when the image is at least one tile large: a tile at the image
  border takes more image instead of padding (so borders see what whole-image inference sees:
  the network's own zero padding). Only an image *smaller* than a tile is padded, by reflection
  (``numpy.pad`` mode ``"reflect"``; edge replication for a 1-pixel side), to the full tile shape.
- A tile at least as large as the image (or ``tile=None``/``0``) means whole-image inference: one
  tile of the image's own shape (rounded up to the model's ``min_tile``/``tile_multiple``), unless
  the backend needs a fixed shape (``fixed=True``), in which case that shape is padded.

HAN has global operations (channel attention pools over each tile; layer attention correlates
whole feature maps), so tiled output differs slightly from whole-image output; the default tile
and margin are chosen by measurement (the benchmarks' ``tiling_study``).

Pixel conventions: images are ``HxW`` (grey) or ``HxWxC`` numpy arrays, ``uint8`` (0..255) or
``uint16`` (0..65535). Network tiles are float32 **NCHW** with values 0..255 (uint16 is divided by
257) or uint8 **NHWC** 0..255, as the model's :class:`~hanrt.model_info.ModelInfo` says.
:func:`extract_tile` and :func:`place_tile` write into caller-provided buffers and keep no state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .errors import InputError, UsageError

__all__ = [
    "Tile",
    "TilePlan",
    "plan_tiles",
    "axis_windows",
    "overhead",
    "extract_tile",
    "place_tile",
    "tile_input_shape",
    "tile_output_shape",
    "LUMA_WEIGHTS",
    "ENSEMBLES",
    "dihedral_view",
    "store_mean",
    "describe",
    "legal_tile",
    "grid_axis",
    "plan_grid",
    "TileCost",
    "choose_grid",
    "plan_auto",
    "grid_for_tile",
    "CPU_TILE_COST",
    "GPU_TILE_COST",
]

#: ITU-R BT.601 luma weights (Pillow's ``convert("L")``): grey output from the model's RGB output.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

#: Self-ensemble sizes (``Upscaler(ensemble=N)``, ``--ensemble N``): the first N of the 8 flips and
#: transposes of :func:`dihedral_view` -- 1: the image as it is; 2: + mirrored left-right; 4: + the
#: vertical flips; 8: + the transposed four (every rotation and reflection).
ENSEMBLES = (1, 2, 4, 8)


@dataclass(frozen=True)
class Tile:
    """One tile. ``wy, wx``: top-left of its window in the input (the window may run past the
    image only when the image is smaller than a tile; that part is reflect-padded).
    ``y0:y1, x0:x1``: its core, the input region whose upscaled pixels it writes. ``wh, ww``: its
    window's own size in an exact grid (:func:`plan_grid`); 0 means the plan's ``tile_h x tile_w``."""

    index: int
    wy: int
    wx: int
    y0: int
    y1: int
    x0: int
    x1: int
    wh: int = 0
    ww: int = 0


@dataclass(frozen=True)
class TilePlan:
    """How to cover a ``height x width`` input with equal ``tile_h x tile_w`` tiles.

    The cores of :attr:`tiles` partition the image exactly (every input pixel is written once).
    """

    height: int
    width: int
    tile_h: int
    tile_w: int
    margin: int
    scale: int
    tiles: tuple[Tile, ...]

    @property
    def count(self) -> int:
        return len(self.tiles)

    def window(self, tile: Tile) -> tuple[int, int]:
        """``(h, w)`` of ``tile``'s network input."""
        return (tile.wh or self.tile_h, tile.ww or self.tile_w)

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        """The distinct window shapes of the plan, in order of first appearance."""
        return tuple(dict.fromkeys(self.window(t) for t in self.tiles))

    @property
    def whole_image(self) -> bool:
        """True when one tile covers the whole image."""
        return len(self.tiles) == 1

    @property
    def overhead(self) -> float:
        """Computed input pixels / image pixels (>= 1; padding and overlap included)."""
        px = sum(h * w for h, w in (self.window(t) for t in self.tiles))
        return px / float(self.height * self.width)

    def batches(self, batch: int) -> Iterator[tuple[Tile, ...]]:
        """Yield the tiles in groups of at most ``batch`` tiles of one window shape (a group is
        shorter when its shape runs out; shapes come in order of first appearance)."""
        if batch < 1:
            raise UsageError(f"batch must be >= 1, got {batch}.")
        if len(self.shapes) == 1:
            for i in range(0, len(self.tiles), batch):
                yield self.tiles[i:i + batch]
            return
        for shape in self.shapes:
            same = [t for t in self.tiles if self.window(t) == shape]
            for i in range(0, len(same), batch):
                yield tuple(same[i:i + batch])


def overhead(tile: int, margin: int) -> float:
    """Nominal compute overhead of a margin: ``(T / (T - 2m))**2`` (inf when ``2m >= T``)."""
    core = tile - 2 * margin
    return math.inf if core <= 0 else (tile / core) ** 2


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


# --- the model's shape rules (ModelInfo.min_tile / tile_multiple) --------------------------------
def legal_tile(n: int, min_tile: int = 1, tile_multiple: int = 1) -> int:
    """The smallest side >= ``n`` that a model with these rules accepts: at least ``min_tile`` and a
    multiple of ``tile_multiple`` (e.g. SwinIR-style models with a window multiple). A requested tile
    is rounded up by this; images smaller than the result are padded by the plan (reflection)."""
    if n < 1:
        raise UsageError(f"tile must be >= 1, got {n}.")
    return max(int(min_tile), _round_up(int(n), int(tile_multiple)))


def axis_windows(length: int, tile: int, margin: int) -> list[tuple[int, int, int]]:
    """Cover ``0..length`` along one axis with windows of size ``tile``.

    Returns ``(window_start, core_start, core_end)`` triples. When ``length <= tile`` there is one
    window at 0 (the caller pads it to ``tile``). Otherwise window starts are spread evenly over
    ``0..length-tile`` with steps of at most ``tile - 2*margin``; the seam between two windows is
    the middle of their overlap, so it lies at least ``margin`` pixels inside both.
    """
    if length < 1:
        raise InputError(f"cannot tile an empty axis (length {length}).")
    if tile < 1:
        raise UsageError(f"tile must be >= 1, got {tile}.")
    if length <= tile:
        return [(0, 0, length)]
    core = tile - 2 * margin
    if core < 1:
        raise UsageError(
            f"margin {margin} leaves no core in a {tile}-pixel tile (need 2*margin < tile): "
            f"use a smaller --margin or a larger --tile."
        )
    n = 1 + -(-(length - tile) // core)
    span = length - tile
    starts = [round(i * span / (n - 1)) for i in range(n)]
    seams = [(starts[i + 1] + starts[i] + tile) // 2 for i in range(n - 1)]
    bounds = [0, *seams, length]
    return [(starts[i], bounds[i], bounds[i + 1]) for i in range(n)]


def plan_tiles(
    height: int,
    width: int,
    *,
    tile: int | tuple[int, int] | None,
    margin: int,
    scale: int,
    fixed: bool = False,
    min_tile: int = 1,
    tile_multiple: int = 1,
) -> TilePlan:
    """Plan tiles for a ``height x width`` input (input pixels).

    ``tile``: the network input side T (an int, or ``(tile_h, tile_w)``), margin included; ``None``
    or ``0`` means whole-image inference. ``fixed=True``: the backend accepts only this tile shape
    (an engine), so an image smaller than a tile is padded up to it instead of running at its own
    size. ``min_tile``/``tile_multiple``: the model's shape rules (:class:`ModelInfo`); a tile that
    breaks them is refused, and a whole-image tile is rounded up to them (and padded).
    """
    if height < 1 or width < 1:
        raise InputError(f"cannot upscale an empty image ({height}x{width} pixels).")
    if margin < 0:
        raise UsageError(f"margin must be >= 0, got {margin}.")
    if scale < 1:
        raise UsageError(f"scale must be >= 1, got {scale}.")
    if tile is None or tile == 0:
        if fixed:
            raise UsageError("this backend runs fixed tile shapes: whole-image inference needs a tile size.")
        th, tw = height, width
    elif isinstance(tile, int):
        th = tw = tile
    else:
        th, tw = int(tile[0]), int(tile[1])
    if th < 1 or tw < 1:
        raise UsageError(f"tile must be >= 1, got {th}x{tw}.")
    if fixed:
        for side in (th, tw):
            if side < min_tile or side % tile_multiple:
                raise UsageError(
                    f"tile {th}x{tw} breaks the model's shape rules (sides >= {min_tile} and "
                    f"multiples of {tile_multiple})."
                )
    else:
        # A dynamic backend runs a smaller image at its own size (rounded to the model's rules).
        legal = lambda n: max(min_tile, _round_up(n, tile_multiple))  # noqa: E731
        th = min(legal(th), legal(height)) if th >= height else th
        tw = min(legal(tw), legal(width)) if tw >= width else tw
        for side in (th, tw):
            if side < min_tile or side % tile_multiple:
                raise UsageError(
                    f"tile {th}x{tw} breaks the model's shape rules (sides >= {min_tile} and "
                    f"multiples of {tile_multiple}); pick a tile that meets them."
                )
    rows = axis_windows(height, th, margin)
    cols = axis_windows(width, tw, margin)
    tiles = []
    for wy, y0, y1 in rows:
        for wx, x0, x1 in cols:
            tiles.append(Tile(len(tiles), wy, wx, y0, y1, x0, x1))
    return TilePlan(height, width, th, tw, margin if len(tiles) > 1 else 0, scale, tuple(tiles))


# --- exact grids for backends with dynamic shapes -------------------------------------------

def grid_axis(length: int, n: int, margin: int) -> list[tuple[int, int, int, int]]:
    """Split ``0..length`` into ``n`` cores whose sizes differ by at most one pixel, each with a
    window that adds ``margin`` pixels only towards a neighbour (clipped to the image).

    Returns ``(window_start, window_size, core_start, core_end)`` per core, in order.
    """
    if length < 1:
        raise InputError(f"cannot tile an empty axis (length {length}).")
    if not 1 <= n <= length:
        raise UsageError(f"cannot split {length} pixels into {n} tiles.")
    out = []
    for i in range(n):
        c0, c1 = i * length // n, (i + 1) * length // n
        w0 = max(0, c0 - margin) if i > 0 else 0
        w1 = min(length, c1 + margin) if i < n - 1 else length
        out.append((w0, w1 - w0, c0, c1))
    return out


def plan_grid(height: int, width: int, *, rows: int, cols: int, margin: int, scale: int) -> TilePlan:
    """An exact grid of ``rows x cols`` tiles over a ``height x width`` input, for backends that take
    any shape: cores partition the image (sizes differing by at most a pixel per axis), windows
    add ``margin`` only where a neighbour is, nothing is padded, no pixel is computed twice except
    the margins. ``tile_h x tile_w`` is the largest window (the buffer size a batch needs)."""
    if height < 1 or width < 1:
        raise InputError(f"cannot upscale an empty image ({height}x{width} pixels).")
    if margin < 0:
        raise UsageError(f"margin must be >= 0, got {margin}.")
    ys, xs = grid_axis(height, rows, margin), grid_axis(width, cols, margin)
    tiles = []
    for wy, wh, y0, y1 in ys:
        for wx, ww, x0, x1 in xs:
            tiles.append(Tile(len(tiles), wy, wx, y0, y1, x0, x1, wh, ww))
    th, tw = max(t[1] for t in ys), max(t[1] for t in xs)
    return TilePlan(height, width, th, tw, margin if len(tiles) > 1 else 0, scale, tuple(tiles))


@dataclass(frozen=True)
class TileCost:
    """A backend's measured time per tile, as microseconds per input pixel at a few tile areas, and
    its memory budget.

    ``points``: ``(side, us_per_pixel)`` of square tiles, sides ascending (interpolated linearly in
    log(area) between them, held constant outside). ``max_pixels``: the largest window (input
    pixels) allowed whatever the image's size. ``bytes_per_pixel`` and ``memory_budget`` (optional):
    the backend's working memory per window input pixel and a budget in bytes for the windows' working
    memory plus the input and output images together; a window may then be as large as what the budget
    leaves after the images (never smaller than ``max_pixels``), so small images get large windows
    (or run whole) and large ones stay within the budget (:meth:`window_pixels`).
    ``source``: how the figures were obtained (for logs). Only ratios matter to the planner, so a
    table measured on one CPU serves others of its class.
    """

    points: tuple[tuple[int, float], ...]
    max_pixels: int
    source: str = ""
    bytes_per_pixel: float = 0.0
    memory_budget: int = 0

    def window_pixels(self, height: int, width: int, scale: int = 4, image_bytes_per_pixel: int = 3) -> int:
        """The largest window (input pixels) for a ``height x width`` input upscaled ``scale`` times
        whose pixels take ``image_bytes_per_pixel`` bytes (3: 8-bit RGB): what the memory budget
        leaves after the input and output images, divided by the working memory per window pixel,
        and at least :attr:`max_pixels`. Pure."""
        if not (self.memory_budget and self.bytes_per_pixel):
            return self.max_pixels
        images = height * width * (1 + scale * scale) * image_bytes_per_pixel
        return max(self.max_pixels, int((self.memory_budget - images) / self.bytes_per_pixel))

    def us_per_pixel(self, pixels: int) -> float:
        pts = self.points
        a = math.log(max(pixels, 1))
        if a <= 2 * math.log(pts[0][0]):
            return pts[0][1]
        for (s0, c0), (s1, c1) in zip(pts, pts[1:]):
            a1 = 2 * math.log(s1)
            if a <= a1:
                a0 = 2 * math.log(s0)
                return c0 + (c1 - c0) * (a - a0) / (a1 - a0)
        return pts[-1][1]

    def tile_us(self, h: int, w: int) -> float:
        """Predicted microseconds for one ``h x w`` window."""
        return h * w * self.us_per_pixel(h * w)

    @property
    def best_side(self) -> int:
        """The measured side with the lowest time per pixel."""
        return min(self.points, key=lambda p: p[1])[0]


#: ONNX Runtime's CPU provider running the bundled HAN (2x8x32) with hanrt's session options
#: (2 threads, no spinning, arena on, memory patterns off), 2-core AMD EPYC. **Time per pixel: flat.**
#: Single tiles in a loop (the benchmarks' ``tile_cost --sides 64 96 128 160 192 256 320 384 512
#: --repeats 7``) on a quiet machine put 64-96 first, 160 and up 1.07-1.18x dearer per pixel (README
#: "Tiling"); but planned with that curve, the Upscaler ran 2-4% *slower* than with a flat table in a
#: quiet interleaved A/B (5 repeats each: 256x256 0.373 vs 0.363 s, 512x384 1.131 vs 1.089 s,
#: 1000x750 4.417 vs 4.299 s; a 3-repeat run at 1000x750 had it the other way, 4.154 vs 4.292 s, and
#: under load the curve won by 5-7%): whole frames of small windows do not keep the single-tile
#: loop's advantage. With a flat table the planner computes the fewest pixels -- the largest windows
#: the memory allows -- which is what the measurements reward within their noise. (The Upscaler runs
#: images that fit its whole-image allowance whole, :func:`hanrt.resources.whole_image_allowance`:
#: fastest of all where it fits.) **Memory:** ORT's working memory grows with the window, 8.4-8.8 kB
#: per input pixel at 128, 256 and 512 (137, 535 and 2122 MiB; 7.0 kB at 160-384; ``--rss``);
#: ``bytes_per_pixel`` is 8800. ``memory_budget``: the windows plus the 8-bit RGB input and output
#: images; 316 MB leaves a 2000x1500 input (output 144 MB) windows of 136x136 pixels (``max_pixels``,
#: the floor; measured: peak RSS = output + 294 MB), a 1000x750 input windows up to ~32,000 pixels.
CPU_TILE_COST = TileCost(points=((64, 5.0), (512, 5.0)), max_pixels=136 * 136, bytes_per_pixel=8800.0,
                         memory_budget=316_000_000,
                         source="measured: ort-cpu, bundled model, 2 threads, no spinning; flat within noise "
                                "(Upscaler A/B, quiet machine)")

#: GPU providers (ONNX Runtime CUDA, PyTorch CUDA): **not measured** (no GPU on the development
#: machine). Per-pixel time falls with the tile until the GPU is full, so large tiles are preferred.
GPU_TILE_COST = TileCost(points=((64, 8.0), (128, 3.0), (256, 1.5), (512, 1.0)), max_pixels=1024 * 1024,
                         source="assumed (unmeasured): GPUs prefer large tiles")


def _axis_options(length: int, margin: int, lo: int, hi: int) -> dict[int, list[tuple[int, int]]]:
    """Tile counts n along an axis whose largest window is at most ``hi`` pixels, from the
    fewest tiles down to windows of about ``lo`` pixels: ``{n: [(window size, count), ...]}``."""
    opts: dict[int, list[tuple[int, int]]] = {}
    for n in range(1, length + 1):
        sizes: dict[int, int] = {}
        for _, w, _, _ in grid_axis(length, n, margin):
            sizes[w] = sizes.get(w, 0) + 1
        if max(sizes) <= hi:
            opts[n] = sorted(sizes.items())
            if max(sizes) < lo or length // n <= max(margin, 1):
                break
    return opts


def choose_grid(height: int, width: int, *, margin: int, cost: TileCost, max_side: int | None = None,
                scale: int = 4) -> tuple[int, int]:
    """``(rows, cols)`` of the exact grid (:func:`plan_grid`) with the lowest predicted time under
    ``cost``, whose windows hold at most ``cost.window_pixels(height, width, scale)`` pixels (and
    ``max_side`` per side). Ties (equal predicted time) go to the fewer tiles.

    Candidates per axis: the whole axis (when it fits), and grids whose windows lie between half
    the backend's best side and the largest side allowed. Pure; microseconds of work.
    """
    budget = cost.window_pixels(height, width, scale)
    limit = max_side or max(height, width, 1)
    hi = min(limit, budget)
    lo = max(8, min(cost.best_side // 2, limit))
    ys = _axis_options(height, margin, lo, hi)
    xs = _axis_options(width, margin, lo, hi)
    if not ys or not xs:
        raise UsageError(f"margin {margin} leaves no core in windows of at most {hi} pixels "
                         f"({budget} pixels allowed): use a smaller --margin.")
    best: tuple[float, int, int] | None = None
    for ny, yv in ys.items():
        hmax = max(h for h, _ in yv)
        for nx, xv in xs.items():
            if hmax * max(w for w, _ in xv) > budget:
                continue
            t = sum(cy * cx * cost.tile_us(h, w) for h, cy in yv for w, cx in xv)
            if best is None or (t, ny * nx) < (best[0], best[1] * best[2]):
                best = (t, ny, nx)
    if best is None:  # nothing fits the budget: the smallest windows considered
        return max(ys), max(xs)
    return best[1], best[2]


def grid_for_tile(length: int, tile: int, margin: int) -> int:
    """The fewest tiles along an axis whose windows (margins included) are at most ``tile``."""
    if length <= tile:
        return 1
    if 2 * margin >= tile:
        raise UsageError(f"margin {margin} leaves no core in a {tile}-pixel tile (need 2*margin < tile): "
                         f"use a smaller --margin or a larger --tile.")
    n = max(2, -(-(length - 2 * margin) // (tile - 2 * margin)))
    while max(w for _, w, _, _ in grid_axis(length, n, margin)) > tile:
        n += 1
    return n


def plan_auto(height: int, width: int, *, margin: int, scale: int, cost: TileCost,
              max_side: int | None = None) -> TilePlan:
    """The exact grid :func:`choose_grid` picks, planned (:func:`plan_grid`)."""
    rows, cols = choose_grid(height, width, margin=margin, cost=cost, max_side=max_side, scale=scale)
    return plan_grid(height, width, rows=rows, cols=cols, margin=margin, scale=scale)


def tile_input_shape(plan: TilePlan, batch: int, channels: int, layout: str) -> tuple[int, ...]:
    """Shape of an input batch: ``(B, C, th, tw)`` for NCHW, ``(B, th, tw, C)`` for NHWC."""
    if layout == "NCHW":
        return (batch, channels, plan.tile_h, plan.tile_w)
    return (batch, plan.tile_h, plan.tile_w, channels)


def tile_output_shape(plan: TilePlan, batch: int, channels: int, layout: str) -> tuple[int, ...]:
    """Shape of an output batch (tile shape times the scale)."""
    s = plan.scale
    if layout == "NCHW":
        return (batch, channels, plan.tile_h * s, plan.tile_w * s)
    return (batch, plan.tile_h * s, plan.tile_w * s, channels)


def _reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Map indices in ``[0, inf)`` into ``[0, n)`` by reflection without edge repeat (numpy's
    ``"reflect"``); edge replication when ``n == 1``."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    j = idx % period
    return np.where(j >= n, period - j, j)


def extract_tile(image: np.ndarray, plan: TilePlan, tile: Tile, out: np.ndarray, *, layout: str) -> None:
    """Copy ``tile``'s window of ``image`` into ``out`` (one batch item), converting on the way.

    ``image``: ``HxW`` or ``HxWxC`` uint8/uint16 (C = the model's channels; a grey image is
    replicated to every channel). ``out``: float32 ``(C, th, tw)`` for ``layout="NCHW"`` (values
    0..255; uint16 is divided by 257) or uint8 ``(th, tw, C)`` for ``"NHWC"`` (uint16 is rounded to
    8 bits). The caller owns ``out``; nothing else is written.
    """
    th, tw = plan.window(tile)
    h, w = image.shape[:2]
    y_end, x_end = tile.wy + th, tile.wx + tw
    if y_end <= h and x_end <= w:
        src = image[tile.wy:y_end, tile.wx:x_end]
    else:
        ri = _reflect_index(np.arange(tile.wy, y_end), h)
        ci = _reflect_index(np.arange(tile.wx, x_end), w)
        src = image[ri[:, None], ci[None, :]]
    if src.ndim == 2:
        src = src[:, :, None]
    if layout == "NCHW":
        dst = out.transpose(1, 2, 0)  # (th, tw, C) view of the caller's buffer
        if image.dtype == np.uint16:
            np.multiply(src, np.float32(1.0 / 257.0), out=dst, casting="unsafe")
        else:
            np.copyto(dst, src, casting="unsafe")
    else:
        if image.dtype == np.uint16:
            np.copyto(out, (src.astype(np.uint32) + 128) // 257, casting="unsafe")
        else:
            np.copyto(out, src, casting="unsafe")


def dihedral_view(a: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th (0..7) of the eight flips and transposes of an ``HxW[xC]`` array, as a view.

    Bit 0 mirrors left-right, bit 1 flips top-bottom, bit 2 transposes (rows become columns) after
    the flips. The same ``k`` maps an image and its upscaled result alike (a pixel's upscaled block
    moves with it), so a model's output for ``dihedral_view(image, k)`` written into
    ``dihedral_view(result, k)`` lands in the original orientation: the self-ensemble needs no
    inverse transform and no copy.
    """
    if not 0 <= k < 8:
        raise ValueError(f"dihedral_view: k must be 0..7, got {k}")
    if k & 1:
        a = a[:, ::-1]
    if k & 2:
        a = a[::-1]
    if k & 4:
        a = a.swapaxes(0, 1)
    return a


def _quantize_into(v: np.ndarray, dst: np.ndarray) -> None:
    """Write float32 0..255 values ``v`` (scratch: overwritten) into ``dst``, uint8 or uint16 (x257),
    clamped and rounded: how every model output becomes pixels."""
    if dst.dtype == np.uint16:
        np.multiply(v, np.float32(257.0), out=v)
        np.clip(v, 0.0, 65535.0, out=v)
    else:
        np.clip(v, 0.0, 255.0, out=v)
    np.rint(v, out=v)
    np.copyto(dst, v, casting="unsafe")


def store_mean(total: np.ndarray, n: int, output: np.ndarray) -> None:
    """Write ``total / n`` (a float32 sum of ``n`` model outputs, 0..255 each, from
    :func:`place_tile` with ``accumulate=True``) into ``output`` (uint8, or uint16 x257): clamped and
    rounded as :func:`place_tile` does. ``total`` is used as scratch (overwritten)."""
    np.multiply(total, np.float32(1.0 / n), out=total)
    _quantize_into(total, output)


def place_tile(result: np.ndarray, plan: TilePlan, tile: Tile, output: np.ndarray, *, layout: str,
               accumulate: bool = False) -> None:
    """Write the core of one upscaled tile into ``output`` (the caller's full-size buffer).

    ``result``: one output batch item, float32 ``(C, th*s, tw*s)`` 0..255 (NCHW; clamped and rounded
    here) or uint8 ``(th*s, tw*s, C)`` (NHWC). ``output``: ``(H*s, W*s, C)`` or, for grey, ``(H*s, W*s)``,
    uint8 or uint16 (x257). Only the core's region of ``output`` is written; ``result`` is not
    modified and may be a backend-owned buffer. ``accumulate``: ``output`` is float32 and the core
    (0..255, grey as luma, neither clamped nor rounded) is added to it (the self-ensemble's sum,
    finished by :func:`store_mean`).
    """
    s = plan.scale
    ry0, rx0 = (tile.y0 - tile.wy) * s, (tile.x0 - tile.wx) * s
    hh, ww = (tile.y1 - tile.y0) * s, (tile.x1 - tile.x0) * s
    if layout == "NCHW":
        core = result[:, ry0:ry0 + hh, rx0:rx0 + ww].transpose(1, 2, 0)
    else:
        core = result[ry0:ry0 + hh, rx0:rx0 + ww, :]
    dst = output[tile.y0 * s:tile.y1 * s, tile.x0 * s:tile.x1 * s]
    grey = output.ndim == 2
    if grey:
        wts = np.asarray(LUMA_WEIGHTS, dtype=np.float32)
        core = core[..., :3].astype(np.float32) @ wts
    if accumulate:
        if output.dtype != np.float32:
            raise TypeError(f"place_tile(accumulate=True) adds into a float32 buffer, got {output.dtype}")
        np.add(dst, core, out=dst, casting="unsafe")
    elif core.dtype == np.uint8 and output.dtype == np.uint8:
        np.copyto(dst, core)
    else:
        _quantize_into(core.astype(np.float32), dst)  # a copy: result may be the backend's buffer


def describe(plan: TilePlan) -> str:
    """One line about a plan, for logs."""
    shapes = plan.shapes
    what = (f"{plan.tile_w}x{plan.tile_h}" if len(shapes) == 1
            else f"up to {plan.tile_w}x{plan.tile_h} ({len(shapes)} shapes)")
    return (f"{plan.width}x{plan.height} input -> {plan.count} tile(s) of {what} "
            f"(margin {plan.margin}, overhead x{plan.overhead:.2f})")

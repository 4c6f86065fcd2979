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
and margin are chosen by measurement (``python3 -m hanrt_bench.tiling_study``).

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
    "describe",
    "legal_tile",
]

#: ITU-R BT.601 luma weights (Pillow's ``convert("L")``): grey output from the model's RGB output.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Tile:
    """One tile. ``wy, wx``: top-left of its window in the input (the window is the plan's tile
    shape and may run past the image only when the image is smaller than a tile; that part is
    reflect-padded). ``y0:y1, x0:x1``: its core, the input region whose upscaled pixels it writes."""

    index: int
    wy: int
    wx: int
    y0: int
    y1: int
    x0: int
    x1: int


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

    @property
    def whole_image(self) -> bool:
        """True when one tile covers the whole image."""
        return len(self.tiles) == 1

    @property
    def overhead(self) -> float:
        """Computed input pixels / image pixels (>= 1; padding and overlap included)."""
        return self.count * self.tile_h * self.tile_w / float(self.height * self.width)

    def batches(self, batch: int) -> Iterator[tuple[Tile, ...]]:
        """Yield the tiles in groups of at most ``batch`` (the last group may be shorter)."""
        if batch < 1:
            raise UsageError(f"batch must be >= 1, got {batch}.")
        for i in range(0, len(self.tiles), batch):
            yield self.tiles[i:i + batch]


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
    th, tw = plan.tile_h, plan.tile_w
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


def place_tile(result: np.ndarray, plan: TilePlan, tile: Tile, output: np.ndarray, *, layout: str) -> None:
    """Write the core of one upscaled tile into ``output`` (the caller's full-size buffer).

    ``result``: one output batch item, float32 ``(C, th*s, tw*s)`` 0..255 (NCHW; clamped and rounded
    here) or uint8 ``(th*s, tw*s, C)`` (NHWC). ``output``: ``(H*s, W*s, C)`` or, for grey, ``(H*s, W*s)``,
    uint8 or uint16 (x257). Only the core's region of ``output`` is written; ``result`` is not
    modified and may be a backend-owned buffer.
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
    if output.dtype == np.uint16:
        v = core.astype(np.float32) * np.float32(257.0)
        np.clip(v, 0.0, 65535.0, out=v)
        np.rint(v, out=v)
        np.copyto(dst, v, casting="unsafe")
    elif core.dtype == np.uint8:
        np.copyto(dst, core)
    else:
        v = np.clip(core, 0.0, 255.0)
        np.rint(v, out=v)
        np.copyto(dst, v, casting="unsafe")


def describe(plan: TilePlan) -> str:
    """One line about a plan, for logs."""
    return (f"{plan.width}x{plan.height} input -> {plan.count} tile(s) of {plan.tile_w}x{plan.tile_h} "
            f"(margin {plan.margin}, overhead x{plan.overhead:.2f})")

"""Optimization profiles: tile shapes and batches a TensorRT engine accepts (pure, stdlib only).

Sizes are in input pixels, ``(N, H, W)``; :class:`Profile` converts them to the graph's layout.

**Execution contexts share profiles.** hanrt builds each profile once and runs every slot's
execution context on the same one. TensorRT 8.6 added this as the preview feature
``kPROFILE_SHARING_0806``; TensorRT 10.0 turned it on for good. The Python API's own text
(``tensorrt.PreviewFeature.__doc__`` of the real 10.3.0 binding; source NVIDIA/TensorRT
``python/docstrings/infer/pyCoreDoc.h``): "PROFILE_SHARING_0806 : [DEPRECATED] Allows optimization
profiles to be shared across execution contexts. The default value for this flag is on in TensorRT
10.0. Turning if off is deprecated." -- and trtexec
(``samples/common/sampleOptions.cpp``): "profileSharing0806 is on by default in TensorRT 10.0. This
flag is deprecated and has no effect." TensorRT 11 removed the flag. The sentence still in
``NvInferRuntime.h`` (class IExecutionContext), "If the engine supports dynamic shapes, each execution
context in concurrent use must use a separate optimization profile", predates that and was not
updated. hanrt needs TensorRT >= 10, so it relies on sharing; ``benchmarks/gpu_check.sh`` runs two
contexts on one profile concurrently and compares their outputs (not yet run on a GPU with TensorRT).

Engines built by earlier hanrt versions with ``hanrt build --slots N`` have every profile N times
in a row; :func:`base_profiles` reads one of each from their sidecars, and they still load and run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ...errors import UsageError
from ...model_info import ModelInfo
from ...tiling import TilePlan, plan_tiles

__all__ = [
    "plan_for_profiles",
    "Shape3",
    "Profile",
    "MAX_SLOTS",
    "parse_hw",
    "parse_nhw",
    "parse_size",
    "profiles_from_tiles",
    "base_profiles",
    "check_profiles",
    "pick_profile",
]

MAX_SLOTS = 16  # the most copies per profile an earlier hanrt's hanrt build --slots wrote

Shape3 = tuple[int, int, int]  # (batch N, height H, width W) of the input tile, in pixels


_HW = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
_NHW = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_hw(text: str) -> tuple[int, int]:
    """``"96x128"`` -> ``(96, 128)`` (height, width in input pixels); ``"96"`` means 96x96."""
    t = str(text).strip()
    if t.isdigit():
        v = int(t)
        if v < 1:
            raise UsageError(f"tile size must be >= 1, got {text!r}.")
        return v, v
    m = _HW.match(t)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise UsageError(f"expected a tile size HxW such as 96x96, got {text!r}.")
    return int(m.group(1)), int(m.group(2))


def parse_nhw(text: str) -> Shape3:
    """``"4x96x96"`` -> ``(4, 96, 96)`` (batch, height, width)."""
    m = _NHW.match(str(text))
    if not m or min(int(g) for g in m.groups()) < 1:
        raise UsageError(f"expected a shape NxHxW (batch x height x width) such as 4x96x96, got {text!r}.")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def parse_size(text: str | int) -> int:
    """Bytes from ``"512M"``, ``"2G"``, ``"1.5GiB"``, ``"1073741824"`` (binary units)."""
    if isinstance(text, int):
        v = text
    else:
        m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*$", str(text))
        if not m:
            raise UsageError(f"expected a size such as 512M or 2G, got {text!r}.")
        mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
        v = int(float(m.group(1)) * mult)
    if v < 1 << 20:
        raise UsageError(f"workspace must be at least 1M, got {text!r}.")
    return v


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimization profile for the image input: min/opt/max (N, H, W).

    Sizes are in input pixels; the engine accepts any batch and tile between ``min`` and ``max``
    (inclusive, per dimension) and is tuned for ``opt``.
    """

    min: Shape3
    opt: Shape3
    max: Shape3

    def __post_init__(self) -> None:
        for name in ("min", "opt", "max"):
            v = getattr(self, name)
            if len(v) != 3 or any(int(x) < 1 for x in v):
                raise UsageError(f"profile {name} must be three positive ints (N, H, W), got {v}.")
        for i, dim in enumerate(("batch", "height", "width")):
            if not self.min[i] <= self.opt[i] <= self.max[i]:
                raise UsageError(
                    f"profile {dim} must satisfy min <= opt <= max, got {self.min[i]} / {self.opt[i]} / "
                    f"{self.max[i]} (from min {_fmt(self.min)}, opt {_fmt(self.opt)}, max {_fmt(self.max)}).")

    def input_shapes(self, info: ModelInfo) -> dict[str, tuple[int, ...]]:
        """Full input shapes for TensorRT, in the graph's layout (NCHW float, NHWC uint8)."""
        return {k: _layout_shape(v, info) for k, v in (("min", self.min), ("opt", self.opt), ("max", self.max))}

    def output_shape(self, nhw: Shape3, info: ModelInfo) -> tuple[int, ...]:
        n, h, w = nhw
        return _layout_shape((n, h * info.scale, w * info.scale), info)

    def accepts(self, nhw: Shape3) -> bool:
        return all(self.min[i] <= nhw[i] <= self.max[i] for i in range(3))

    def describe(self) -> str:
        if self.min == self.opt == self.max:
            return _fmt(self.opt)
        return f"min {_fmt(self.min)}, opt {_fmt(self.opt)}, max {_fmt(self.max)}"

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, d: dict[str, Sequence[int]]) -> "Profile":
        return cls(tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))  # type: ignore[arg-type]


def _fmt(s: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in s)


def _layout_shape(nhw: Shape3, info: ModelInfo) -> tuple[int, ...]:
    n, h, w = (int(v) for v in nhw)
    return (n, h, w, info.n_colors) if info.layout == "NHWC" else (n, info.n_colors, h, w)


def profiles_from_tiles(tiles: Sequence[tuple[int, int]], batch: int, *, min_batch: int = 1) -> list[Profile]:
    """One profile per tile shape: batch ``min_batch..batch`` (opt = ``batch``), fixed H and W.

    The tiler sends full-size tiles only (edge tiles are padded), so H and W are fixed per
    profile; a partial last batch uses a smaller N.
    """
    if batch < 1 or min_batch < 1 or min_batch > batch:
        raise UsageError(f"--batch must be >= 1 (and >= the minimum batch {min_batch}), got {batch}.")
    if not tiles:
        raise UsageError("give at least one --tile HxW (or --min/--opt/--max).")
    seen: list[Profile] = []
    for h, w in tiles:
        p = Profile((min_batch, h, w), (batch, h, w), (batch, h, w))
        if p not in seen:
            seen.append(p)
    return seen


def base_profiles(profiles: Sequence[Profile], slots: int) -> tuple[Profile, ...]:
    """One of each profile of an engine whose profiles appear ``slots`` times in a row (an earlier
    hanrt's ``hanrt build --slots N``; ``slots=1``: the profiles unchanged).

    UsageError if ``profiles`` is not such a replication (not ``slots`` equal profiles in a row).
    """
    n = _check_slots(slots)
    base = tuple(profiles[::n])
    if len(profiles) % n or [p for p in base for _ in range(n)] != list(profiles):
        raise UsageError(f"with {n} slots every optimization profile must appear {n} times in a row "
                         f"(got {len(profiles)} profile(s): {'; '.join(p.describe() for p in profiles)}).")
    return base


def _check_slots(slots: int) -> int:
    if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= MAX_SLOTS:
        raise UsageError(f"slots must be an integer 1..{MAX_SLOTS} (copies of each profile in an engine of "
                         f"an earlier hanrt), got {slots!r}.")
    return slots


def check_profiles(profiles: Sequence[Profile], info: ModelInfo) -> None:
    """Refuse shapes the model cannot take (``min_tile``, ``tile_multiple`` of its description)."""
    for p in profiles:
        for nhw in (p.min, p.max):
            for side in nhw[1:]:
                if side < info.min_tile:
                    raise UsageError(f"tile side {side} is below the model's minimum {info.min_tile}.")
                if side % max(1, info.tile_multiple):
                    raise UsageError(f"tile side {side} is not a multiple of {info.tile_multiple}.")


def pick_profile(profiles: tuple[Profile, ...] | list[Profile], batch: int, h: int, w: int) -> int:
    """Index of the first profile accepting ``batch`` tiles of ``h x w``; UsageError naming the
    shapes the engine was built for otherwise."""
    for i, p in enumerate(profiles):
        if p.accepts((batch, h, w)):
            return i
    built = "; ".join(dict.fromkeys(p.describe() for p in profiles))  # each profile once (old engines: copies)
    raise UsageError(f"this engine takes batch x height x width in [{built}], not {batch}x{h}x{w}: "
                     f"use a matching --tile/--batch or rebuild with hanrt build --tile {h}x{w} --batch {batch}.")


def plan_for_profiles(height: int, width: int, *, profiles: Sequence, tile: int | None, margin: int,
                      batch: int, info: ModelInfo) -> tuple[TilePlan, int, int]:
    """Plan tiles within an engine's optimization profiles (pure; sizes in input pixels).

    ``profiles``: objects with ``min``/``max`` ``(N, H, W)`` (:class:`Profile`).
    ``tile``: the asked tile side (``None``: whole image). Per profile, the wanted tile (the asked
    one, or the image's own size when the tile covers it) is clamped into the profile's H and W
    range: a larger image is tiled with the profile's largest tile, a smaller one is
    reflect-padded up to its smallest (``plan_tiles(fixed=True)``). A profile that holds the wanted
    tile unchanged wins, then the one computing the fewest pixels, then the first. Returns
    ``(plan, batch, min_batch)``: tiles per slot (within the profile's batch range) and the
    profile's smallest batch (a shorter last group is filled up to it). UsageError if no profile fits.
    """
    def legal(n: int) -> int:
        return max(info.min_tile, -(-n // info.tile_multiple) * info.tile_multiple)

    def floor(n: int) -> int:
        return n // info.tile_multiple * info.tile_multiple

    whole = tile is None or tile >= max(height, width)
    want = (legal(height) if whole or tile >= height else tile,
            legal(width) if whole or tile >= width else tile)
    best: tuple[tuple[bool, int, int], TilePlan, int, int] | None = None
    for idx, p in enumerate(profiles):
        lo, hi = (legal(p.min[1]), legal(p.min[2])), (floor(p.max[1]), floor(p.max[2]))
        if lo[0] > hi[0] or lo[1] > hi[1]:
            continue
        th, tw = (min(max(legal(want[i]), lo[i]), hi[i]) for i in (0, 1))
        try:
            plan = plan_tiles(height, width, tile=(th, tw), margin=margin, scale=info.scale, fixed=True,
                              min_tile=info.min_tile, tile_multiple=info.tile_multiple)
        except UsageError:  # e.g. the margin leaves no core in this profile's largest tile
            continue
        b = max(min(batch, plan.count, p.max[0]), p.min[0])
        rank = ((th, tw) != want, plan.count * th * tw, idx)
        if best is None or rank < best[0]:
            best = (rank, plan, b, p.min[0])
    if best is None:
        built = "; ".join(dict.fromkeys(  # each profile once (an earlier hanrt's --slots N: copies)
            p.describe() if hasattr(p, "describe") else f"{p.min}..{p.max}" for p in profiles))
        raise UsageError(f"no tile for a {width}x{height} image with margin {margin} fits this engine's "
                         f"shapes [{built}]: use a smaller --margin or rebuild the engine (hanrt build).")
    return best[1], best[2], best[3]

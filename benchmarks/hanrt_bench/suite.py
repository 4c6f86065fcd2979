"""Benchmark suites: a JSON file naming what to sweep (Python 3.10 has no tomllib).

Format (every key optional; command-line options override the file)::

    {
      "name": "cpu-quick",
      "model": "han.onnx",               // or a checkpoint .pt, an engine .plan, or "random:10x20x64"
      "input": [96, 96],                 // H, W of a synthetic frame, or a path to an image
      "warmup": 1, "iters": 5, "max_seconds": 120,
      "baselines": ["torch-eager", "torch-chop", "torch-tile"],
      "sweep": {
        "backend":   ["ort-cpu"],        // one of hanrt.backends.BACKENDS: auto, ort-cpu, ...
        "precision": ["fp32"],           // fp32 | fp16 | int8 (files <stem>_fp16.onnx beside the model)
        "tile":      [48, 96],           // input pixels; 0 = whole image
        "margin":    [8],                // input pixels of context per tile side
        "batch":     [1, 4]              // tiles per backend call
      }
    }

``//`` comments are not JSON: the shipped suites carry a ``"_comment"`` key instead.
:func:`load_suite` validates everything and raises :class:`hanrt.errors.UsageError` with the
file, the key and what was expected.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hanrt.backends import BACKENDS
from hanrt.errors import UsageError

__all__ = ["Suite", "Config", "load_suite", "parse_suite", "BACKENDS", "PRECISIONS", "BASELINES", "builtin_suites"]

PRECISIONS = ("fp32", "fp16", "int8")
BASELINES = ("torch-eager", "torch-chop", "torch-tile")
_TOP_KEYS = {"name", "model", "input", "warmup", "iters", "max_seconds", "baselines", "sweep", "_comment", "description"}
_SWEEP_KEYS = {"backend", "precision", "tile", "margin", "batch"}


@dataclass(frozen=True)
class Config:
    """One hanrt configuration of a sweep. ``tile``/``margin``: input pixels (tile 0 = whole image)."""

    backend: str = "auto"
    precision: str = "fp32"
    tile: int | None = None
    margin: int | None = None
    batch: int | None = None

    @property
    def label(self) -> str:
        t = "whole" if self.tile == 0 else ("default" if self.tile is None else str(self.tile))
        parts = [self.backend, self.precision, f"tile {t}"]
        if self.margin is not None:
            parts.append(f"margin {self.margin}")
        if self.batch is not None:
            parts.append(f"batch {self.batch}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Suite:
    """A parsed suite (see the module docstring)."""

    name: str = "default"
    model: str | None = None
    input: tuple[int, int] | str = (96, 96)
    warmup: int = 1
    iters: int = 5
    max_seconds: float | None = None
    baselines: tuple[str, ...] = BASELINES
    sweep: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    source: str = "<built-in>"

    def configs(self) -> list[Config]:
        """The cross product of the sweep, in a stable order (backend, precision, tile, margin, batch)."""
        keys = ("backend", "precision", "tile", "margin", "batch")
        axes = [self.sweep.get(k) or ((None,) if k in ("tile", "margin", "batch") else (Config.__dataclass_fields__[k].default,))
                for k in keys]
        return [Config(**dict(zip(keys, combo))) for combo in itertools.product(*axes)]

    def with_overrides(self, **kw: Any) -> "Suite":
        """A copy with the non-``None`` keyword values replaced (sweep axes merged)."""
        sweep = dict(self.sweep)
        for k in list(kw):
            if k in _SWEEP_KEYS:
                v = kw.pop(k)
                if v is not None:
                    sweep[k] = tuple(v)
        kw = {k: v for k, v in kw.items() if v is not None}
        new = replace(self, **kw, sweep=sweep)
        _validate(new)
        return new


def _err(src: str, msg: str) -> UsageError:
    return UsageError(f"suite {src}: {msg}")


def _int(src: str, key: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise _err(src, f"{key!r} must be an integer >= {lo}, found {v!r}.")
    return v


def parse_suite(data: Any, *, source: str = "<dict>") -> Suite:
    """Validate a decoded suite (a dict) and return a :class:`Suite`."""
    src = source
    if not isinstance(data, dict):
        raise _err(src, f"the top level must be a JSON object, found {type(data).__name__}.")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise _err(src, f"unknown key(s) {unknown}; known: {sorted(_TOP_KEYS - {'_comment'})}.")
    kw: dict[str, Any] = {"source": src}
    if "name" in data:
        if not isinstance(data["name"], str) or not data["name"]:
            raise _err(src, "'name' must be a non-empty string.")
        kw["name"] = data["name"]
    if "model" in data:
        if not isinstance(data["model"], str) or not data["model"]:
            raise _err(src, "'model' must be a path or 'random:GxBxF'.")
        kw["model"] = data["model"]
    if "input" in data:
        v = data["input"]
        if isinstance(v, str) and v:
            kw["input"] = v
        elif isinstance(v, list) and len(v) == 2:
            kw["input"] = (_int(src, "input[0] (height)", v[0], 1), _int(src, "input[1] (width)", v[1], 1))
        else:
            raise _err(src, f"'input' must be [height, width] or an image path, found {v!r}.")
    if "warmup" in data:
        kw["warmup"] = _int(src, "warmup", data["warmup"], 0)
    if "iters" in data:
        kw["iters"] = _int(src, "iters", data["iters"], 1)
    if "max_seconds" in data:
        v = data["max_seconds"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise _err(src, f"'max_seconds' must be a number > 0, found {v!r}.")
        kw["max_seconds"] = float(v)
    if "baselines" in data:
        v = data["baselines"]
        if not isinstance(v, list) or any(b not in BASELINES for b in v):
            raise _err(src, f"'baselines' must be a list drawn from {list(BASELINES)}, found {v!r}.")
        kw["baselines"] = tuple(v)
    sweep: dict[str, tuple[Any, ...]] = {}
    if "sweep" in data:
        sw = data["sweep"]
        if not isinstance(sw, dict):
            raise _err(src, "'sweep' must be an object of lists.")
        unknown = sorted(set(sw) - _SWEEP_KEYS)
        if unknown:
            raise _err(src, f"unknown sweep axis {unknown}; known: {sorted(_SWEEP_KEYS)}.")
        for k, vals in sw.items():
            if not isinstance(vals, list) or not vals:
                raise _err(src, f"sweep.{k} must be a non-empty list, found {vals!r}.")
            sweep[k] = tuple(vals)
    kw["sweep"] = sweep
    suite = Suite(**kw)
    _validate(suite)
    return suite


def _validate(s: Suite) -> None:
    src = s.source
    for k, vals in s.sweep.items():
        for v in vals:
            if k == "backend" and v not in BACKENDS:
                raise _err(src, f"sweep.backend: unknown backend {v!r}; choose from {list(BACKENDS)}.")
            if k == "precision" and v not in PRECISIONS:
                raise _err(src, f"sweep.precision: unknown precision {v!r}; choose from {list(PRECISIONS)}.")
            if k == "tile":
                _int(src, "sweep.tile", v, 0)
            if k == "margin":
                _int(src, "sweep.margin", v, 0)
            if k == "batch":
                _int(src, "sweep.batch", v, 1)
    if s.iters < 1 or s.warmup < 0:
        raise _err(src, "need iters >= 1 and warmup >= 0.")


def load_suite(path: str | os.PathLike) -> Suite:
    """Read and validate a suite file; a bare name (``cpu-quick``) picks a shipped suite."""
    p = Path(path)
    if not p.exists() and not p.suffix:
        shipped = builtin_suites()
        if str(path) in shipped:
            p = shipped[str(path)]
        else:
            raise UsageError(f"suite {str(path)!r} is neither a file nor a shipped suite ({sorted(shipped)}).")
    if not p.is_file():
        raise UsageError(f"suite file {str(p)!r} does not exist.")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"suite {str(p)!r} is not UTF-8 text ({exc}).") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"suite {str(p)!r} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.") from None
    return parse_suite(data, source=str(p))


def builtin_suites() -> dict[str, Path]:
    """Shipped suites under ``hanrt_bench/suites/``: name -> path."""
    d = Path(__file__).parent / "suites"
    return {q.stem: q for q in sorted(d.glob("*.json"))}

"""Typed requests of ``hanrt bench`` and ``hanrt eval``: the options as one frozen value, built
once by the command (:func:`hanrt.cli.request_from`) and read by :mod:`hanrt_bench.cli`. ``None``
means "the suite's (or hanrt's) default" (:mod:`hanrt_bench.suite` holds the sweep defaults)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BenchRequest", "EvalRequest"]


@dataclass(frozen=True, kw_only=True)
class BenchRequest:
    """``hanrt bench`` (see its ``--help`` for each field); lists are the values to sweep."""

    model: str | None = None
    suite: str | None = None
    checkpoint: str | None = None
    input: list[str] | None = None
    policy: bool = False
    backend: list[str] | None = None
    precision: list[str] | None = None
    fp16: str | None = None
    int8: str | None = None
    tile: list[int] | None = None
    margin: list[int] | None = None
    batch: list[int] | None = None
    warmup: int | None = None
    iters: int | None = None
    max_seconds: float | None = None
    baselines: str | None = None
    device: str = "auto"
    no_peak: bool = False
    quality: str | None = None
    output: str | None = None
    no_plots: bool = False


@dataclass(frozen=True, kw_only=True)
class EvalRequest:
    """``hanrt eval`` (see its ``--help`` for each field)."""

    dataset: str
    model: str | None = None
    fp16: str | None = None
    int8: str | None = None
    backend: str = "auto"
    tile: int | None = None
    margin: int | None = None
    batch: int = 1
    columns: str | None = None
    limit: int | None = None
    output: str | None = None
    no_crops: bool = False
    task: str = "sr"
    models: str | None = None

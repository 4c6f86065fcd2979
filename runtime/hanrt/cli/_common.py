"""What the subcommands that run a model share: the model options and the Upscaler made from them.

``hanrt upscale`` and ``hanrt stream`` take the same model options (``--model --backend --tile
--margin --batch --threads --device --fp16 --server --ensemble``) with the same names, types and
defaults; :func:`add_model_options` declares them from one table, each command passing its own help
texts (and metavars). :func:`upscaler_from_args` turns the parsed options into an
:class:`~hanrt.upscaler.Upscaler`. Stdlib only at import (``--help`` needs no extras); the
Upscaler and its backend are imported when called. Not a subcommand (registers no entry point).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from ..backends import BACKENDS
from ..model_info import DEFAULT_MARGIN

if TYPE_CHECKING:  # pragma: no cover
    from ..upscaler import Upscaler

__all__ = ["MODEL_OPTIONS", "SERVER_HELP", "MARGIN_HELP", "ENSEMBLE_HELP", "add_model_options", "triton_servers",
           "upscaler_from_args", "validate_model_options", "max_threads"]

#: ``--threads`` may ask for at most this many threads per CPU the process may use.
THREADS_PER_CPU = 4
#: Largest ``--batch`` (tiles per backend call) and ``--tile``/``--margin`` (pixels) accepted.
MAX_BATCH = 1024
MAX_TILE = 16384

def tile_arg(text: str) -> int | str:
    """``--tile``: a side in pixels (0: whole image) or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels, 0 (whole image) or auto, got {text!r}") from None


#: The model options: destination -> (flags, argparse keywords other than ``help``/``metavar``).
MODEL_OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "model": (("--model", "-m"), {"default": None}),
    "backend": (("--backend", "-b"), {"default": "auto", "choices": BACKENDS}),
    "tile": (("--tile",), {"type": tile_arg, "default": None}),
    "margin": (("--margin",), {"type": int, "default": None}),
    "batch": (("--batch",), {"type": int, "default": 1}),
    "threads": (("--threads",), {"type": int, "default": 0}),
    "device": (("--device",), {"type": int, "default": 0}),
    "fp16": (("--fp16",), {"action": "store_true"}),
    "server": (("--server",), {"action": "append", "default": None}),
    "ensemble": (("--ensemble",), {"type": int, "default": 1, "choices": (1, 2, 4, 8)}),
}

#: Help text of ``--margin`` (the same in every command that takes the model options).
MARGIN_HELP = ("context pixels around each tile, cropped after upscaling (default: the margin measured for the "
               f"model and recorded in it -- hanrt info MODEL shows it -- else {DEFAULT_MARGIN})")

#: Help text of ``--ensemble`` (the same in every command that takes the model options).
ENSEMBLE_HELP = ("self-ensemble: upscale each image N times (as it is, mirrored, flipped, transposed: 2, 4 or 8 "
                 "views) and average, N times the compute for a little more fidelity (README, 'Self-ensemble'); "
                 "default 1")

#: Help text of ``--server`` (the same in every command that takes the model options).
SERVER_HELP = ("Triton server HOST:PORT (HTTP; grpc://HOST:PORT for gRPC) for --backend triton (implied); "
               "repeat for several: batches are spread and a failing server's batch goes to another")


def add_model_options(
    p: argparse.ArgumentParser | Any,
    help: Mapping[str, str],
    *,
    metavar: Mapping[str, str] | None = None,
) -> None:
    """Declare every option of :data:`MODEL_OPTIONS` on ``p`` (a parser or an argument group), in
    that order. ``help``: the help text of each option (all of them); ``metavar``: the options
    that show a metavar other than argparse's default (the upper-case name)."""
    help = {"server": SERVER_HELP, "margin": MARGIN_HELP, "ensemble": ENSEMBLE_HELP, **help}
    missing = sorted(set(MODEL_OPTIONS) - set(help))
    if missing:
        raise ValueError(f"add_model_options: no help text for {missing}")
    for dest, (flags, kw) in MODEL_OPTIONS.items():
        kw = dict(kw, help=help[dest])
        if metavar and dest in metavar:
            kw["metavar"] = metavar[dest]
        p.add_argument(*flags, **kw)


@contextlib.contextmanager
def triton_servers(servers: list[str] | None) -> Iterator[None]:
    """For commands that open their Upscalers elsewhere (``bench``, ``eval``): ``--server`` values
    become ``$HANRT_TRITON_SERVERS`` (what the Triton backend reads when given no servers) for the
    block, restored after it."""
    from ..backends.triton import SERVERS_ENV

    if not servers:
        yield
        return
    old = os.environ.get(SERVERS_ENV)
    os.environ[SERVERS_ENV] = ",".join(servers)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(SERVERS_ENV, None)
        else:
            os.environ[SERVERS_ENV] = old


def max_threads() -> int:
    """The largest ``--threads``: :data:`THREADS_PER_CPU` x the CPUs this process may run on."""
    import os

    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return THREADS_PER_CPU * max(1, n)


def validate_model_options(args: argparse.Namespace) -> None:
    """Refuse, with :class:`~hanrt.errors.UsageError`, model options outside their ranges, before
    any model is loaded: ``--threads`` 0 (the backend's default) .. :func:`max_threads`, ``--tile``
    0 (whole image) or 1 .. :data:`MAX_TILE`, ``--margin`` 0 .. :data:`MAX_TILE` (the Upscaler checks it against the tile), ``--batch``
    1 .. :data:`MAX_BATCH`, ``--device`` >= 0. Options missing from ``args`` are not checked."""
    from ..errors import UsageError

    def check(name: str, lo: int, hi: int, what: str) -> None:
        v = getattr(args, name, None)
        if isinstance(v, str):  # --tile auto (parsed by its own type)
            return
        if v is not None and not lo <= v <= hi:
            raise UsageError(f"--{name} must be {what}, got {v}.")

    check("threads", 0, max_threads(), f"0 (the backend's default) .. {max_threads()} "
          f"({THREADS_PER_CPU} x the CPUs available)")
    check("tile", 0, MAX_TILE, f"0 (whole image) or a side of 1 .. {MAX_TILE} pixels")
    check("batch", 1, MAX_BATCH, f"1 .. {MAX_BATCH} tiles per call")
    check("device", 0, 1023, "a CUDA device number >= 0")
    check("margin", 0, MAX_TILE, f"0 .. {MAX_TILE} pixels (and less than half of --tile)")


def upscaler_from_args(args: argparse.Namespace) -> Upscaler:
    """An :class:`~hanrt.upscaler.Upscaler` from the options :func:`add_model_options` declares.

    ``--tile`` left out takes the Upscaler's default (``DEFAULT_TILE``); ``--margin`` left out takes
    the margin measured for the model and recorded in it, else ``DEFAULT_MARGIN``
    (:func:`hanrt.model_info.resolve_margin`); ``--tile 0`` is whole-image inference. An option missing from ``args``
    takes its default from :data:`MODEL_OPTIONS`.
    """
    from ..upscaler import DEFAULT_TILE, Upscaler

    def opt(dest: str) -> Any:
        flags, kw = MODEL_OPTIONS[dest]
        return getattr(args, dest, False if kw.get("action") == "store_true" else kw["default"])

    tile, margin = opt("tile"), opt("margin")
    return Upscaler(opt("model"), backend=opt("backend"),
                    tile=DEFAULT_TILE if tile is None else tile,
                    margin=margin,
                    batch=opt("batch"), threads=opt("threads"), device_id=opt("device"), fp16=opt("fp16"),
                    servers=tuple(opt("server") or ()), ensemble=opt("ensemble"))

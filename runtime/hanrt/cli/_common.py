"""What the subcommands that run a model share: the model options and the Upscaler made from them.

``hanrt upscale`` and ``hanrt stream`` take the same model options (``--model --backend --tile
--margin --batch --threads --device --fp16``) with the same names, types and defaults;
:func:`add_model_options` declares them from one table, each command passing its own help texts
(and metavars). :func:`upscaler_from_args` turns the parsed options into an
:class:`~hanrt.upscaler.Upscaler`. Stdlib only at import (``--help`` needs no extras); the
Upscaler and its backend are imported when called. Not a subcommand (the leading underscore keeps
:func:`hanrt.cli._commands` from loading it as one).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Mapping

from ..backends import BACKENDS

if TYPE_CHECKING:  # pragma: no cover
    from ..upscaler import Upscaler

__all__ = ["MODEL_OPTIONS", "add_model_options", "upscaler_from_args"]

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
}


def add_model_options(
    p: argparse.ArgumentParser | Any,
    help: Mapping[str, str],
    *,
    metavar: Mapping[str, str] | None = None,
) -> None:
    """Declare every option of :data:`MODEL_OPTIONS` on ``p`` (a parser or an argument group), in
    that order. ``help``: the help text of each option (all of them); ``metavar``: the options
    that show a metavar other than argparse's default (the upper-case name)."""
    missing = sorted(set(MODEL_OPTIONS) - set(help))
    if missing:
        raise ValueError(f"add_model_options: no help text for {missing}")
    for dest, (flags, kw) in MODEL_OPTIONS.items():
        kw = dict(kw, help=help[dest])
        if metavar and dest in metavar:
            kw["metavar"] = metavar[dest]
        p.add_argument(*flags, **kw)


def upscaler_from_args(args: argparse.Namespace) -> Upscaler:
    """An :class:`~hanrt.upscaler.Upscaler` from the options :func:`add_model_options` declares.

    ``--tile``/``--margin`` left out take the Upscaler's defaults (``DEFAULT_TILE``,
    ``DEFAULT_MARGIN``); ``--tile 0`` is whole-image inference. An option missing from ``args``
    takes its default from :data:`MODEL_OPTIONS`.
    """
    from ..upscaler import DEFAULT_MARGIN, DEFAULT_TILE, Upscaler

    def opt(dest: str) -> Any:
        flags, kw = MODEL_OPTIONS[dest]
        return getattr(args, dest, False if kw.get("action") == "store_true" else kw["default"])

    tile, margin = opt("tile"), opt("margin")
    return Upscaler(opt("model"), backend=opt("backend"),
                    tile=DEFAULT_TILE if tile is None else tile,
                    margin=DEFAULT_MARGIN if margin is None else margin,
                    batch=opt("batch"), threads=opt("threads"), device_id=opt("device"), fp16=opt("fp16"))

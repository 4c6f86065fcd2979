"""hanrt.cli._common: the model options shared by ``upscale`` and ``stream``, the Upscaler made from
them, and the one list of backend names behind every ``--backend``."""

from __future__ import annotations

import argparse

import pytest

from hanrt.backends import BACKENDS
from hanrt.cli import build_parser
from hanrt.cli._common import MODEL_OPTIONS, add_model_options, upscaler_from_args

HELP = {k: f"help for {k}" for k in MODEL_OPTIONS}


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _option(p: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in p._actions if flag in a.option_strings)


def test_options_defaults_and_help():
    p = argparse.ArgumentParser()
    add_model_options(p, HELP, metavar={"tile": "N"})
    a = p.parse_args([])
    assert vars(a) == {"model": None, "backend": "auto", "tile": None, "margin": None, "batch": 1,
                       "threads": 0, "device": 0, "fp16": False, "server": None, "ensemble": 1}
    assert p.parse_args(["--server", "a:1", "--server", "grpc://b:2"]).server == ["a:1", "grpc://b:2"]
    a = p.parse_args(["-m", "x.onnx", "-b", "ort-cpu", "--tile", "0", "--margin", "4", "--batch", "2",
                      "--threads", "3", "--device", "1", "--fp16", "--ensemble", "8"])
    assert (a.model, a.backend, a.tile, a.margin, a.batch, a.threads, a.device, a.fp16, a.ensemble) == \
        ("x.onnx", "ort-cpu", 0, 4, 2, 3, 1, True, 8)
    assert _option(p, "--tile").metavar == "N" and _option(p, "--margin").metavar is None
    assert all(_option(p, MODEL_OPTIONS[k][0][0]).help == HELP[k] for k in MODEL_OPTIONS)
    with pytest.raises(ValueError, match="no help text"):
        add_model_options(argparse.ArgumentParser(), {"model": "m"})


@pytest.mark.parametrize("command", ["upscale", "stream", "eval", "bench"])
def test_every_backend_option_offers_the_registry(command):
    assert tuple(_option(_subparser(command), "--backend").choices) == BACKENDS


def test_upscale_and_stream_share_the_model_options():
    for command in ("upscale", "stream"):
        p = _subparser(command)
        for dest, (flags, kw) in MODEL_OPTIONS.items():
            act = _option(p, flags[0])
            assert act.dest == dest and tuple(act.option_strings) == flags
            assert act.default == kw.get("default", False)


def test_upscaler_from_args(tiny_onnx):
    pytest.importorskip("onnxruntime")
    from hanrt.upscaler import DEFAULT_MARGIN, DEFAULT_TILE

    p = argparse.ArgumentParser()
    add_model_options(p, HELP)
    with upscaler_from_args(p.parse_args(["-m", str(tiny_onnx), "-b", "ort-cpu", "--threads", "1"])) as up:
        assert (up.tile, up.margin, up.batch) == (DEFAULT_TILE, DEFAULT_MARGIN, 1)
        assert up.backend.name == "ort-cpu"
    with upscaler_from_args(p.parse_args(["-m", str(tiny_onnx), "--tile", "0", "--margin", "2", "--batch", "3",
                                          "--threads", "1", "--ensemble", "2"])) as up:
        assert (up.tile, up.margin, up.batch, up.ensemble) == (None, 2, 3, 2)  # tile 0: whole image
    # options a namespace lacks take their defaults
    with upscaler_from_args(argparse.Namespace(model=str(tiny_onnx), tile=32, threads=1)) as up:
        assert (up.tile, up.margin, up.batch, up.ensemble) == (32, DEFAULT_MARGIN, 1, 1)


def test_tile_option_takes_auto_a_size_or_zero():
    p = argparse.ArgumentParser()
    add_model_options(p, HELP)
    assert p.parse_args(["--tile", "auto"]).tile == "auto"
    assert p.parse_args(["--tile", "AUTO"]).tile == "auto"
    assert p.parse_args(["--tile", "192"]).tile == 192 and p.parse_args(["--tile", "0"]).tile == 0
    with pytest.raises(SystemExit):
        p.parse_args(["--tile", "big"])

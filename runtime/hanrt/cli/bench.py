"""``hanrt bench``: latency/throughput of hanrt against PyTorch baselines in one run.

Options are declared with the stdlib only, so ``--help`` works without the extras; ``run``
imports ``hanrt_bench`` lazily (it needs only hanrt; plots need matplotlib, the baselines torch,
and each is skipped with a message where missing).
"""

from __future__ import annotations

import argparse

from ..backends import BACKENDS
from ._common import SERVER_HELP
from . import Command

_EPILOG = """\
examples:
  hanrt bench model.onnx --checkpoint model.pt --input 96x96 --tile 48 0 --batch 1 4 --output bench/
  hanrt bench random:full --input 64x64 --iters 3 --backend ort-cpu
  hanrt bench model.pt --suite cpu-quick --output bench/ --quality eval/summary.json
  hanrt bench --suite cpu-quick                  # the bundled model (and its .pt for the baselines)
  hanrt bench --policy --input 256x256 512x384   # default tiling vs whole image vs every fixed tile

MODEL: .onnx graph, .plan engine, .pt checkpoint (exported to a temporary ONNX for hanrt), or
random:GxBxF / random:full (random weights; @x2 picks the scale). Tiles and margins are input
pixels, margin included in the tile; tile 0 is whole-image inference. Speedups in the table are
baseline latency / row latency."""


def configure(p: argparse.ArgumentParser) -> None:
    p.epilog = _EPILOG
    p.add_argument("model", nargs="?", help="model to benchmark (see below); default: the suite's \"model\", "
                   "else the bundled hanrt_x4.onnx (with hanrt_x4.pt for the baselines)")
    p.add_argument("--suite", help="JSON suite file, or a shipped suite name (cpu-quick, gpu-quick)")
    p.add_argument("--checkpoint", help="PyTorch checkpoint for the baselines when MODEL is .onnx/.plan")
    p.add_argument("--input", nargs="+", help="HxW of a synthetic frame (default 96x96), or an image file "
                   "(then decode and PNG encode are timed too); --policy takes several sizes "
                   "(default 128x128 256x256 384x512 750x1000 1500x2000)")
    p.add_argument("--policy", action="store_true",
                   help="compare the default tiling with whole-image and every --tile (default 64 96 128 192 256 384), "
                        "interleaved, per --input size; prints a table (and writes policy.json to --output)")
    p.add_argument("--server", action="append", metavar="HOST:PORT", help=SERVER_HELP + " (MODEL's stem names the model there)")
    p.add_argument("--backend", nargs="+", choices=BACKENDS,
                   help="hanrt backend(s) to sweep (default auto)")
    p.add_argument("--precision", nargs="+", choices=["fp32", "fp16", "int8"], help="precision(s) to sweep (default fp32)")
    p.add_argument("--fp16", help="FP16 graph for --precision fp16 (default: <stem>_fp16.onnx beside MODEL)")
    p.add_argument("--int8", help="INT8 graph for --precision int8 (default: <stem>_int8.onnx beside MODEL)")
    p.add_argument("--tile", nargs="+", type=int, help="tile side(s) in input pixels, 0 = whole image (default: hanrt's)")
    p.add_argument("--margin", nargs="+", type=int, help="margin(s) in input pixels (default: hanrt's)")
    p.add_argument("--batch", nargs="+", type=int, help="tiles per backend call (default 1)")
    p.add_argument("--warmup", type=int, help="untimed iterations first (default 1)")
    p.add_argument("--iters", type=int, help="timed iterations (default 5)")
    p.add_argument("--max-seconds", type=float, help="stop a configuration's timed loop after this many seconds")
    p.add_argument("--baselines", help="comma list of torch-eager,torch-chop,torch-tile, or 'none' (default: all)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the PyTorch baselines run and which peak is measured (default auto)")
    p.add_argument("--no-peak", action="store_true", help="skip the device peak measurement")
    p.add_argument("--quality", help="hanrt eval summary.json: adds the quality-vs-speed Pareto chart")
    p.add_argument("--output", "-o", help="folder for bench.json, bench.csv, bench.md and PNG plots")
    p.add_argument("--no-plots", action="store_true", help="do not draw PNG plots")


def run(args: argparse.Namespace) -> int:
    from hanrt_bench.cli import run_bench_cli

    from ._common import triton_servers

    if args.server and not args.backend:
        args.backend = ["triton"]
    with triton_servers(args.server):
        return run_bench_cli(args)


COMMAND = Command("bench", "latency and throughput of hanrt against PyTorch baselines", configure, run, order=60)

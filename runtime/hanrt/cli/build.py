"""``hanrt build``: ONNX -> TensorRT engine on this GPU, cached by fingerprint (needs [trt])."""

from __future__ import annotations

import argparse
import sys

from . import Command

DESCRIPTION = """\
Build a TensorRT engine for this GPU from a hanrt ONNX graph (fp32, fp16 or int8 — precision
lives in the graph; the network is built strongly typed on TensorRT 10.x and 11.x).

Shapes are in input pixels. --tile HxW --batch N makes one optimization profile per tile
(batch 1..N, tuned for N); --min/--opt/--max NxHxW give a profile explicitly (repeat the three
for several profiles).

Each profile is built once: since TensorRT 10 the execution contexts of an engine share its
profiles, so any number of slots (batches in flight, e.g. hanrt upscale's default 2) run on one.

Engines are cached under --cache-dir (default $HANRT_CACHE_DIR or ~/.cache/hanrt/engines), keyed
by TensorRT version, GPU, ONNX sha256, precision recipe and shapes; a hit is reused. An engine for
another GPU or TensorRT is refused with the command that rebuilds it; --force rebuilds. Kernel
timings are kept in a timing cache per TensorRT version and GPU (timing-<TensorRT>-<GPU>-sm<CC>.cache
beside --timing-cache's name).

examples:
  hanrt build han_fp16.onnx --tile 128x128 --batch 4
  hanrt build han_fp16.onnx --min 1x64x64 --opt 4x128x128 --max 4x192x192 --output han.plan
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.onnx", help="ONNX graph exported by hanrt export")
    p.add_argument("--tile", action="append", default=[], metavar="HxW",
                   help="tile shape in input pixels (repeatable: one profile each)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="largest batch of tiles (default 1)")
    p.add_argument("--min", dest="min_shape", action="append", default=[], metavar="NxHxW",
                   help="explicit profile minimum (with --opt and --max)")
    p.add_argument("--opt", dest="opt_shape", action="append", default=[], metavar="NxHxW",
                   help="explicit profile optimum")
    p.add_argument("--max", dest="max_shape", action="append", default=[], metavar="NxHxW",
                   help="explicit profile maximum")
    p.add_argument("--opt-level", type=int, default=3, metavar="0-5",
                   help="TensorRT builder optimization level (default 3; higher builds longer)")
    p.add_argument("--workspace", default="1G", metavar="SIZE",
                   help="cap on TensorRT's workspace memory pool, e.g. 512M, 2G (default 1G; 8 GB "
                   "Jetson boards run out of memory while building without a cap)")
    p.add_argument("--timing-cache", metavar="FILE",
                   help="persistent timing cache base name; the file used adds the TensorRT version, GPU and "
                   "compute capability to it (default $HANRT_TIMING_CACHE, else <cache-dir>/timing.cache)")
    p.add_argument("--cache-dir", metavar="DIR", help="engine cache folder")
    p.add_argument("--output", "-o", metavar="PATH.plan", help="write the engine here instead of the cache")
    p.add_argument("--force", action="store_true", help="rebuild even if a matching engine exists")
    p.add_argument("--device", type=int, default=0, metavar="ID", help="CUDA device (default 0)")


def build_options(args: argparse.Namespace):
    """BuildOptions from parsed arguments (pure; raises UsageError on bad shapes)."""
    from pathlib import Path

    from ..backends.tensorrt import BuildOptions, Profile, default_cache_dir, parse_hw, parse_nhw, parse_size, \
        profiles_from_tiles
    from ..errors import UsageError

    explicit = (args.min_shape, args.opt_shape, args.max_shape)
    if any(explicit):
        if args.tile:
            raise UsageError("give either --tile/--batch or --min/--opt/--max, not both.")
        if not len(args.min_shape) == len(args.opt_shape) == len(args.max_shape):
            raise UsageError("--min, --opt and --max must be given the same number of times.")
        profiles = [Profile(parse_nhw(a), parse_nhw(b), parse_nhw(c)) for a, b, c in zip(*explicit)]
    else:
        if not args.tile:
            raise UsageError("give the tile shape: --tile HxW (and --batch N), or --min/--opt/--max NxHxW.")
        profiles = profiles_from_tiles([parse_hw(t) for t in args.tile], args.batch)
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    timing = args.timing_cache
    if timing is None:
        import os

        timing = os.environ.get("HANRT_TIMING_CACHE") or str(cache_dir / "timing.cache")
    return BuildOptions(profiles=tuple(profiles), opt_level=args.opt_level, workspace=parse_size(args.workspace),
                        timing_cache=timing), cache_dir


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..backends.tensorrt import build as trt_build
    from ..backends.tensorrt import get_or_build
    from ..model_info import read_model_info

    options, cache_dir = build_options(args)
    info = read_model_info(args.model)  # fail fast (and without TensorRT) on a non-hanrt graph
    if info.trt_buildable is False:  # recorded by hanrt export's TensorRT lint
        from ..errors import ModelError

        raise ModelError(f"{args.model} is not a graph for TensorRT: {info.trt_lint}. Export one with "
                         "symmetric INT8 activations (hanrt export --precision int8 --int8-activations int8) "
                         "or use the FP16/FP32 graph; hanrt lint MODEL lists the findings.")
    target = trt_build.running_target(args.device)
    print(f"target: {target.describe()}", file=sys.stderr)
    last: dict[str, int] = {}

    def progress(phase: str, step: int, steps: int) -> None:
        if steps and last.get(phase) != step:
            last[phase] = step
            print(f"\r  {phase[:48]:<48} {step}/{steps}", end="" if step < steps else "\n", file=sys.stderr,
                  flush=True)

    def builder(onnx_path, info, opts):
        return trt_build.build_plan(onnx_path, info, opts, progress=progress, device=args.device, target=target)

    res = get_or_build(args.model, options, target=target, builder=builder, cache_dir=cache_dir,
                       output=Path(args.output) if args.output else None, force=args.force)
    what = f"built in {res.build_s:.1f} s" if res.built else "reused (cache hit)"
    print(f"{res.plan} ({what}; key {res.sidecar.key}; "
          f"{'; '.join(p.describe() for p in res.sidecar.base_profiles)})")
    return 0


COMMAND = Command("build", "build (or reuse) a TensorRT engine for this GPU from an ONNX graph",
                  configure, run, order=20, description=DESCRIPTION)

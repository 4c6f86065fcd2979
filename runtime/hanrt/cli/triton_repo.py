"""``hanrt triton-repo DIR``: write a Triton Inference Server model repository for a model
(:mod:`hanrt.triton_repo`; runtime only: no torch, no tritonclient).

``hanrt export --checkpoint CKPT --output MODEL.onnx --triton-repo DIR`` (the host-side export
command) declares the same options with :func:`add_repo_options` and writes with :func:`write_repo`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import Command

__all__ = ["add_repo_options", "write_repo", "COMMAND"]


def add_repo_options(t: argparse.ArgumentParser | Any, *, model_help: str) -> None:
    """The repository options other than its folder (``--model`` with ``model_help``)."""
    t.add_argument("--model", "-m", metavar="MODEL", help=model_help)
    t.add_argument("--name", help="model name in the repository (default: the file's stem)")
    t.add_argument("--kind", choices=["gpu", "cpu"], default="gpu",
                   help="instance kind: gpu (KIND_GPU, default) or cpu (KIND_CPU; ONNX only)")
    t.add_argument("--instances", type=int, metavar="N",
                   help="model instances per GPU (gpu) or in all (cpu); default 2 per GPU, 1 on the CPU")
    t.add_argument("--gpus", metavar="IDS", help="comma list of GPU ids (default: every GPU)")
    t.add_argument("--max-batch", type=int, metavar="N",
                   help="max_batch_size in tiles (default 8 for ONNX; a plan's profile limit)")
    t.add_argument("--queue-delay-us", type=int, default=1000, metavar="US",
                   help="dynamic batching: longest wait to fill a batch, microseconds (default 1000)")
    t.add_argument("--no-trt-accelerator", action="store_true",
                   help="ONNX on GPUs: leave out ONNX Runtime's TensorRT accelerator")


def write_repo(args: argparse.Namespace, model: str) -> int:
    """Write the repository ``args.triton_repo`` for ``model`` from the options of :func:`add_repo_options`."""
    from ..errors import UsageError
    from ..triton_repo import RepoSettings, write_repository

    try:
        gpus = tuple(int(g) for g in args.gpus.split(",") if g.strip()) if args.gpus else ()
    except ValueError:
        raise UsageError(f"--gpus must be a comma list of GPU ids like 0,1, got {args.gpus!r}.") from None
    settings = RepoSettings(name=args.name, kind=args.kind, instances=args.instances, gpus=gpus,
                            max_batch=args.max_batch, queue_delay_us=args.queue_delay_us,
                            accelerator=not args.no_trt_accelerator)
    folder = write_repository(model, args.triton_repo, settings, overwrite=args.overwrite)
    if not args.quiet:
        print(f"hanrt: Triton model {folder.name!r} written to {folder}", file=sys.stderr)
    return 0


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("triton_repo", metavar="DIR",
                   help="the repository: DIR/NAME/config.pbtxt and DIR/NAME/1/model.onnx (or model.plan)")
    add_repo_options(p, model_help=".onnx graph, TensorRT plan built on the target, or a bundled model's name "
                     "(default: the bundled hanrt_x4)")
    p.add_argument("--overwrite", action="store_true", help="replace the model's files in the repository")


def run(args: argparse.Namespace) -> int:
    return write_repo(args, args.model or "hanrt_x4")


COMMAND = Command("triton-repo", "write a Triton Inference Server model repository for a model (no torch)",
                  configure, run, order=36)

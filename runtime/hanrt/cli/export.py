"""``hanrt export``: checkpoint -> ONNX (needs the [export] extra), and/or a model -> a Triton Inference
Server model repository (``--triton-repo``; runtime only: needs no torch, see :mod:`hanrt.triton_repo`).

With ``--triton-repo`` and ``--model`` (an ``.onnx`` graph, a TensorRT plan or a bundled model's name)
no torch is imported, so it works from a runtime-only install; with ``--checkpoint --output`` as
well, the exported graph goes into the repository.
"""

from __future__ import annotations

import argparse
import sys

from . import Command


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="checkpoint (.pt/.pth/.safetensors): HAN (official HAN_BIX*.pt or "
                   "hanrt's own), or any super-resolution architecture spandrel loads (Real-ESRGAN, SwinIR, HAT, "
                   "OmniSR, SPAN, DAT, RealCUGAN, RCAN...; needs pip install 'hanrt[export,spandrel]')")
    p.add_argument("--output", "-o", help="output .onnx path (written only if the parity gate and the TensorRT lint pass)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17; default 17)")
    p.add_argument("--io", choices=["float", "uint8"], default="float",
                   help="float: float32 NCHW 0..255 in/out; uint8: uint8 NHWC in/out with cast, "
                   "transpose, clamp and rounding inside the graph (default float)")
    p.add_argument("--csam", choices=["conv3d", "conv2d"], default="conv3d",
                   help="HAN only: channel-spatial attention as the official Conv3d or the exactly equal banded "
                   "Conv2d (faster in TensorRT; default conv3d)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32",
                   help="fp32 (default); fp16: FP16 mixed graph, the layer-attention energy and the "
                   "global pools kept FP32 (checked in real FP16 arithmetic); int8: explicit Q/DQ "
                   "INT8 convolutions calibrated on --calib photos, layer attention unquantized")
    p.add_argument("--calib", metavar="DIR",
                   help="folder of photos (jpg/png/...) for calibration: required for int8, used by "
                   "fp16 to check activation ranges (without it fp16 checks extreme inputs only). "
                   "Never calibrate on your evaluation photos")
    p.add_argument("--int8-activations", choices=["int8", "uint8"], default="int8",
                   help="int8 (default): symmetric INT8 activations, the Q/DQ form TensorRT accepts; uint8: "
                   "asymmetric UINT8, ONNX Runtime CPU's U8S8 path (TensorRT cannot build it: the export "
                   "warns and records that in the model's metadata instead of refusing)")
    p.add_argument("--calib-count", type=int, default=16, metavar="N",
                   help="number of calibration crops (default 16)")
    p.add_argument("--calib-size", type=int, default=48, metavar="PX",
                   help="side of the square calibration crops in input pixels (default 48)")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch parity gate")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")


    t = p.add_argument_group("Triton model repository (runtime only: no torch needed)")
    t.add_argument("--triton-repo", metavar="DIR",
                   help="write a Triton Inference Server model repository: DIR/NAME/config.pbtxt and "
                   "DIR/NAME/1/model.onnx (or model.plan)")
    t.add_argument("--model", "-m", metavar="MODEL",
                   help="with --triton-repo: .onnx graph, TensorRT plan built on the target, or a bundled "
                   "model's name (default: the exported --output, else the bundled hanrt_x4)")
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


def run_triton_repo(args: argparse.Namespace, model: str) -> int:
    """Write the Triton repository for ``model`` from the ``--triton-repo`` options (no torch)."""
    from hanrt.errors import UsageError
    from hanrt.triton_repo import RepoSettings, write_repository

    try:
        gpus = tuple(int(g) for g in args.gpus.split(",") if g.strip()) if args.gpus else ()
    except ValueError:
        raise UsageError(f"--gpus must be a comma list of GPU ids like 0,1, got {args.gpus!r}.") from None
    settings = RepoSettings(name=args.name, kind=args.kind, instances=args.instances, gpus=gpus,
                            max_batch=args.max_batch, queue_delay_us=args.queue_delay_us,
                            accelerator=not args.no_trt_accelerator)
    folder = write_repository(model, args.triton_repo, settings, overwrite=args.overwrite)
    if not getattr(args, "quiet", False):
        print(f"hanrt: Triton model {folder.name!r} written to {folder}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    from hanrt.errors import UsageError, require

    if args.triton_repo and not args.checkpoint:
        if args.output:
            raise UsageError("--output names the ONNX file exported from --checkpoint; with --triton-repo "
                             "alone pass the model with --model.")
        return run_triton_repo(args, args.model or "hanrt_x4")
    if not args.checkpoint or not args.output:
        raise UsageError("hanrt export needs --checkpoint CKPT.pt --output MODEL.onnx, or --triton-repo DIR "
                         "(with --model MODEL) to write a Triton model repository.")
    if args.model:
        raise UsageError("--model is the model for --triton-repo; with --checkpoint the exported --output goes "
                         "into the repository.")
    require("torch", extra="export", purpose="hanrt export")
    require("onnx", extra="export", purpose="hanrt export")
    from hanrt_export.cli import run_export

    rc = run_export(args)
    if rc == 0 and args.triton_repo:
        return run_triton_repo(args, args.output)
    return rc


COMMAND = Command("export", "export a HAN checkpoint to ONNX (with a parity gate); write a Triton model repository", configure, run, order=10)

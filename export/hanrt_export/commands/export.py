"""``hanrt export``: checkpoint -> ONNX (needs the [export] extra), and/or a model -> a Triton Inference
Server model repository (``--triton-repo``; needs no torch, see :mod:`hanrt.triton_repo`).

With ``--triton-repo`` and ``--model`` (an ``.onnx`` graph, a TensorRT plan or a bundled model's name)
no torch is imported (the runtime's own ``hanrt triton-repo`` does the same where this package is not
installed); with ``--checkpoint --output`` as well, the exported graph goes into the repository. Registered by hanrt_export (entry point ``export``); the checkpoint half runs
:func:`hanrt_export.cli.run_export` on an :class:`~hanrt_export.requests.ExportRequest`.
"""

from __future__ import annotations

import argparse

from hanrt.cli import Command, request_from
from hanrt.cli.triton_repo import add_repo_options, write_repo

from ..requests import ExportRequest

_D = ExportRequest


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="checkpoint (.pt/.pth/.safetensors): HAN (official HAN_BIX*.pt or "
                   "hanrt's own), or any super-resolution architecture spandrel loads (Real-ESRGAN, SwinIR, HAT, "
                   "OmniSR, SPAN, DAT, RealCUGAN, RCAN...; needs pip install 'hanrt[export,spandrel]')")
    p.add_argument("--output", "-o", help="output .onnx path (written only if the parity gate and the TensorRT lint pass)")
    p.add_argument("--opset", type=int, default=_D.opset, help="ONNX opset (>= 17; default %(default)s)")
    p.add_argument("--io", choices=["float", "uint8"], default=_D.io,
                   help="float: float32 NCHW 0..255 in/out; uint8: uint8 NHWC in/out with cast, "
                   "transpose, clamp and rounding inside the graph (default float)")
    p.add_argument("--csam", choices=["conv3d", "conv2d"], default=_D.csam,
                   help="HAN only: channel-spatial attention as the official Conv3d or the exactly equal banded "
                   "Conv2d (faster in TensorRT; default conv3d)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=_D.precision,
                   help="fp32 (default); fp16: FP16 mixed graph, the layer-attention energy and the "
                   "global pools kept FP32 (checked in real FP16 arithmetic); int8: explicit Q/DQ "
                   "INT8 convolutions calibrated on --calib photos, layer attention unquantized")
    p.add_argument("--calib", metavar="DIR",
                   help="folder of photos (jpg/png/...) for calibration: required for int8, used by "
                   "fp16 to check activation ranges (without it fp16 checks extreme inputs only). "
                   "Never calibrate on your evaluation photos")
    p.add_argument("--int8-activations", choices=["int8", "uint8"], default=_D.int8_activations,
                   help="int8 (default): symmetric INT8 activations, the Q/DQ form TensorRT accepts; uint8: "
                   "asymmetric UINT8, ONNX Runtime CPU's U8S8 path (TensorRT cannot build it: the export "
                   "warns and records that in the model's metadata instead of refusing)")
    p.add_argument("--calib-count", type=int, default=_D.calib_count, metavar="N",
                   help="number of calibration crops (default %(default)s)")
    p.add_argument("--calib-size", type=int, default=_D.calib_size, metavar="PX",
                   help="side of the square calibration crops in input pixels (default %(default)s)")
    p.add_argument("--fp16-retries", type=int, default=_D.fp16_retries, metavar="N",
                   help="fp16: when the gate fails, decide again keeping more nodes FP32 (range limit / 4), up to N "
                   "times (default %(default)s; the bundled models use 3)")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch parity gate")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    t = p.add_argument_group("Triton model repository (also: hanrt triton-repo, which needs no torch)")
    t.add_argument("--triton-repo", metavar="DIR",
                   help="write a Triton Inference Server model repository: DIR/NAME/config.pbtxt and "
                   "DIR/NAME/1/model.onnx (or model.plan)")
    add_repo_options(t, model_help="with --triton-repo: .onnx graph, TensorRT plan built on the target, or a "
                     "bundled model's name (default: the exported --output, else the bundled hanrt_x4)")


def run(args: argparse.Namespace) -> int:
    from hanrt.errors import UsageError, require

    if args.triton_repo and not args.checkpoint:
        if args.output:
            raise UsageError("--output names the ONNX file exported from --checkpoint; with --triton-repo "
                             "alone pass the model with --model.")
        return write_repo(args, args.model or "hanrt_x4")
    if not args.checkpoint or not args.output:
        raise UsageError("hanrt export needs --checkpoint CKPT.pt --output MODEL.onnx, or --triton-repo DIR "
                         "(with --model MODEL) to write a Triton model repository.")
    if args.model:
        raise UsageError("--model is the model for --triton-repo; with --checkpoint the exported --output goes "
                         "into the repository.")
    require("torch", extra="export", purpose="hanrt export")
    require("onnx", extra="export", purpose="hanrt export")
    from ..cli import run_export

    rc = run_export(request_from(ExportRequest, args, verify=not args.no_verify))
    if rc == 0 and args.triton_repo:
        return write_repo(args, args.output)
    return rc


COMMAND = Command("export", "export a HAN checkpoint to ONNX (with a parity gate); write a Triton model repository", configure, run, order=10)

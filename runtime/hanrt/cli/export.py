"""``hanrt export``: checkpoint -> ONNX (needs the [export] extra)."""

from __future__ import annotations

import argparse

from . import Command


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="HAN checkpoint (.pt): official HAN_BIX*.pt or hanrt's own")
    p.add_argument("--output", "-o", required=True,
                   help="output .onnx path (written only if the parity gate and the TensorRT lint pass)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17; default 17)")
    p.add_argument("--io", choices=["float", "uint8"], default="float",
                   help="float: float32 NCHW 0..255 in/out; uint8: uint8 NHWC in/out with cast, "
                   "transpose, clamp and rounding inside the graph (default float)")
    p.add_argument("--csam", choices=["conv3d", "conv2d"], default="conv3d",
                   help="channel-spatial attention as the official Conv3d or the exactly equal banded "
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


def run(args: argparse.Namespace) -> int:
    from hanrt.errors import require

    require("torch", extra="export", purpose="hanrt export")
    require("onnx", extra="export", purpose="hanrt export")
    from hanrt_export.cli import run_export

    return run_export(args)


COMMAND = Command("export", "export a HAN checkpoint to ONNX (with a parity gate)", configure, run, order=10)

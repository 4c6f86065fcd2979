"""``hanrt lint MODEL.onnx``: can TensorRT 10.3 build this graph? (needs onnx: the [export] extra).
Registered by hanrt_export (entry point ``lint``)."""

from __future__ import annotations

import argparse
import json

from hanrt.cli import Command


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.onnx", help="ONNX graph to check")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--all", action="store_true", help="list every finding (default: the first 20)")


def run(args: argparse.Namespace) -> int:
    from hanrt.errors import require

    require("onnx", extra="export", purpose="hanrt lint")
    from ..trt_lint import format_findings, lint

    findings = lint(args.model)
    if args.json:
        print(json.dumps([f.__dict__ for f in findings], indent=2))
    else:
        print(f"{args.model}: {format_findings(findings, limit=None if args.all else 20)}")
    return 1 if findings else 0


COMMAND = Command(
    "lint", "check an ONNX graph against TensorRT 10.3's ONNX operator table (exit 1 on findings)",
    configure, run, order=55,
    description="Check an ONNX graph against what TensorRT 10.3's ONNX parser accepts: the operator\n"
    "support table (op -> data types), UINT8 only as graph input/output through a Cast,\n"
    "DequantizeLinear on INT8/FP8/INT4 only, Q/DQ zero points all zero. No TensorRT needed.\n"
    "Exit status 0: no findings; 1: findings (each names node, op, tensor, rule and fix).\n"
    "A static check of documented limits, not a build.")

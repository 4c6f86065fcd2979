"""``hanrt info MODEL|ENGINE``: what a graph or engine is (stdlib + hanrt only: no onnx needed)."""

from __future__ import annotations

import argparse
import json

from . import Command


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL|ENGINE",
                   help=".onnx graph exported by hanrt, a TensorRT engine (.plan with its .plan.json sidecar), "
                        "or a bundled model's name (photo, document)")
    p.add_argument("--json", action="store_true", help="print the description as JSON")


def describe(path: str) -> dict:
    """The description of a model or engine as a dict (keys: kind, model_info, engine, file)."""
    from pathlib import Path

    from ..engine import read_sidecar, sidecar_path
    from ..errors import InputError
    from ..model_info import read_model_info
    from ..models import resolve_model

    p = resolve_model(path)
    if not p.exists():
        raise InputError(f"{str(p)!r} does not exist.")
    out: dict = {"file": str(p)}
    if p.suffix.lower() == ".onnx":
        out["kind"] = "onnx"
        out["model_info"] = json.loads(read_model_info(p).to_json())
        out["bytes"] = p.stat().st_size
        return out
    side = read_sidecar(p)
    out["kind"] = "tensorrt-engine"
    out["model_info"] = json.loads(side.model_info.to_json())
    out["engine"] = {"key": side.key, "fingerprint": side.fingerprint.to_json(), "io": list(side.io),
                     "plan_bytes": side.plan_bytes, "onnx_path": side.onnx_path, "build": side.build,
                     "sidecar": str(sidecar_path(p) if p.suffix.lower() != ".json" else p)}
    return out


def format_text(d: dict) -> str:
    mi = d["model_info"]
    hp = mi.get("hyperparameters") or {}
    lines = [f"{d['file']}: {'ONNX graph' if d['kind'] == 'onnx' else 'TensorRT engine'}"]
    lines.append(f"  scale        x{mi['scale']}")
    if hp:
        lines.append("  network      HAN " + ", ".join(f"{k}={v}" for k, v in sorted(hp.items())))
    layout = "NHWC" if mi.get("io") == "uint8" else "NCHW"
    dtype = "uint8" if mi.get("io") == "uint8" else "float32"
    lo, hi = mi.get("value_range", [0, 255])
    lines.append(f"  I/O          {mi.get('input_name', 'input')} -> {mi.get('output_name', 'output')}: "
                 f"{dtype} {layout}, values {lo:g}..{hi:g}, {mi.get('n_colors', 3)} channels")
    lines.append(f"  precision    {mi.get('precision', 'fp32')}")
    fp32 = mi.get("fp32_nodes") or []
    if mi.get("precision", "fp32") != "fp32":
        lines.append(f"  kept FP32    {len(fp32)} node(s)" + (":" if fp32 else ""))
        lines += [f"    {n}" for n in fp32]
        if mi.get("precision_notes"):
            lines.append(f"  notes        {mi['precision_notes']}")
    if mi.get("source"):
        lines.append(f"  source       {mi['source']} (sha256 {mi.get('source_sha256', '')[:16]})")
    if d["kind"] == "onnx":
        tb = mi.get("trt_buildable")
        lines.append("  TensorRT     " + ("not checked (exported before hanrt linted graphs; run hanrt lint)"
                                        if tb is None else mi.get("trt_lint") or ("lint clean" if tb else
                                                                                 "not buildable")))
    if d["kind"] != "onnx":
        e = d["engine"]
        fp = e["fingerprint"]
        lines.append(f"  built for    TensorRT {fp['tensorrt']} on {fp['gpu']!r} (compute capability "
                     f"{fp['compute_capability']})")
        lines.append(f"  fingerprint  key {e['key']}; ONNX sha256 {fp['onnx_sha256'][:16]}; opt level "
                     f"{fp['opt_level']}; workspace {fp['workspace'] >> 20} MiB")
        slots = int(fp.get("slots", 1))
        profiles = fp["profiles"][::slots] if slots > 1 else fp["profiles"]
        for pr in profiles:
            lines.append("  profile      min {} opt {} max {} (NxHxW)".format(
                *("x".join(map(str, pr[k])) for k in ("min", "opt", "max")))
                + (f", built {slots}x (one per slot)" if slots > 1 else ""))
        lines.append(f"  slots        {slots} (execution contexts that can run at once per profile)")
        for t in e["io"]:
            lines.append(f"  tensor       {t.get('mode')} {t.get('name')}: {t.get('dtype')} {t.get('layout')} "
                         f"{t.get('shape')}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    d = describe(args.model)
    print(json.dumps(d, indent=2, sort_keys=True) if args.json else format_text(d))
    return 0


COMMAND = Command("info", "describe a model or engine: scale, network, precision (FP32 nodes), I/O, fingerprint",
                  configure, run, order=60)

"""``hanrt info MODEL|ENGINE``: what a graph or engine is (stdlib + hanrt only: no onnx needed).
``hanrt info --backends``: every registered backend, its extra, the files it runs and whether it can
run here (its probe's answer, the same ``--backend auto`` walks)."""

from __future__ import annotations

import argparse
import json

from . import Command


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL|ENGINE", nargs="?",
                   help=".onnx graph exported by hanrt, a TensorRT engine (.plan with its .plan.json sidecar), "
                        "or a bundled model's name (photo, art, document)")
    p.add_argument("--backends", action="store_true",
                   help="list the registered backends: extra, files they run, available here or why not")
    p.add_argument("--json", action="store_true", help="print the description as JSON")


def backends_table() -> list[dict]:
    """Every registered backend in ``auto``'s order with its probe's answer."""
    from ..backends import specs

    out = []
    for s in specs():
        probe = s.probe()
        out.append({"name": s.name, "extra": s.extra, "files": [k.label for k in s.kinds],
                    "suffixes": [x for k in s.kinds for x in k.suffixes], "auto": s.auto, "priority": s.priority,
                    "available": probe.ok, "why": probe.why, "summary": s.summary})
    return out


def describe(path: str) -> dict:
    """The description of a model or engine as a dict (keys: kind, model_info, engine, file)."""
    from pathlib import Path

    from ..backends.base import ENGINE, ONNX, model_suffixes
    from ..backends.tensorrt.cache import read_sidecar, sidecar_path
    from ..errors import InputError
    from ..model_info import read_model_info
    from ..models import resolve_model

    p = resolve_model(path)
    if not p.exists():
        raise InputError(f"{str(p)!r} does not exist.")
    if p.is_dir():
        raise InputError(f"{str(p)!r} is a folder; give an .onnx graph or a TensorRT engine (.plan).")
    out: dict = {"file": str(p)}
    suffix = p.suffix.lower()
    if suffix in (".pt", ".pth", ".ckpt", ".bin", ".safetensors"):
        raise InputError(f"{str(p)!r} is a PyTorch checkpoint; hanrt info describes ONNX graphs and TensorRT "
                         f"engines. Export it first (hanrt export --checkpoint {p.name} --output {p.stem}.onnx), then run "
                         f"hanrt info {p.stem}.onnx.")
    if suffix not in (*model_suffixes((ONNX, ENGINE)), ".json"):
        raise InputError(f"{str(p)!r} is neither an .onnx graph nor a TensorRT engine (.plan/.engine with its "
                         f".json sidecar).")
    if suffix == ".onnx":
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
    from ..model_info import ModelInfo, describe_margin, resolve_margin

    mi = d["model_info"]
    hp = mi.get("hyperparameters") or {}
    lines = [f"{d['file']}: {'ONNX graph' if d['kind'] == 'onnx' else 'TensorRT engine'}"]
    arch = mi.get("arch", "HAN")
    lines.append(f"  arch         {arch}")
    lines.append(f"  scale        x{mi['scale']}")
    if hp:
        lines.append(f"  network      {arch} " + ", ".join(f"{k}={v}" for k, v in sorted(hp.items())))
    if int(mi.get("min_tile", 1)) > 1 or int(mi.get("tile_multiple", 1)) > 1:
        lines.append(f"  tiles        input sides >= {mi.get('min_tile', 1)}, multiples of {mi.get('tile_multiple', 1)}")
    layout = "NHWC" if mi.get("io") == "uint8" else "NCHW"
    dtype = "uint8" if mi.get("io") == "uint8" else "float32"
    lo, hi = mi.get("value_range", [0, 255])
    lines.append(f"  I/O          {mi.get('input_name', 'input')} -> {mi.get('output_name', 'output')}: "
                 f"{dtype} {layout}, values {lo:g}..{hi:g}, {mi.get('n_colors', 3)} channels"
                 + (f" (the network computes in {mi['network_range'][0]:g}..{mi['network_range'][1]:g}; the graph "
                    f"scales)" if mi.get("network_range") and list(mi["network_range"]) != [lo, hi] else ""))
    lines.append(f"  precision    {mi.get('precision', 'fp32')}")
    info = ModelInfo.from_json(json.dumps(mi))
    lines.append(f"  margin       {describe_margin(*resolve_margin(None, info), info.margin_note)}"
                 "; tiling context, --margin overrides")
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
                + (f", built {slots}x (an earlier hanrt's --slots {slots}; one is used)" if slots > 1 else ""))
        for t in e["io"]:
            lines.append(f"  tensor       {t.get('mode')} {t.get('name')}: {t.get('dtype')} {t.get('layout')} "
                         f"{t.get('shape')}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError

    if args.backends:
        rows = backends_table()
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                state = "available" if r["available"] else "not available"
                print(f"{r['name']:<10} {state}: {r['why']}\n{'':<10} runs {', '.join(r['files'])}"
                      f"{' (never picked by auto)' if not r['auto'] else ''}; pip install 'hanrt[{r['extra']}]'")
        if args.model is None:
            return 0
    if args.model is None:
        raise UsageError("hanrt info needs a MODEL or ENGINE (or --backends).")
    d = describe(args.model)
    print(json.dumps(d, indent=2, sort_keys=True) if args.json else format_text(d))
    return 0


COMMAND = Command("info", "describe a model or engine: scale, network, precision (FP32 nodes), I/O, fingerprint",
                  configure, run, order=60)

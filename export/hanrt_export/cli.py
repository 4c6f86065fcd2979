"""Implementations behind the host-side ``hanrt`` subcommands (export, train)."""

from __future__ import annotations

import argparse
import sys

from .checkpoint import load_checkpoint
from .to_onnx import ExportOptions, export_onnx


def run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hanrt.errors import OutputError

    out = Path(args.output)
    if out.exists() and not getattr(args, "overwrite", False):
        raise OutputError(f"{str(out)!r} exists; pass --overwrite to replace it.")
    ck = load_checkpoint(args.checkpoint, csam_conv2d=args.csam == "conv2d")
    opts = ExportOptions(opset=args.opset, io=args.io, verify=not args.no_verify)
    res = export_onnx(ck.model, out, options=opts, source_sha256=ck.sha256, source=ck.path,
                      overwrite=getattr(args, "overwrite", False))
    c = ck.config
    parity = ("skipped (--no-verify)" if res.max_abs_diff is None else
              f"max abs {res.max_abs_diff:.3g}, mean abs {res.mean_abs_diff:.3g} (0..255 scale)")
    print(f"exported HAN x{c.scale} ({c.n_resgroups}x{c.n_resblocks}x{c.n_feats}, io={args.io}, "
          f"csam={args.csam}, opset {args.opset}) to {res.path} in {res.export_s:.1f} s; "
          f"{res.nodes} nodes; parity {parity}", file=sys.stdout)
    return 0

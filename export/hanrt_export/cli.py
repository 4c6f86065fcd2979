"""The handler behind ``hanrt export --checkpoint`` (:mod:`hanrt_export.commands.export`): an
:class:`~hanrt_export.requests.ExportRequest` in, the graph written, one summary on stdout."""

from __future__ import annotations

import sys
from pathlib import Path

from hanrt.io.atomic import check_output_path

from .requests import ExportRequest
from .to_onnx import ExportOptions, export_onnx


def run_export(args: ExportRequest) -> int:
    out = Path(args.output)
    check_output_path(out, overwrite=args.overwrite)
    hook = _precision_hook(args)
    # --- model registry (issue 14): HAN strictly, other SR architectures through spandrel -------
    from .models import load_model

    ck = load_model(args.checkpoint, csam_conv2d=args.csam == "conv2d")
    if ck.arch != "HAN" and args.csam == "conv2d":
        from hanrt.errors import UsageError

        raise UsageError(f"--csam is HAN's channel-spatial attention; {args.checkpoint} is {ck.arch}: drop --csam.")
    if args.precision == "int8" and ck.int8:
        from hanrt.errors import UsageError

        raise UsageError(f"--precision int8 is not offered for {ck.arch}: {ck.int8}.")
    # --------------------------------------------------------------------------------------------
    u8_act = args.precision == "int8" and args.int8_activations == "uint8"
    opts = ExportOptions(opset=args.opset, io=args.io, verify=args.verify,
                         trt_lint="record" if u8_act else "refuse",
                         trt_note="--int8-activations uint8: asymmetric UINT8 activations for ONNX Runtime CPU"
                         if u8_act else "")
    res = export_onnx(ck, out, options=opts, source_sha256=ck.sha256, source=ck.path,
                      overwrite=args.overwrite, precision_hook=hook)
    parity = ("skipped (--no-verify)" if res.max_abs_diff is None else
              f"max abs {res.max_abs_diff:.3g}, mean abs {res.mean_abs_diff:.3g} (0..255 scale)")
    if ck.arch == "HAN":
        c = ck.config
        what = f"HAN x{c.scale} ({c.n_resgroups}x{c.n_resblocks}x{c.n_feats}, io={args.io}, csam={args.csam}"
    else:
        rules = (f", tiles >= {ck.min_tile} px, multiples of {ck.tile_multiple}"
                 if ck.min_tile > 1 or ck.tile_multiple > 1 else "")
        what = f"{ck.label} via spandrel ({ck.n_params / 1e6:.3g} M parameters, io={args.io}{rules}"
    print(f"exported {what}, opset {args.opset}) to {res.path} in {res.export_s:.1f} s; "
          f"{res.nodes} nodes; parity {parity}", file=sys.stdout)
    print(f"TensorRT: {res.info.trt_lint}", file=sys.stdout)
    if res.info.precision != "fp32":
        print(f"precision {res.info.precision}: {len(res.info.fp32_nodes)} node(s) kept FP32; "
              f"{res.info.precision_notes}", file=sys.stdout)
    return 0


def _precision_hook(args: ExportRequest):
    """Validate --precision/--calib and return the precision hook (None for fp32).

    Calibration photos are loaded here, before the export, so a bad folder fails fast.
    """
    import functools

    from hanrt.errors import UsageError

    from . import precision as P

    prec = args.precision
    calib_dir = args.calib
    if prec == "fp32":
        if calib_dir:
            raise UsageError("--calib is only used with --precision fp16 or int8.")
        return None
    count, size = args.calib_count, args.calib_size
    if getattr(args, "fp16_retries", 0) < 0:
        raise UsageError(f"--fp16-retries must be >= 0, got {args.fp16_retries}.")
    if count < 1 or size < 8:
        raise UsageError(f"--calib-count must be >= 1 and --calib-size >= 8, got {count} and {size}.")
    crops: list = []
    desc = ""
    if calib_dir:
        photos = P.load_photos(calib_dir)
        crops = P.photo_crops(photos, n=count, size=size)
        desc = f"{len(crops)} crops of {size}x{size} px from {len(photos)} photos in {Path(calib_dir).name}/"
    if prec == "int8":
        if not crops:
            raise UsageError("--precision int8 needs calibration photos: pass --calib DIR (a folder of photos).")
        return functools.partial(P.make_int8, calib=crops, calibration=desc,
                                 options=P.Int8Options(calib_size=size, calib_count=count,
                                                       activations=args.int8_activations))
    return functools.partial(P.make_fp16, calib=crops, calibration=desc,
                             options=P.Fp16Options(calib_size=size, calib_count=count, retries=args.fp16_retries))

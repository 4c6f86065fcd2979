"""``hanrt eval``: PSNR/SSIM by the super-resolution papers' protocol (Y channel, shave = scale).

Registered by hanrt_bench (entry point ``eval``). Declared with the stdlib only; ``run`` imports the
measuring modules lazily.
"""

from __future__ import annotations

import argparse

from hanrt.backends import BACKENDS
from hanrt.cli import Command, request_from
from hanrt.cli._common import SERVER_HELP

from ..requests import EvalRequest

_EPILOG = """\
DATASET: E1 (the built-in held-out photos; needs scikit-image), a folder of HR images (Set5/Set14/
B100/Urban100/Manga109 as shipped), a folder with HR/ and LR_bicubic/X4/ (DIV2K style), or
Huang's image_SRF_4/ with *_HR.png/*_LR.png. LR is made with Pillow's bicubic when not shipped.

--task binarize DATASET: a folder with images/ (pages) and gt/ (ink masks, ink dark, same names);
each page is shrunk 4x with bicubic, enlarged back by bicubic and by each model, binarized (Otsu,
Sauvola) and scored against the mask (F-measure, pseudo-F-measure, PSNR, DRD), the page at full
resolution being the upper bound. Make an example: python -m hanrt_bench.docpages pages/ --masks

examples:
  hanrt eval --task binarize pages/ --models photo,document -o eval_pages/
  hanrt eval E1 --model model.onnx --output eval/
  hanrt eval Set14/ --model model.onnx --fp16 model_fp16.onnx --int8 model_int8.onnx -o eval/"""


def configure(p: argparse.ArgumentParser) -> None:
    p.epilog = _EPILOG
    p.add_argument("dataset", help="E1 or a dataset folder (see below)")
    p.add_argument("--task", choices=["sr", "binarize"], default="sr",
                   help="sr (default): PSNR/SSIM of the upscaled images; binarize: ink masks from the "
                        "upscaled pages against ground truth (see below)")
    p.add_argument("--models", help="--task binarize: comma list of models (names or files; default: "
                                    "every bundled model); a trailing x2|x4|x8 adds that many self-ensemble "
                                    "passes (e.g. 'photo,document,document x8')")
    p.add_argument("--model", help=".onnx, .plan or .pt, or a bundled model's name: photo (default), art, document")
    p.add_argument("--fp16", help="FP16 graph for the fp16 columns (default: <stem>_fp16.onnx beside the model)")
    p.add_argument("--int8", help="INT8 graph for the int8 columns (default: <stem>_int8.onnx beside the model)")
    p.add_argument("--server", action="append", metavar="HOST:PORT", help=SERVER_HELP + " (MODEL's stem names the model there)")
    p.add_argument("--backend", default=EvalRequest.backend, choices=BACKENDS,
                   help="hanrt backend (default auto)")
    p.add_argument("--tile", type=int, help="tile side for the tiled columns, input pixels (default: hanrt's)")
    p.add_argument("--margin", type=int, help="margin for the tiled columns, input pixels (default: hanrt's)")
    p.add_argument("--batch", type=int, default=EvalRequest.batch, help="tiles per backend call (default 1)")
    p.add_argument("--columns", help="comma list among '<fp32|fp16|int8> <whole|tiled> [x2|x4|x8]' (default: every precision "
                   "found, whole and tiled); a trailing xN is a self-ensemble of N flipped/transposed passes, "
                   "averaged (e.g. 'fp32 whole,fp32 whole x8')")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--output", "-o", help="folder for per_image.csv, summary.json/.md and crops/*.png")
    p.add_argument("--no-crops", action="store_true", help="do not write crop sheets")


def run(args: argparse.Namespace) -> int:
    from hanrt.cli._common import triton_servers

    from ..cli import run_eval_cli

    req = request_from(EvalRequest, args, backend="triton" if args.server and args.backend == "auto" else args.backend)
    with triton_servers(args.server):
        if req.task == "binarize":
            from ..cli import run_binarize_cli

            return run_binarize_cli(req)
        return run_eval_cli(req)


COMMAND = Command("eval", "PSNR/SSIM on a dataset: bicubic, FP32/FP16/INT8, tiled and whole", configure, run, order=61)

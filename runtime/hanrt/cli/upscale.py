"""``hanrt upscale INPUT... --output PATH``: upscale image files (and videos, see :func:`dispatch`).

Inputs are files, folders (their image files, not recursive) and glob patterns. One input file
with an output path that has an image suffix writes that file; otherwise ``--output`` is a folder
(created if needed) and every result keeps its input's file name. Each file's error is reported
on its own line and counted; the batch goes on; the exit code is nonzero when any file failed
(the code of the first failure's error class, see :mod:`hanrt.errors`).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

from ..io.images import IMAGE_SUFFIXES  # tier 0 (numpy; Pillow only when reading or writing)
from ..io.video import VIDEO_SUFFIXES  # PyAV is imported only when a video is opened
from . import Command
from ._common import add_model_options, upscaler_from_args

DESCRIPTION = """\
Upscale images with HAN (4x). INPUT: image files, folders (their images) or glob patterns.

examples:
  hanrt upscale photo.jpg --output photo_x4.png
  hanrt upscale shots/ 'more/*.png' --output out/ --backend ort-cpu --tile 128 --margin 8
  hanrt upscale photo.png --output out/ --compare       # also out/photo_compare.png
  hanrt upscale photo.png --output out/ --timings       # where the time goes, per image

--tile N is the network input side in pixels, margin included; a tile at least as large as the
image (or --tile 0) runs the whole image at once (more memory, no seams).
"""


MODEL_HELP = {
    "model": "model: .onnx, .plan/.engine (TensorRT) or .pt (PyTorch); or a bundled model: photo (default), document",
    "backend": "inference backend (default auto: picks from the model and what is installed, and says why)",
    "tile": "tile side in input pixels incl. margin (default 128; 0 or >= image: whole image)",
    "margin": "context pixels around each tile, cropped after upscaling (default 8)",
    "batch": "tiles per backend call (default 1)",
    "threads": "CPU threads for CPU backends (default: all)",
    "device": "CUDA device (GPU backends; default 0)",
    "fp16": "torch backend on CUDA: half precision",
}


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("--output", "-o", required=True, metavar="PATH",
                   help="output file (one input) or folder (created if missing; names are kept)")
    add_model_options(p, MODEL_HELP, metavar={"tile": "N", "margin": "N", "batch": "N", "threads": "N", "device": "ID"})
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--compare", action="store_true",
                   help="also write NAME_compare.png: bicubic | hanrt side by side, with a zoomed crop")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse inputs above N pixels (decompression-bomb guard; default 89478485; 0: no limit)")
    p.add_argument("--quality", type=int, default=95, metavar="Q", help="JPEG/WebP quality (default 95)")
    p.add_argument("--timings", action="store_true",
                   help="print one line per image to stderr: ms per upscale stage (prepare, gather, compute, "
                        "stitch, finish) and its share of the upscale call, plus read/write ms (images only)")


# --- input expansion and output naming ---------------------------------------------------------

def expand_inputs(items: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files from INPUT arguments, in order, without duplicates; plus ``(arg, why)`` for misses."""
    files: list[Path] = []
    misses: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(p: Path) -> None:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            files.append(p)

    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(c for c in p.iterdir()
                           if c.is_file() and (c.suffix.lower() in IMAGE_SUFFIXES or c.suffix.lower() in VIDEO_SUFFIXES))
            if not found:
                misses.append((item, "folder holds no image files"))
            for c in found:
                add(c)
        elif p.exists():
            add(p)
        elif glob.has_magic(item):
            found = sorted(Path(g) for g in glob.glob(item) if Path(g).is_file())
            if not found:
                misses.append((item, "pattern matches no files"))
            for c in found:
                add(c)
        else:
            misses.append((item, "does not exist"))
    return files, misses


def output_paths(files: list[Path], output: str, n_args: int) -> tuple[dict[Path, Path], Path | None]:
    """Map each input to its output path. Returns ``(mapping, folder_to_create_or_None)``."""
    out = Path(output)
    # one input file and an output with a suffix (that is not an existing folder): a file
    single = len(files) == 1 and n_args == 1 and not out.is_dir() and bool(out.suffix)
    if single:
        return {files[0]: out}, None
    if not out.is_dir() and out.suffix.lower() in IMAGE_SUFFIXES and (len(files) > 1 or n_args > 1):
        from ..errors import UsageError

        raise UsageError(f"{len(files)} inputs need an output folder, but --output {output!r} names an image file.")
    return {f: out / f.name for f in files}, out


def compare_path(dst: Path) -> Path:
    """Where ``--compare`` writes the side-by-side picture for output ``dst``."""
    return dst.with_name(f"{dst.stem}_compare.png")


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


# --- running --------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    return dispatch(args)


def dispatch(args: argparse.Namespace) -> int:
    """Split the inputs into images and videos (by suffix) and run each kind: videos go to the
    pipelined runtime (:mod:`hanrt.cli.stream`, loaded lazily), images to :func:`upscale_images`."""
    from ..errors import InputError

    files, misses = expand_inputs(args.inputs)
    if not files and misses:
        raise InputError("; ".join(f"{a!r}: {why}" for a, why in misses))
    videos = [f for f in files if is_video(f)]
    images = [f for f in files if not is_video(f)]
    if videos:  # the pipelined runtime (hanrt.cli.stream) takes the videos, then the images
        return __import__("hanrt.cli.stream", fromlist=["_"]).run_upscale_videos(args, videos, images, misses, upscale_images)
    return upscale_images(args, images, misses)


def _progress_factory(quiet: bool):
    """tqdm progress bars when tqdm is installed and not ``--quiet``; ``None`` (silent) otherwise."""
    if quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


def upscale_images(args: argparse.Namespace, files: list[Path], misses: list[tuple[str, str]]) -> int:
    from ..errors import HanrtError, InputError, OutputError, UsageError
    from ..io.images import DEFAULT_MAX_PIXELS, format_for, read_image, write_image

    mapping, folder = output_paths(files, args.output, len(args.inputs))
    if args.tile is not None and args.tile < 0:
        raise UsageError(f"--tile must be >= 0, got {args.tile}.")
    names: dict[Path, Path] = {}
    errors: list[tuple[str, HanrtError]] = [(a, _miss_error(a, why)) for a, why in misses]
    todo: list[tuple[Path, Path]] = []
    for src, dst in mapping.items():
        if dst in names:
            errors.append((str(src), OutputError(f"{dst.name} would also be written from {names[dst]}; rename one input.")))
            continue
        names[dst] = src
        try:
            format_for(dst)  # an unknown output suffix fails this file only, before any work
        except UsageError as e:
            errors.append((str(src), e))
            continue
        exists = [d for d in ([dst, compare_path(dst)] if args.compare else [dst]) if d.exists()]
        if exists and not args.overwrite:
            errors.append((str(src), OutputError(f"{str(exists[0])!r} exists; pass --overwrite to replace it.")))
            continue
        todo.append((src, dst))
    for src, e in errors:
        print(f"hanrt: error: {src}: {e}", file=sys.stderr)
    if folder is not None and todo:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {str(folder)!r}: {exc.strerror or exc}.") from None
    max_pixels = DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels
    tqdm = _progress_factory(getattr(args, "quiet", False))
    ok = 0
    t0 = time.perf_counter()
    if todo:
        with upscaler_from_args(args) as up:
            if args.backend == "auto" and not getattr(args, "quiet", False) and up.model_path is not None:
                from ..backends import choose_backend

                why = choose_backend(up.model_path, "auto").reason
                print(f"hanrt: backend {up.backend.describe()}: {why}", file=sys.stderr)
            bar = tqdm(total=len(todo), unit="file", desc="upscale", disable=None) if (tqdm and len(todo) > 1) else None
            for src, dst in todo:
                try:
                    line = _one(up, src, dst, args, max_pixels, tqdm, read_image, write_image)
                    ok += 1
                    if line:
                        if bar is not None:
                            bar.write(line, file=sys.stderr)
                        else:
                            print(line, file=sys.stderr)
                except (HanrtError, MemoryError) as e:
                    if isinstance(e, MemoryError):
                        e = InputError(f"not enough memory to upscale it ({e or 'MemoryError'}); use a smaller --tile or a smaller image.")
                    errors.append((str(src), e))
                    msg = f"hanrt: error: {src}: {e}"
                    if bar is not None:
                        bar.write(msg, file=sys.stderr)
                    else:
                        print(msg, file=sys.stderr)
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
    dt = time.perf_counter() - t0
    if not getattr(args, "quiet", False) and (len(todo) > 1 or errors):
        print(f"hanrt: {ok} upscaled, {len(errors)} failed ({dt:.1f} s)", file=sys.stderr)
    if errors:
        return errors[0][1].exit_code
    return 0


def _miss_error(arg: str, why: str):
    from ..errors import InputError

    return InputError(f"{arg!r} {why}.")


def format_timings(name: str, total_s: float, stages: dict[str, float], **extra_s: float) -> str:
    """The ``--timings`` line: ``hanrt: timings NAME: upscale T ms = stage ms (share %), ...``.

    ``total_s``: the upscale call's wall time; ``stages``: seconds per stage (from
    ``Upscaler.upscale(..., timings=)``), each shown with its share of ``total_s``; what the
    stages leave of it is shown as ``other``. ``extra_s``: further named times (read, write)
    outside the upscale call, in ms after a semicolon."""
    def pct(v: float) -> str:
        return f"{100 * v / total_s:.0f}%" if total_s > 0 else "-"

    shown = {**stages, "other": max(0.0, total_s - sum(stages.values()))}
    parts = [f"{k} {v * 1e3:.1f} ms ({pct(v)})" for k, v in shown.items()]
    line = f"hanrt: timings {name}: upscale {total_s * 1e3:.1f} ms = " + ", ".join(parts)
    if extra_s:
        line += "; " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in extra_s.items())
    return line


def _one(up, src: Path, dst: Path, args, max_pixels: int, tqdm, read_image, write_image) -> str | None:
    """Upscale one image file; return the ``--timings`` line (``None`` without ``--timings``)."""
    timed = getattr(args, "timings", False)
    t0 = time.perf_counter()
    img = read_image(src, max_pixels=max_pixels)
    t_read = time.perf_counter() - t0
    progress = None
    bar = None
    if tqdm is not None:
        plan = up.plan(img.pixels.shape[0], img.pixels.shape[1])
        if plan.count > 1:
            bar = tqdm(total=plan.count, unit="tile", desc=src.name, leave=False, disable=None)

            def progress(done: int, total: int) -> None:
                bar.update(done - bar.n)
    stages: dict[str, float] | None = {} if timed else None
    try:
        t0 = time.perf_counter()
        result = up.upscale(img.pixels, progress=progress, timings=stages)
        t_up = time.perf_counter() - t0
    finally:
        if bar is not None:
            bar.close()
    t0 = time.perf_counter()
    write_image(dst, result, icc_profile=img.icc_profile, overwrite=args.overwrite, quality=args.quality)
    t_write = time.perf_counter() - t0
    if args.compare:
        write_compare(compare_path(dst), img.pixels, result, up.scale, overwrite=args.overwrite)
    if stages is None:
        return None
    return format_timings(src.name, t_up, stages, read=t_read, write=t_write)


def write_compare(path: Path, lr, sr, scale: int, *, overwrite: bool, zoom_crop: int = 256) -> None:
    """Write a side-by-side picture: top, the whole image (bicubic | hanrt) shrunk to at most 1024
    pixels wide each; bottom, a centre crop of ``zoom_crop`` output pixels from both, 2x nearest."""
    import numpy as np
    from PIL import Image, ImageDraw

    from ..io.images import to_rgb8, write_image

    small = Image.fromarray(to_rgb8(lr))
    big = Image.fromarray(to_rgb8(sr))
    W, H = big.size
    bic = small.resize((W, H), Image.BICUBIC)
    f = min(1.0, 1024 / W)
    tw, th = max(1, round(W * f)), max(1, round(H * f))
    c = min(zoom_crop, W, H)
    x0, y0 = (W - c) // 2, (H - c) // 2
    z = 2
    canvas = Image.new("RGB", (max(2 * tw, 2 * c * z) + 8, th + c * z + 8 + 20), (40, 40, 40))
    canvas.paste(bic.resize((tw, th), Image.LANCZOS), (0, 20))
    canvas.paste(big.resize((tw, th), Image.LANCZOS), (tw + 8, 20))
    box = (x0, y0, x0 + c, y0 + c)
    canvas.paste(bic.crop(box).resize((c * z, c * z), Image.NEAREST), (0, th + 28))
    canvas.paste(big.crop(box).resize((c * z, c * z), Image.NEAREST), (c * z + 8, th + 28))
    d = ImageDraw.Draw(canvas)
    d.text((4, 4), "bicubic", fill=(255, 255, 255))
    d.text((tw + 12, 4), f"hanrt x{scale}", fill=(255, 255, 255))
    write_image(path, np.asarray(canvas), overwrite=overwrite)


COMMAND = Command("upscale", "upscale images (4x) with HAN", configure, run, order=20, description=DESCRIPTION)

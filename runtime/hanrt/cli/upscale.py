"""``hanrt upscale INPUT... --output PATH``: upscale image files (and videos, see :func:`dispatch`).

Inputs are files, folders (their image files, not recursive) and glob patterns. One input file
with an output path that has an image suffix writes that file; otherwise ``--output`` is a folder
(created if needed) and every result keeps its input's file name. Each file's error is reported
on its own line and counted; the batch goes on; the exit code is nonzero when any file failed
(the code of the first failure's error class, see :mod:`hanrt.errors`).

Before any work: options are range-checked, an output that is the input is refused, every
output's format is checked against its input (an animated GIF/WebP/PNG is upscaled frame by frame
and written as an animation: .gif, .webp or .png), and the memory each image needs is estimated
(:mod:`hanrt.resources`) and refused when it exceeds what is available. Outputs are created
without replacing a file that appears meanwhile (unless ``--overwrite``). SIGINT and SIGTERM stop
the batch: the file in flight is not written (no temporary file stays), the count of files done
is printed, and the exit code is 130 / 143.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

from ..io.images import IMAGE_SUFFIXES, list_images  # tier 0 (numpy; Pillow only when reading or writing)
from ..io.kinds import VIDEO_SUFFIXES  # hanrt.io.video (and PyAV) only when a video is opened
from . import Command
from ._common import add_model_options, upscaler_from_args

DESCRIPTION = """\
Upscale images with HAN (4x). INPUT: image files, folders (their images) or glob patterns.

examples:
  hanrt upscale photo.jpg --output photo_x4.png
  hanrt upscale shots/ 'more/*.png' --output out/ --backend ort-cpu --tile 192 --margin 8
  hanrt upscale photo.png --output out/ --compare       # also out/photo_compare.png
  hanrt upscale photo.png --output out/ --timings       # where the time goes, per image

--tile auto (the default) covers each image with an exact grid of tiles at the backend's fastest
size within its memory budget; --tile N asks for tiles of at most N pixels a side, margin
included; a tile at least as large as the image (or --tile 0) runs the whole image at once (more
memory, no seams). The margin (context around each tile) is the one measured for the model and
recorded in it (hanrt info MODEL shows it), else 8; --margin N overrides both.
"""


MODEL_HELP = {
    "model": "model: .onnx, .plan/.engine (TensorRT) or .pt (PyTorch); or a bundled model: photo (default), art, document",
    "backend": "inference backend (default auto: picks from the model and what is installed, and says why)",
    "tile": "largest tile side in input pixels incl. margin (default auto: an exact grid at the backend's "
            "fastest tile size; 0 or >= image: whole image)",
    "batch": "tiles per backend call (default 1)",
    "threads": "CPU threads for CPU backends (default 0: all; at most 4 x the CPUs)",
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
    p.add_argument("--quality", type=int, default=95, metavar="Q", help="JPEG/WebP quality, 1..100 (default 95)")
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
            found = list_images(p, also=VIDEO_SUFFIXES)
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
    """A video for the pipelined runtime (a GIF is an image here: read whole, written as an animation)."""
    suf = path.suffix.lower()
    return suf in VIDEO_SUFFIXES and suf not in IMAGE_SUFFIXES


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``b`` is the file ``a`` (the same path after resolving, or the same inode)."""
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        return os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def make_output_folder(folder: Path) -> Path | None:
    """Create ``folder`` (and its parents) if missing; return it when this call created it (so a
    run that writes nothing can remove it again), else ``None``. OutputError when it cannot be a
    folder."""
    from ..errors import OutputError

    if folder.is_dir():
        return None
    if folder.exists():
        raise OutputError(f"--output {str(folder)!r} exists and is not a folder; give a folder (or, for "
                          f"one input, a file name with an image suffix).")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {str(folder)!r}: {exc.strerror or exc}.") from None
    return folder


def remove_if_empty(folder: Path | None) -> None:
    """Remove ``folder`` if it holds nothing (a failed run leaves no empty output folder)."""
    if folder is None:
        return
    try:
        folder.rmdir()
    except OSError:
        pass


def check_options(args: argparse.Namespace) -> None:
    """Range checks of ``hanrt upscale``'s options (UsageError), before anything is read."""
    from ..errors import UsageError
    from ._common import validate_model_options

    validate_model_options(args)
    mp = getattr(args, "max_pixels", None)
    if mp is not None and mp < 0:
        raise UsageError(f"--max-pixels must be >= 0 (0: no limit), got {mp}.")
    q = getattr(args, "quality", 95)
    if q is not None and not 1 <= q <= 100:
        raise UsageError(f"--quality must be 1..100, got {q}.")


# --- running --------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    return dispatch(args)


def dispatch(args: argparse.Namespace) -> int:
    """Split the inputs into images and videos (by suffix) and run each kind: videos go to the
    pipelined runtime (:mod:`hanrt.cli.stream`, loaded lazily), images to :func:`upscale_images`."""
    from ..errors import InputError

    check_options(args)
    files, misses = expand_inputs(args.inputs)
    if not files and misses:
        raise InputError("; ".join(f"{a!r}: {why}" for a, why in misses))
    videos = [f for f in files if is_video(f)]
    images = [f for f in files if not is_video(f)]
    if videos:  # the pipelined runtime (hanrt.cli.stream) takes the videos, then the images
        return __import__("hanrt.cli.stream", fromlist=["_"]).run_upscale_videos(args, videos, images, misses, upscale_images)
    return upscale_images(args, images, misses)


def _progress_factory(quiet: bool):
    """tqdm progress bars when tqdm is installed and not ``--quiet``; ``None`` (silent) otherwise.
    tqdm itself is imported by the first bar (most one-tile images never need one)."""
    if quiet:
        return None
    import importlib.util

    if importlib.util.find_spec("tqdm") is None:
        return None

    def bar(*a, **kw):
        from tqdm import tqdm

        return tqdm(*a, **kw)

    return bar


def _preflight(src: Path, dst: Path, args: argparse.Namespace) -> int:
    """Checks of one input/output pair before any work; returns the input's frame count."""
    from ..errors import InputError, OutputError, UsageError
    from ..io.images import check_animation_output, format_for, frame_count

    if same_file(src, dst) or (args.compare and same_file(src, compare_path(dst))):
        raise OutputError(f"the output {str(dst)!r} is the input; hanrt never writes over its input. "
                          f"Choose another --output.")
    try:
        format_for(dst)  # an unknown output suffix fails this file only, before any work
    except UsageError:
        if src.suffix.lower() not in IMAGE_SUFFIXES and not _looks_like_image(src):
            raise InputError(f"{str(src)!r} is not an image file hanrt reads (PNG, JPEG, WebP, TIFF, BMP, "
                             f"GIF).") from None
        raise
    frames = frame_count(src)
    if frames > 1:
        check_animation_output(src, dst, frames)
    exists = [d for d in ([dst, compare_path(dst)] if args.compare else [dst]) if d.exists()]
    if exists and not args.overwrite:
        raise OutputError(f"{str(exists[0])!r} exists; pass --overwrite to replace it.")
    if args.compare and frames > 1:
        raise UsageError(f"--compare draws stills; {str(src)!r} is an animation ({frames} frames).")
    return frames


def _looks_like_image(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path):
            return True
    except Exception:  # noqa: BLE001 - anything Pillow cannot open is "not an image" here
        return False


def upscale_images(args: argparse.Namespace, files: list[Path], misses: list[tuple[str, str]]) -> int:
    from ..errors import HanrtError, InputError, OutputError
    from ..io.images import DEFAULT_MAX_PIXELS, read_image, write_image

    check_options(args)
    mapping, folder = output_paths(files, args.output, len(args.inputs))
    quiet = getattr(args, "quiet", False)
    names: dict[Path, Path] = {}
    errors: list[tuple[str, HanrtError]] = [(a, _miss_error(a, why)) for a, why in misses]
    todo: list[tuple[Path, Path, int]] = []
    for src, dst in mapping.items():
        if dst in names:
            errors.append((str(src), OutputError(f"{dst.name} would also be written from {names[dst]}; rename one input.")))
            continue
        names[dst] = src
        try:
            todo.append((src, dst, _preflight(src, dst, args)))
        except HanrtError as e:
            errors.append((str(src), e))
    for src, e in errors:
        print(f"hanrt: error: {src}: {e}", file=sys.stderr)
    max_pixels = DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels
    tqdm = _progress_factory(quiet)
    ok = 0
    t0 = time.perf_counter()
    current: Path | None = None  # the file in flight
    created: Path | None = None
    try:
        if folder is not None and todo:
            created = make_output_folder(folder)
        if todo:
            with upscaler_from_args(args) as up:
                if args.backend == "auto" and not quiet and up.model_path is not None:
                    from ..backends import choose_backend

                    why = choose_backend(up.model_path, "auto").reason
                    print(f"hanrt: backend {up.backend.describe()}: {why}", file=sys.stderr)
                bar = tqdm(total=len(todo), unit="file", desc="upscale", disable=None) if (tqdm and len(todo) > 1) else None

                def say(msg: str) -> None:
                    if bar is not None:
                        bar.write(msg, file=sys.stderr)
                    else:
                        print(msg, file=sys.stderr)

                for src, dst, frames in todo:
                    current = src
                    try:
                        lines = _one(up, src, dst, args, max_pixels, tqdm, read_image, write_image, frames)
                        ok += 1
                        for line in lines if not quiet else lines[1:]:
                            say(line)
                    except (HanrtError, MemoryError) as e:
                        if isinstance(e, MemoryError):
                            e = InputError(f"not enough memory to upscale it ({e or 'MemoryError'}); use a smaller --tile or a smaller image.")
                        errors.append((str(src), e))
                        say(f"hanrt: error: {src}: {e}")
                    current = None
                    if bar is not None:
                        bar.update(1)
                if bar is not None:
                    bar.close()
    except KeyboardInterrupt as exc:
        import signal

        name = signal.Signals(getattr(exc, "signum", signal.SIGINT)).name
        inflight = f"; {current} was not written" if current is not None else ""
        print(f"hanrt: stopped by {name}: {ok} of {len(todo)} files upscaled{inflight}", file=sys.stderr)
        raise
    finally:
        remove_if_empty(created)
    dt = time.perf_counter() - t0
    if not quiet and (len(todo) > 1 or errors):
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


def check_run_memory(up, src: Path, shape: tuple[int, ...], itemsize: int, frames: int = 1,
                     in_flight: int = 1) -> None:
    """Refuse (UsageError) an image (or ``frames`` images held at once: an animation, a video's queues)
    whose estimated memory need exceeds the available memory (:mod:`hanrt.resources`). ``in_flight``:
    images inside the Upscaler at once (each has its own self-ensemble sum)."""
    from ..resources import check_memory, estimate_run_bytes

    h, w = shape[:2]
    plan = up.plan(h, w)
    need = estimate_run_bytes(up.info, height=h, width=w, channels=shape[2] if len(shape) > 2 else 1,
                              itemsize=itemsize, tile_h=plan.tile_h, tile_w=plan.tile_w, batch=up.batch,
                              frames=frames, on_host=getattr(up.backend, "name", "") in ("ort-cpu", "torch-cpu"),
                              ensemble=getattr(up, "ensemble", 1), in_flight=in_flight)
    check_memory(need, what=f"{src.name} ({w}x{h}{f', {frames} frames' if frames > 1 else ''}, "
                 f"tile {plan.tile_w}x{plan.tile_h})", whole_image=plan.whole_image)


def _one(up, src: Path, dst: Path, args, max_pixels: int, tqdm, read_image, write_image,
         frames: int = 1) -> list[str]:
    """Upscale one image file (an animation when ``frames`` > 1); return the lines to show: what was
    written, then the ``--timings`` line if asked."""
    if frames > 1:
        return _one_animation(up, src, dst, args, max_pixels)
    timed = getattr(args, "timings", False)
    t0 = time.perf_counter()
    img = read_image(src, max_pixels=max_pixels)
    t_read = time.perf_counter() - t0
    check_run_memory(up, src, img.pixels.shape, img.pixels.dtype.itemsize)
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
    lines = [f"hanrt: wrote {dst} ({result.shape[1]}x{result.shape[0]})"]
    if args.compare:
        write_compare(compare_path(dst), img.pixels, result, up.scale, overwrite=args.overwrite)
        lines[0] += f" and {compare_path(dst)}"
    if stages is not None:
        lines.append(format_timings(src.name, t_up, stages, read=t_read, write=t_write))
    return lines


def _one_animation(up, src: Path, dst: Path, args, max_pixels: int) -> list[str]:
    """Upscale every frame of an animated GIF/WebP/PNG and write the animation (same durations and
    loop count) to ``dst`` (.gif, .webp or .png)."""
    from ..io.images import Animation, read_animation, write_animation

    anim = read_animation(src, max_pixels=max_pixels)
    check_run_memory(up, src, anim.frames[0].shape, 1, frames=len(anim.frames))
    out = Animation([up.upscale(f) for f in anim.frames], anim.durations, anim.loop, anim.source)
    write_animation(dst, out, overwrite=args.overwrite, quality=args.quality)
    h, w = out.frames[0].shape[:2]
    return [f"hanrt: wrote {dst} ({w}x{h}, {len(out.frames)} frames)"]


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

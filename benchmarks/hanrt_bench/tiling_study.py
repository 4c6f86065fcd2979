"""How much does tiling change HAN's output? Tiled vs whole-image PSNR over tiles and margins.

HAN has global operations (channel attention pools over each tile, the layer attention correlates
whole maps), so tiled inference differs from whole-image inference. This study measures by how much,
on real photos (the E1 set, LR made with :func:`hanrt_bench.quality.bicubic_down`), with a trained
model, and prints a table: PSNR (RGB, peak 255, uint8 outputs) of tiled against whole-image output
for each tile T and margin m, with the nominal compute overhead ``(T/(T-2m))**2``.

Stitching is crop-only (each tile's core is kept, the margin discarded); hanrt has no feathered
blend (it would need a full-size float accumulator, which the memory rule forbids).

Run: ``python3 -m hanrt_bench.tiling_study --model MODEL.onnx`` (or ``--checkpoint CKPT.pt``, exported
to ONNX in a temporary folder; needs the [export] extra). ``--lr-scale 2`` makes larger LR inputs
(more seams per image). Needs onnxruntime, scikit-image and matplotlib (E1 photos). ``--images DIR``
studies the image files in DIR instead of E1 (e.g. document pages from :mod:`hanrt_bench.docpages`:
their ``images/`` folder).

**Recording the margin** (``--write-margin``): the margin a model runs with by default is a
measured property of the model, stored in its description (:attr:`hanrt.model_info.ModelInfo.margin`).
The rule (:func:`choose_margin`): the **smallest margin studied whose worst image, at every tile
studied, is within 1.0 dB of the worst image at the largest margin studied** at that tile (the
plateau: a margin still visibly below what more context gives is not chosen) **and >= 50 dB**
(tiled vs whole-image output; the issue's criterion) wherever the largest margin reaches 50 dB.
Where even the largest margin stays below 50 dB at a tile, no margin can meet the criterion there:
the remaining difference comes from the global attention (channel-attention pools and the layer
attention see one tile, not the image), which more context does not remove. The plateau margin is
then recorded all the same, with a note giving the figures (:func:`criterion_note`,
:attr:`~hanrt.model_info.ModelInfo.margin_note`; ``hanrt info`` shows it), since the runtime's
unmeasured default (8) would compute more pixels for no measured gain. It is written into MODEL's
metadata (only the metadata: the graph and weights stay byte-identical;
:func:`hanrt_export.metadata.update_model_info`, atomic) and into the graphs given with ``--also``
(sibling graphs exported from the same weights: their recorded source sha256 must match MODEL's).
When no margin qualifies (below 50 dB with no smaller margin than the largest within 1 dB of it, so
no plateau is shown; or no tile core at some tile) nothing is written and the command fails (exit
code of :class:`~hanrt.errors.ModelError`).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hanrt.backends.base import OrtConfig
from hanrt.backends.onnxrt import OnnxRuntimeBackend
from hanrt.tiling import overhead
from hanrt.upscaler import Upscaler

from .quality import bicubic_down, load_e1, psnr, psnr_y

TILES = (32, 64, 128)
MARGINS = (0, 4, 8, 16, 24)
#: ``--write-margin``'s rule (:func:`choose_margin`): the worst image's tiled-vs-whole PSNR must be
#: within HEADROOM_DB of the largest margin studied and at least CRITERION_DB (the issue's criterion)
#: wherever the largest margin reaches it.
CRITERION_DB = 50.0
HEADROOM_DB = 1.0
#: The study that decides a bundled model's margin (``hanrt_export.bundle`` and the README's table).
RECORD_TILES = (64, 128)
RECORD_MARGINS = (0, 2, 4, 6, 8, 12)
RECORD_LR_SCALE = 2
#: The E1 photos studied unless told otherwise.
STUDY_PHOTOS = ("astronaut", "coffee", "chelsea", "grace_hopper")


def export_checkpoint(ckpt: Path, workdir: Path) -> tuple[Path, str]:
    """Copy ``ckpt`` (it may be rewritten by a running trainer) and export it to float ONNX.
    Returns the ONNX path and a description (architecture, training step)."""
    from hanrt_export.checkpoint import load_checkpoint
    from hanrt_export.to_onnx import ExportOptions, export_onnx

    copy = workdir / "study.pt"
    shutil.copyfile(ckpt, copy)
    lc = load_checkpoint(copy)
    out = workdir / "study.onnx"
    export_onnx(lc.model, out, options=ExportOptions(io="float"), source_sha256=lc.sha256,
                source=str(ckpt), overwrite=True)
    c = lc.config
    step = lc.meta.get("step")
    desc = f"{ckpt.name}: HAN {c.n_resgroups}x{c.n_resblocks}x{c.n_feats} x{c.scale}" + (f", step {step}" if step is not None else "")
    return out, desc


def load_images(folder: Path, scale: int) -> list[tuple[str, np.ndarray]]:
    """``(name, HxWx3 uint8 RGB modcropped to scale)`` for each image file directly in ``folder``
    (sorted by name); :class:`~hanrt.errors.InputError` when there is none."""
    from hanrt.errors import InputError
    from hanrt.io.images import IMAGE_SUFFIXES, list_images, read_rgb8

    from .quality import modcrop

    if not folder.is_dir():
        raise InputError(f"--images {str(folder)!r} is not a folder.")
    files = list_images(folder)
    if not files:
        raise InputError(f"--images {str(folder)!r} holds no image files ({', '.join(IMAGE_SUFFIXES)}); for "
                         f"document pages made by python -m hanrt_bench.docpages DIR, pass DIR/images.")
    return [(f.stem, np.ascontiguousarray(modcrop(read_rgb8(f), scale))) for f in files]


def run_study(model: Path, *, names: tuple[str, ...] = (), images: list[tuple[str, np.ndarray]] | None = None,
              lr_scale: int, threads: int, tiles=TILES, margins=MARGINS) -> dict:
    """Tiled vs whole-image PSNR for every tile and margin. The images: ``images`` (``(name, HR
    uint8 RGB)``), else the E1 photos ``names``; each is shrunk ``lr_scale`` times (bicubic) first."""
    be = OnnxRuntimeBackend(model, config=OrtConfig(provider="cpu", intra_op_threads=threads))
    scale = be.info.scale
    if images is None:
        images = [(ph.name, ph.hr) for ph in load_e1(scale, names=names)]
    rows: dict = {"whole": {}, "cells": {}, "lr_shapes": {}}
    with be:
        for name, hr in images:
            lr = bicubic_down(hr, lr_scale)
            rows["lr_shapes"][name] = lr.shape[:2]
            t0 = time.perf_counter()
            whole = Upscaler(be, tile=None, margin=0).upscale(lr)
            tw = time.perf_counter() - t0
            gt = psnr_y(whole, hr, shave=scale) if lr_scale == scale else float("nan")
            rows["whole"][name] = (gt, tw)
            for t in tiles:
                for m in margins:
                    if 2 * m >= t:
                        continue
                    up = Upscaler(be, tile=t, margin=m)
                    t0 = time.perf_counter()
                    tiled = up.upscale(lr)
                    dt = time.perf_counter() - t0
                    p = psnr(tiled, whole)
                    gtp = psnr_y(tiled, hr, shave=scale) if lr_scale == scale else float("nan")
                    rows["cells"].setdefault((t, m), []).append((name, p, gtp, dt / tw, up.plan(*lr.shape[:2]).count))
    return rows


def worst_db(rows: dict) -> dict[tuple[int, int], float]:
    """``(tile, margin) -> the worst image's tiled-vs-whole PSNR`` of a :func:`run_study` result."""
    return {k: min(x[1] for x in v) for k, v in rows["cells"].items()}


def choose_margin(worst: dict[tuple[int, int], float], *, tiles, margins, criterion: float = CRITERION_DB,
                  headroom: float = HEADROOM_DB) -> int | None:
    """The margin to record for a model, by the rule in the module docstring: the smallest of
    ``margins`` whose worst image at **every** tile of ``tiles`` is within ``headroom`` dB of the
    worst image at the largest margin studied at that tile and ``>= criterion`` dB -- the criterion
    applying at the tiles where the largest margin reaches it. Elsewhere no margin can, and the
    plateau is taken (:func:`criterion_note` says so), once a margin smaller than the largest
    studied is within ``headroom`` of it (more context no longer helps). ``worst``: ``(tile, margin) -> dB``
    (:func:`worst_db`); a cell missing (``2*margin >= tile``: no core) fails the margin. ``None``
    when no margin qualifies."""
    tiles, margins = sorted(set(tiles)), sorted(set(margins))
    ref, top = {}, {}
    for t in tiles:
        done = [m for m in margins if (t, m) in worst]
        if not done:
            return None
        top[t] = max(done)
        ref[t] = worst[(t, top[t])]

    def ok(t: int, m: int) -> bool:
        if (t, m) not in worst or worst[(t, m)] < ref[t] - headroom:
            return False
        if ref[t] >= criterion:
            return worst[(t, m)] >= criterion
        # below the criterion even at the largest margin: m must lie on a plateau, shown by a smaller
        # margin than the largest already within the headroom (more context no longer helps)
        return any(worst.get((t, k), -math.inf) >= ref[t] - headroom for k in margins if k < top[t])

    for m in margins:
        if all(ok(t, m) for t in tiles):
            return m
    return None


def criterion_note(worst: dict[tuple[int, int], float], margin: int, *, tiles, margins, what: str,
                   criterion: float = CRITERION_DB) -> str:
    """The graphs' ``margin_note`` for a recorded ``margin`` whose worst image stays below
    ``criterion`` at some tile (``""`` when it meets it everywhere): the figures at ``margin`` and at
    the largest margin studied, so ``hanrt info`` tells how far tiles are from whole-image output."""
    tiles, ref = sorted(tiles), max(margins)
    if all(worst.get((t, margin), -math.inf) >= criterion for t in tiles):
        return ""
    return (f"no margin of {', '.join(map(str, sorted(margins)))} keeps tiles within {criterion:g} dB of whole-image "
            f"output (worst image {_at_margin(worst, tiles, margin)} dB at margin {margin}, "
            f"{_at_margin(worst, tiles, ref)} at margin {ref}, tiles {' / '.join(map(str, tiles))}, on {what}): "
            f"the difference comes from the global attention, not missing context, so a larger margin does not "
            f"reduce it")


def margin_text(margin: int | None, worst: dict[tuple[int, int], float], *, tiles, margins, what: str) -> str:
    """One sentence for a model card: the margin recorded (or why none), the rule and the figures
    it was decided on (``worst``: :func:`worst_db`; ``what``: the images and the LR, in words)."""
    tiles, ref = sorted(tiles), max(margins)
    per = _at_margin(worst, tiles, margin) if margin is not None else ""
    refs = _at_margin(worst, tiles, ref)
    rule = (f"the smallest margin of {', '.join(map(str, sorted(margins)))} whose worst image at tiles "
            f"{' and '.join(map(str, tiles))} is within {HEADROOM_DB:g} dB of margin {ref}'s and >= "
            f"{CRITERION_DB:g} dB of whole-image output where margin {ref} reaches {CRITERION_DB:g}")
    if margin is None:
        return (f"Tiling margin: not recorded -- no margin met the rule ({rule}; margin {ref}: {refs} dB) on {what}; "
                f"the model runs with hanrt's default margin.")
    below = criterion_note(worst, margin, tiles=tiles, margins=margins, what=what)
    return (f"Tiling margin: **{margin}** input pixels, recorded in every graph (`hanrt info` shows it; `--margin` "
            f"overrides): {rule} (worst image at margin {margin}: {per} dB; at margin {ref}: {refs} dB), measured "
            f"with `python -m hanrt_bench.tiling_study --write-margin` on {what}."
            + (f" Below the criterion: {below}." if below else ""))


def _at_margin(worst: dict[tuple[int, int], float], tiles, margin: int) -> str:
    """``"49.1 / 49.0"``: the worst image's dB at ``margin`` for each of ``tiles`` studied."""
    return " / ".join(f"{worst[(t, margin)]:.1f}" for t in tiles if (t, margin) in worst)


def no_margin_note(worst: dict[tuple[int, int], float], *, tiles, margins, what: str) -> str:
    """The graphs' ``margin_note`` when no margin met the rule: the margins tried, the largest
    margin's worst image per tile, and the images (``what``)."""
    tiles, ref = sorted(tiles), max(margins)
    return (f"the tiling study found no margin of {', '.join(map(str, sorted(margins)))} that meets its rule; "
            f"at margin {ref} the worst image is {_at_margin(worst, tiles, ref)} dB of whole-image output at tiles "
            f"{' / '.join(map(str, tiles))}, on {what}")


def write_margin_note(model: Path, note: str, also: list[Path]) -> list[Path]:
    """Record that a study ran and no margin met the rule (``note``; the margin stays unrecorded) in
    ``model`` and its siblings ``also``, checked as :func:`write_margin` checks them."""
    from hanrt_export.metadata import update_model_info

    _check_siblings(model, also)
    for g in (model, *also):
        update_model_info(g, margin=None, margin_note=note)
    return [model, *also]


def _check_siblings(model: Path, also: list[Path]) -> None:
    from hanrt.errors import ModelError
    from hanrt.model_info import read_model_info

    src = read_model_info(model).source_sha256
    for g in also:
        other = read_model_info(g).source_sha256
        if not src or other != src:
            raise ModelError(f"--also {str(g)!r} was not exported from the same weights as {str(model)!r} "
                             f"(source sha256 {other[:16] or 'not recorded'} vs {src[:16] or 'not recorded'}); "
                             f"its margin must be measured on its own. Nothing was written.")


def write_margin(model: Path, margin: int, also: list[Path], note: str = "") -> list[Path]:
    """Record ``margin`` (and ``note``: :func:`criterion_note`'s text, or nothing) in ``model`` and in
    the sibling graphs ``also`` (same source weights, checked first: nothing is written if one
    differs); return the files written."""
    from hanrt_export.metadata import update_model_info

    _check_siblings(model, also)
    for g in (model, *also):
        update_model_info(g, margin=margin, margin_note=note)
    return [model, *also]


def format_table(rows: dict, tiles=TILES, margins=MARGINS) -> str:
    lines = []
    head = "| margin | " + " | ".join(f"T={t}: mean / min dB (overhead)" for t in tiles) + " |"
    lines.append(head)
    lines.append("|---" * (len(tiles) + 1) + "|")
    for m in margins:
        cells = []
        for t in tiles:
            v = rows["cells"].get((t, m))
            if not v:
                cells.append("n/a (2m >= T)")
                continue
            ps = [x[1] for x in v]
            mean = _mean_db(ps)
            cells.append(f"{_fmt(mean)} / {_fmt(min(ps))} (x{overhead(t, m):.2f})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def measure_throughput(model: Path, *, checkpoint: Path | None, name: str, lr_scale: int, tile: int,
                       margin: int, threads: int, repeats: int = 3) -> dict:
    """Seconds per image (best of ``repeats``) for: the raw backend on the plan's tiles (tiles
    extracted beforehand, one ``run`` per tile), ``Upscaler.upscale`` (extract + run + stitch), ORT
    on the whole image, and (with ``checkpoint``) PyTorch eager on the whole image."""
    from hanrt.tiling import extract_tile

    be = OnnxRuntimeBackend(model, config=OrtConfig(provider="cpu", intra_op_threads=threads))
    scale = be.info.scale
    lr = bicubic_down(load_e1(scale, names=(name,))[0].hr, lr_scale)
    up = Upscaler(be, tile=tile, margin=margin)
    plan = up.plan(*lr.shape[:2])
    tiles = []
    for t in plan.tiles:
        buf = np.empty((1, 3, *plan.window(t)), np.float32)  # exact grids: windows differ
        extract_tile(lr, plan, t, buf[0], layout=be.info.layout)
        tiles.append(buf)

    fns = {"raw": lambda: [be.run(x) for x in tiles],
           "upscaler": lambda: up.upscale(lr),
           "ort_whole": lambda: Upscaler(be, tile=None, margin=0).upscale(lr)}
    if checkpoint is not None:
        import torch

        from hanrt_export.checkpoint import load_checkpoint

        torch.set_num_threads(threads)
        m = load_checkpoint(checkpoint).model
        x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))[None].astype(np.float32))

        def eager():
            with torch.inference_mode():
                m(x)

        fns["torch_whole"] = eager
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():  # warm-up
        f()
    for _ in range(repeats):  # interleaved, so load from other processes hits every variant alike
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    res: dict = {"image": f"{name} {lr.shape[1]}x{lr.shape[0]}", "tiles": plan.count}
    res.update({k: min(v) for k, v in times.items()})
    be.close()
    return res


def _mean_db(ps: list[float]) -> float:
    """Mean over photos of the MSE, back in dB (inf when every photo is identical)."""
    mses = [0.0 if math.isinf(p) else 255.0 ** 2 / 10 ** (p / 10) for p in ps]
    m = sum(mses) / len(mses)
    return math.inf if m == 0 else 10 * math.log10(255.0 ** 2 / m)


def _fmt(p: float) -> str:
    return "inf" if math.isinf(p) else f"{p:.1f}"


def main(argv: list[str] | None = None) -> int:
    """The command line; a :class:`~hanrt.errors.HanrtError` is reported on stderr with its exit code."""
    from hanrt.errors import HanrtError, exit_code_for

    try:
        return _main(argv)
    except HanrtError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exit_code_for(exc)


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m hanrt_bench.tiling_study", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="float-I/O .onnx exported by hanrt")
    src.add_argument("--checkpoint", type=Path, help="hanrt/official .pt (exported to ONNX in a temp folder)")
    ap.add_argument("--photos", default=",".join(STUDY_PHOTOS),
                    help="comma-separated E1 names (default: %(default)s)")
    ap.add_argument("--images", type=Path, metavar="DIR",
                    help="study the image files in DIR instead of E1 photos (document pages: "
                         "python -m hanrt_bench.docpages DIR --pages N, then --images DIR/images)")
    ap.add_argument("--write-margin", action="store_true",
                    help="record the margin the rule picks (smallest margin whose worst image at every tile is "
                         f"within {HEADROOM_DB:g} dB of the largest margin's, and >= {CRITERION_DB:g} dB where the "
                         "largest margin reaches that; a note with the figures when it does not) in --model's "
                         "metadata (weights unchanged); refuses when no margin qualifies")
    ap.add_argument("--also", type=Path, nargs="+", default=[], metavar="GRAPH",
                    help="with --write-margin: also record it in these graphs exported from the same weights "
                         "(e.g. the _uint8/_fp16/_int8 siblings)")
    ap.add_argument("--lr-scale", type=int, default=0, help="downscale factor for the LR input (default: the model's scale)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime CPU threads (default 1)")
    ap.add_argument("--tiles", default=",".join(map(str, TILES)))
    ap.add_argument("--margins", default=",".join(map(str, MARGINS)))
    ap.add_argument("--throughput", action="store_true",
                    help="instead of the table: Upscaler vs raw backend on the same tiles vs whole-image "
                    "ORT and PyTorch eager (first photo, first tile and margin)")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    if (a.write_margin or a.also) and not a.model:
        ap.error("--write-margin records the margin in --model's file; it needs --model, not --checkpoint")
    if a.also and not a.write_margin:
        ap.error("--also goes with --write-margin")
    if a.write_margin and a.throughput:
        ap.error("--write-margin needs the PSNR table, not --throughput")
    tiles = tuple(int(x) for x in a.tiles.split(","))
    margins = tuple(int(x) for x in a.margins.split(","))
    with tempfile.TemporaryDirectory(prefix="hanrt_study_") as td:
        model, desc = (a.model, str(a.model)) if a.model else export_checkpoint(a.checkpoint, Path(td))
        from hanrt.model_info import read_model_info

        scale = read_model_info(model).scale
        lr_scale = a.lr_scale or scale
        if a.throughput:
            ck = None
            if a.checkpoint:
                ck = Path(td) / "study.pt"
            r = measure_throughput(model, checkpoint=ck, name=a.photos.split(",")[0], lr_scale=a.lr_scale or scale,
                                   tile=tiles[0], margin=margins[0], threads=a.threads, repeats=a.repeats)
            px = float(np.prod([int(v) for v in r["image"].split()[1].split("x")]))
            print(f"{r['image']} (LR), tile {tiles[0]} margin {margins[0]}: {r['tiles']} tiles, "
                  f"{a.threads} thread(s), best of {a.repeats}")
            for k, label in (("raw", "raw backend, same tiles"), ("upscaler", "Upscaler.upscale"),
                             ("ort_whole", "ORT whole image"), ("torch_whole", "PyTorch eager whole image")):
                if k in r:
                    print(f"  {label:28s} {r[k]:8.3f} s  {px / r[k] / 1e3:8.1f} kpx/s (input)")
            print(f"  Upscaler / raw throughput ratio: {r['raw'] / r['upscaler']:.3f}")
            if "torch_whole" in r:
                print(f"  Upscaler / PyTorch-eager-whole throughput ratio: {r['torch_whole'] / r['upscaler']:.3f}")
            return 0
        t0 = time.perf_counter()
        images = load_images(a.images, lr_scale) if a.images else None
        rows = run_study(model, names=tuple(a.photos.split(",")), images=images, lr_scale=lr_scale,
                         threads=a.threads, tiles=tiles, margins=margins)
    print(f"model: {desc}; {'images' if a.images else 'photos'} (LR = bicubic_down x{lr_scale}): "
          + ", ".join(f"{n} {h}x{w}" for n, (h, w) in rows["lr_shapes"].items()))
    print("tiled vs whole-image PSNR (RGB, uint8 outputs; mean over images by MSE / worst image), "
          "crop stitching; overhead = (T/(T-2m))^2\n")
    print(format_table(rows, tiles, margins))
    if lr_scale == scale:
        print("\nPSNR-Y vs ground truth (shave=scale): whole image "
              + ", ".join(f"{n} {v[0]:.2f}" for n, v in rows["whole"].items()))
        for (t, m), v in sorted(rows["cells"].items()):
            print(f"  T={t} m={m}: " + ", ".join(f"{x[0]} {x[2]:.2f}" for x in v)
                  + f"; time vs whole x{np.mean([x[3] for x in v]):.2f}, tiles {[x[4] for x in v]}")
    else:
        for (t, m), v in sorted(rows["cells"].items()):
            print(f"  T={t} m={m}: time vs whole x{np.mean([x[3] for x in v]):.2f}, tiles {[x[4] for x in v]}")
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    if a.write_margin:
        from hanrt.errors import ModelError

        worst = worst_db(rows)
        m = choose_margin(worst, tiles=tiles, margins=margins)
        if m is None:
            raise ModelError(f"no margin studied ({', '.join(map(str, margins))}) meets the rule at every tile "
                             f"({', '.join(map(str, tiles))}): within {HEADROOM_DB:g} dB of the largest margin's worst "
                             f"image and >= {CRITERION_DB:g} dB, or, where even the largest margin stays below "
                             f"{CRITERION_DB:g} dB, a smaller margin within {HEADROOM_DB:g} dB of it (showing that more "
                             f"margin no longer helps); nothing was written. Study larger margins (--margins).")
        what = (f"{len(rows['lr_shapes'])} {'images' if a.images else 'E1 photos'}, LR by bicubic /{lr_scale}")
        note = criterion_note(worst, m, tiles=tiles, margins=margins, what=what)
        written = write_margin(a.model, m, a.also, note)
        print(f"margin {m} (rule: smallest margin with the worst image within {HEADROOM_DB:g} dB of margin "
              f"{max(margins)}'s and >= {CRITERION_DB:g} dB where margin {max(margins)} reaches it, at every tile) "
              f"recorded in: " + ", ".join(str(w) for w in written))
        if note:
            print(f"note recorded with it: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

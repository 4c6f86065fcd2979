"""``hanrt eval DATASET``: quality by the super-resolution papers' protocol.

Protocol (:mod:`hanrt_bench.quality`): HR modcropped to the scale; LR taken from the dataset
when it ships LR images, else made by **Pillow's bicubic** downscale (antialiased like MATLAB's
``imresize``; Pillow rounds to uint8 between its two passes and treats borders differently, so
scores differ from MATLAB-made LR sets by a few hundredths of a dB); PSNR and SSIM on the Y
channel (BT.601) with ``scale`` pixels shaved from each border.

Datasets (``DATASET``):

- ``E1``: the built-in held-out photo set (scikit-image and matplotlib sample photos).
- a folder of HR images only (``Set5/``, ``Set5/HR/``), as many releases ship them;
- HR/LR pairs: ``DIR/HR`` with ``DIR/LR_bicubic/X4`` (or ``LR_bicubic/x4``, ``LR/X4``, ``LR/x4``,
  ``LR``), LR names equal to HR names or with an ``x4`` suffix (DIV2K style: ``0801x4.png``);
  or Huang et al.'s ``image_SRF_4/`` folders of ``*_HR.png`` / ``*_LR.png`` files.

Columns: ``bicubic`` and, for each precision with a graph (fp32 is the model; fp16/int8 come
from ``--fp16``/``--int8`` or ``<stem>_fp16.onnx``/``<stem>_int8.onnx`` beside it), ``whole``
(whole-image inference) and ``tiled`` (hanrt's tiler). ``<prec> tiled vs whole`` reports the PSNR
(RGB, no shave) of the tiled output against the whole-image output: what tiling costs.

Outputs: ``per_image.csv``, ``summary.json``, ``summary.md`` and ``crops/<image>.png`` sheets
of side-by-side crops (HR | bicubic | each column) at the most detailed spot of each image.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from hanrt.errors import InputError, UsageError
from hanrt.io.images import IMAGE_SUFFIXES as _IMAGE_FORMATS
from hanrt.io.images import read_image, to_rgb8

from .quality import bicubic_down, bicubic_up, load_e1, modcrop, psnr, psnr_y, ssim_y

log = logging.getLogger(__name__)

__all__ = ["EvalImage", "load_dataset", "Column", "EvalResult", "evaluate", "write_outputs", "crop_sheet",
           "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = tuple(_IMAGE_FORMATS)  # the suffixes hanrt.io.images reads


@dataclass(frozen=True)
class EvalImage:
    """One test image: ``hr`` HxWx3 uint8 modcropped to the scale; ``lr`` the dataset's LR or ``None``."""

    name: str
    hr: np.ndarray
    lr: np.ndarray | None = None


def _read_rgb(p: Path) -> np.ndarray:
    """HxWx3 uint8 RGB through hanrt's reader (EXIF orientation, size guard); 16-bit refused."""
    try:
        img = read_image(p)
    except InputError as exc:
        raise InputError(f"cannot read image {str(p)!r}: {exc}") from None
    if img.bits == 16:
        raise InputError(f"{str(p)!r}: 16-bit images are not part of the papers' protocol (8-bit RGB).")
    return to_rgb8(img.pixels)


def _images(d: Path) -> list[Path]:
    return sorted(q for q in d.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)


def _lr_dir(root: Path, scale: int) -> Path | None:
    for rel in (f"LR_bicubic/X{scale}", f"LR_bicubic/x{scale}", f"LR/X{scale}", f"LR/x{scale}", f"LR_X{scale}",
                f"LR_x{scale}", "LR"):
        d = root / rel
        if d.is_dir() and _images(d):
            return d
    return None


def load_dataset(spec: str, scale: int, *, limit: int | None = None) -> tuple[str, list[EvalImage]]:
    """Load ``spec`` (``E1`` or a folder; see the module docstring). Returns (name, images).

    Raises :class:`InputError` for a missing/empty folder, unreadable images, or LR images whose
    size is not HR/scale.
    """
    if spec.upper() == "E1" and not Path(spec).exists():
        try:
            imgs = [EvalImage(e.name, e.hr) for e in load_e1(scale)]
        except ImportError as exc:
            from hanrt.errors import MissingDependencyError

            if isinstance(exc, MissingDependencyError):  # already names the extra: say it once
                raise
            raise MissingDependencyError(f"the E1 set needs scikit-image and matplotlib ({exc}); install them "
                                         f"with: pip install 'hanrt[bench]'.") from None
        return "E1", imgs[:limit] if limit else imgs
    root = Path(spec)
    if not root.is_dir():
        raise InputError(f"dataset {spec!r} is neither E1 nor a folder.")
    name = root.name
    srf = root / f"image_SRF_{scale}"
    if srf.is_dir():
        root = srf
    files = _images(root)
    hr_lr = [(q, q.with_name(q.name.replace("_HR.", "_LR."))) for q in files if "_HR." in q.name]
    pairs: list[tuple[str, Path, Path | None]] = []
    if hr_lr:  # Huang's SRF layout
        for hr, lr in hr_lr:
            pairs.append((hr.name.split("_HR.")[0], hr, lr if lr.exists() else None))
    else:
        hr_dir = root / "HR" if (root / "HR").is_dir() else root
        lr_dir = _lr_dir(root, scale)
        hr_files = _images(hr_dir)
        lr_map: dict[str, Path] = {}
        if lr_dir is not None and lr_dir != hr_dir:
            for q in _images(lr_dir):
                stem = q.stem
                for suf in (f"x{scale}", f"X{scale}", f"_x{scale}", f"_LR"):
                    if stem.endswith(suf) and len(stem) > len(suf):
                        lr_map.setdefault(stem[: -len(suf)], q)
                lr_map[stem] = q
        for q in hr_files:
            pairs.append((q.stem, q, lr_map.get(q.stem) if lr_map else None))
        if lr_map:
            missing = [n for n, _, lr in pairs if lr is None]
            if missing:
                raise InputError(f"dataset {spec!r}: no LR image for {missing[:5]} in {str(lr_dir)!r}.")
    if not pairs:
        raise InputError(f"dataset {spec!r} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    if limit:
        pairs = pairs[:limit]
    out = []
    for n, hr_p, lr_p in pairs:
        hr = _read_rgb(hr_p)
        lr = _read_rgb(lr_p) if lr_p is not None else None
        if lr is not None:
            h, w = lr.shape[:2]
            dh, dw = hr.shape[0] - h * scale, hr.shape[1] - w * scale
            if not (0 <= dh < scale and 0 <= dw < scale):
                raise InputError(f"{n}: LR {w}x{h} is not HR/{scale} (HR {hr.shape[1]}x{hr.shape[0]}).")
            hr = hr[: h * scale, : w * scale]
        else:
            hr = modcrop(hr, scale)
        if min(hr.shape[:2]) < 2 * scale + 11:
            raise InputError(f"{n}: HR {hr.shape[1]}x{hr.shape[0]} is too small for SSIM after the {scale}-pixel shave.")
        out.append(EvalImage(n, np.ascontiguousarray(hr), lr))
    return name, out


@dataclass(frozen=True)
class Column:
    """One way of making SR output: ``name`` (``"fp32 whole"``), and ``run(lr) -> sr`` on HxWx3 uint8."""

    name: str
    run: Callable[[np.ndarray], np.ndarray]
    precision: str = ""
    tiled: bool = False
    detail: str = ""
    tiles: Callable[[int, int], int] | None = None  # tiles run for an LR image of (h, w), when known


@dataclass
class EvalResult:
    dataset: str
    scale: int
    model: str
    columns: list[str]
    per_image: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)

    def summary(self) -> list[dict[str, Any]]:
        """Mean PSNR/SSIM (and seconds per image) per column, plus tiled-vs-whole rows."""
        rows = []
        for c in self.columns:
            ps = [r[f"{c} psnr"] for r in self.per_image if f"{c} psnr" in r]
            ss = [r[f"{c} ssim"] for r in self.per_image if f"{c} ssim" in r]
            ts = [r[f"{c} s"] for r in self.per_image if f"{c} s" in r]
            rows.append({"column": c, "psnr": float(np.mean(ps)) if ps else None,
                         "ssim": float(np.mean(ss)) if ss else None, "n": len(ps),
                         "s_per_image": float(np.mean(ts)) if ts else None, "detail": self.details.get(c, "")})
        for key in sorted({k for r in self.per_image for k in r if k.endswith(" tiled vs whole")}):
            vals = [r[key] for r in self.per_image if key in r]
            finite = [v for v in vals if np.isfinite(v)]
            rows.append({"column": key, "psnr": float(np.mean(finite)) if finite else float("inf"),
                         "min_psnr": float(np.min(vals)), "n": len(vals), "ssim": None, "s_per_image": None,
                         "detail": "RGB PSNR of the tiled output against the whole-image output"})
        return rows

    def quality_by_key(self) -> dict[str, float]:
        """``{"bicubic": dB, "fp32 tiled": dB, ...}`` for the bench's Pareto chart."""
        return {r["column"]: r["psnr"] for r in self.summary() if r["psnr"] is not None
                and not r["column"].endswith("vs whole")}


def detail_box(hr: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left of the ``size`` x ``size`` HR window with the most gradient energy (a detailed spot)."""
    g = hr.astype(np.float32).mean(axis=2)
    e = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1, :]
    h, w = e.shape
    size = min(size, h, w)
    ii = np.pad(e, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    step = max(1, size // 4)
    best, at = -1.0, (0, 0)
    for y in range(0, h - size + 1, step):
        for x in range(0, w - size + 1, step):
            s = ii[y + size, x + size] - ii[y, x + size] - ii[y + size, x] + ii[y, x]
            if s > best:
                best, at = float(s), (y, x)
    return at


def crop_sheet(name: str, hr: np.ndarray, outputs: Sequence[tuple[str, np.ndarray]], *, size: int = 96,
               zoom: int = 2) -> Image.Image:
    """Side-by-side crops (HR first, then each output) of the most detailed ``size``-pixel HR window,
    enlarged ``zoom`` times (nearest), each labelled; returns a Pillow RGB image."""
    y, x = detail_box(hr, size)
    s = min(size, hr.shape[0], hr.shape[1])
    panels = [("HR", hr)] + list(outputs)
    cw, label_h, pad = s * zoom, 16, 4
    sheet = Image.new("RGB", (len(panels) * (cw + pad) + pad, cw + label_h + 2 * pad + 14), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 2), f"{name}: crop {s}x{s} at ({x},{y}) of {hr.shape[1]}x{hr.shape[0]}, x{zoom} nearest", fill="black")
    for i, (lab, img) in enumerate(panels):
        crop = Image.fromarray(np.ascontiguousarray(img[y:y + s, x:x + s])).resize((cw, cw), Image.NEAREST)
        px = pad + i * (cw + pad)
        sheet.paste(crop, (px, 14 + pad))
        draw.text((px, 14 + pad + cw + 1), lab, fill="black")
    return sheet


def evaluate(dataset: str, images: Sequence[EvalImage], columns: Sequence[Column], *, scale: int, model: str = "",
             crops_dir: str | os.PathLike | None = None, progress: Callable[[str], None] | None = None) -> EvalResult:
    """Score every column on every image (see the module docstring). ``crops_dir``: write crop sheets there."""
    say = progress or (lambda s: log.info("%s", s))
    names = ["bicubic"] + [c.name for c in columns]
    res = EvalResult(dataset, scale, model, names, details={c.name: c.detail for c in columns})
    res.details["bicubic"] = "Pillow bicubic upscale of the LR image"
    if crops_dir is not None:
        Path(crops_dir).mkdir(parents=True, exist_ok=True)
    for k, im in enumerate(images, 1):
        lr = im.lr if im.lr is not None else bicubic_down(im.hr, scale)
        row: dict[str, Any] = {"image": im.name, "hr_h": im.hr.shape[0], "hr_w": im.hr.shape[1],
                               "lr": "dataset" if im.lr is not None else "pillow-bicubic"}
        outs: list[tuple[str, np.ndarray]] = []
        t0 = time.perf_counter()
        bic = bicubic_up(lr, scale)
        row["bicubic s"] = time.perf_counter() - t0
        outs.append(("bicubic", bic))
        for c in columns:
            t0 = time.perf_counter()
            sr = c.run(lr)
            row[f"{c.name} s"] = time.perf_counter() - t0
            if c.tiles is not None:
                row[f"{c.name} tiles"] = c.tiles(lr.shape[0], lr.shape[1])
            if sr.shape != im.hr.shape:
                raise UsageError(f"{c.name}: output {sr.shape} for {im.name} differs from HR {im.hr.shape}; "
                                 f"is the model x{scale}?")
            outs.append((c.name, sr))
        for lab, sr in outs:
            row[f"{lab} psnr"] = psnr_y(sr, im.hr, shave=scale)
            row[f"{lab} ssim"] = ssim_y(sr, im.hr, shave=scale)
        by = dict(outs)
        for c in columns:
            if c.tiled:
                whole = f"{c.precision} whole"
                if whole in by:
                    row[f"{c.precision} tiled vs whole"] = psnr(by[c.name], by[whole])
        res.per_image.append(row)
        say(f"[{k}/{len(images)}] {im.name}: " + ", ".join(f"{lab} {row[f'{lab} psnr']:.2f}" for lab, _ in outs))
        if crops_dir is not None:
            labelled = [(f"{lab} {row[f'{lab} psnr']:.2f} dB", o) for lab, o in outs]
            crop_sheet(im.name, im.hr, labelled, size=min(96, *im.hr.shape[:2])).save(Path(crops_dir) / f"{im.name}.png")
    for c in columns:
        counts = [r.get(f"{c.name} tiles") for r in res.per_image]
        if c.tiled and counts and all(n == 1 for n in counts):
            res.notes.append(f"{c.name}: every LR image fitted in one tile, so this column is whole-image "
                             f"inference; use a smaller --tile to measure tiling.")
    return res


def summary_markdown(res: EvalResult) -> str:
    lines = [f"**{res.dataset}** x{res.scale}, {len(res.per_image)} images, model {res.model}; "
             f"PSNR/SSIM on Y, {res.scale}-pixel shave", "",
             "| column | PSNR (dB) | SSIM | s/image | what |", "|---|---|---|---|---|"]
    for r in res.summary():
        p = "–" if r["psnr"] is None else f"{r['psnr']:.2f}"
        if "min_psnr" in r:
            p += f" (min {r['min_psnr']:.2f})"
        s = "–" if r["ssim"] is None else f"{r['ssim']:.4f}"
        t = "–" if r["s_per_image"] is None else f"{r['s_per_image']:.3f}"
        lines.append(f"| {r['column']} | {p} | {s} | {t} | {r['detail']} |")
    for n in res.notes:
        lines += ["", f"- {n}"]
    return "\n".join(lines) + "\n"


def write_outputs(res: EvalResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``per_image.csv``, ``summary.json`` and ``summary.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in res.per_image:
        keys += [k for k in r if k not in keys]
    p_csv = out / "per_image.csv"
    with open(p_csv, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in res.per_image:
            w.writerow(r)
    p_json = out / "summary.json"
    p_json.write_text(json.dumps({"dataset": res.dataset, "scale": res.scale, "model": res.model,
                                  "images": len(res.per_image), "summary": res.summary(),
                                  "quality": res.quality_by_key(), "notes": res.notes}, indent=2) + "\n",
                      encoding="utf-8")
    p_md = out / "summary.md"
    p_md.write_text(summary_markdown(res), encoding="utf-8")
    return {"csv": p_csv, "json": p_json, "md": p_md}

"""Does super-resolution before binarization help? ``hanrt eval --task binarize DIR``.

Protocol (the one of arXiv 2306.15218, "Semantic Segmentation Using Super Resolution Technique as
Pre-Processing"): each page is shrunk 4x with bicubic (Pillow), enlarged back 4x — by bicubic or
by a model — and binarized; the binarized page is scored against the ground-truth ink mask. The
page binarized at its own resolution is the upper bound.

Binarization (scikit-image, on BT.601 luma 0..255): **Otsu** (one global threshold) and
**Sauvola** (local, window 25 px, k 0.2, R 128). Ink is what lies below the threshold.

Metrics, those of the document image binarization contests (DIBCO), implemented from their
published definitions (ink is the positive class; all figures are means over the pages):

- **F-measure** (%): 2 R P / (R + P), recall R = TP / (TP + FN), precision P = TP / (TP + FP).
- **pseudo-F-measure** (%): the same with pseudo-recall, the fraction of the ground truth's
  skeleton (scikit-image ``skeletonize``) that is found as ink (H-DIBCO 2010, Pratikakis,
  Gatos, Ntirogiannis, ICFHR 2010). The later weighted pseudo-precision of Ntirogiannis, Gatos &
  Pratikakis (IEEE TIP 22(2), 2013) is not used: precision is the ordinary one.
- **PSNR** (dB): 10 log10(1 / MSE) with the two binary images as 0/1 (C = 1), MSE the fraction of
  pixels that differ.
- **DRD** (distance-reciprocal distortion, Lu, Kot & Shi, IEEE SPL 11(2), 2004, as used since
  DIBCO 2011): for every pixel whose value differs from the ground truth, the sum over its 5x5
  neighbourhood of the normalised reciprocal-distance weights (1 / distance to the centre, 0 at
  the centre, summing to 1) at the ground-truth pixels that differ from the flipped pixel's value;
  the total divided by NUBN, the number of 8x8 blocks of the ground truth that are neither all ink
  nor all background. Lower is better.

DIR layout: ``DIR/images/NAME.(png|jpg|tif|...)`` and ``DIR/gt/NAME.png`` (the ink mask, same
size; ink dark — below 128 — as DIBCO ships it). ``python -m hanrt_bench.docpages DIR --masks``
writes such a folder of generated pages. Where ``DIR/clean/NAME.png`` exists (generated pages with
``--clean``: the page before the scanner's blur, noise and JPEG), it is binarized too, as the
``clean`` condition: what a model that also undoes the scanner could reach.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from hanrt.tiling import LUMA_WEIGHTS

from .quality import bicubic_down, bicubic_up, modcrop

log = logging.getLogger(__name__)

__all__ = ["f_measure", "pseudo_f_measure", "binary_psnr", "drd", "score", "binarize", "load_pages",
           "evaluate_binarization", "comparison_figure", "BINARIZERS", "METRICS", "summary_markdown", "SAUVOLA_WINDOW"]

SAUVOLA_WINDOW = 25
SAUVOLA_K = 0.2
SAUVOLA_R = 128.0
METRICS = ("fm", "pfm", "psnr", "drd")


def _check(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"binarized page {pred.shape} and ground truth {gt.shape} differ in size")
    return pred, gt


def _f(r: float, p: float) -> float:
    return 0.0 if r + p == 0 else float(100.0 * 2 * r * p / (r + p))


def f_measure(pred: np.ndarray, gt: np.ndarray) -> float:
    """F-measure (%) of ink (True) pixels."""
    pred, gt = _check(pred, gt)
    tp = float(np.count_nonzero(pred & gt))
    r = tp / max(1, np.count_nonzero(gt))
    p = tp / max(1, np.count_nonzero(pred))
    return _f(r, p)


def pseudo_f_measure(pred: np.ndarray, gt: np.ndarray) -> float:
    """pseudo-F-measure (%): pseudo-recall on the ground truth's skeleton, ordinary precision."""
    from skimage.morphology import skeletonize

    pred, gt = _check(pred, gt)
    sk = skeletonize(gt)
    pr = float(np.count_nonzero(pred & sk)) / max(1, np.count_nonzero(sk))
    p = float(np.count_nonzero(pred & gt)) / max(1, np.count_nonzero(pred))
    return _f(pr, p)


def binary_psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """PSNR (dB) of two binary images as 0/1 (C = 1); inf when equal."""
    pred, gt = _check(pred, gt)
    mse = float(np.count_nonzero(pred != gt)) / gt.size
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def _drd_weights(n: int = 5) -> np.ndarray:
    c = n // 2
    yy, xx = np.mgrid[0:n, 0:n]
    d = np.hypot(yy - c, xx - c)
    w = np.zeros((n, n))
    w[d > 0] = 1.0 / d[d > 0]
    return w / w.sum()


def drd(pred: np.ndarray, gt: np.ndarray, *, block: int = 8) -> float:
    """Distance-reciprocal distortion (lower is better; 0 when equal). Pixels outside the page
    count as background in the 5x5 neighbourhoods."""
    from scipy.ndimage import correlate

    pred, gt = _check(pred, gt)
    w = _drd_weights(5)
    g = gt.astype(np.float64)
    near_ink = correlate(g, w, mode="constant", cval=0.0)  # weighted ink around each pixel
    near_bg = correlate(1.0 - g, w, mode="constant", cval=1.0)
    flipped = pred != gt
    # a pixel wrongly made ink differs from the background GT pixels around it, and vice versa
    total = float(near_bg[flipped & pred].sum() + near_ink[flipped & ~pred].sum())
    h, wd = (gt.shape[0] // block) * block, (gt.shape[1] // block) * block
    blocks = gt[:h, :wd].reshape(h // block, block, wd // block, block).sum(axis=(1, 3))
    nubn = int(np.count_nonzero((blocks > 0) & (blocks < block * block)))
    return total / max(1, nubn)


def score(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    return {"fm": f_measure(pred, gt), "pfm": pseudo_f_measure(pred, gt), "psnr": binary_psnr(pred, gt),
            "drd": drd(pred, gt)}


def _luma(rgb: np.ndarray) -> np.ndarray:
    a = np.asarray(rgb, np.float64)
    if a.ndim == 2:
        return a
    wr, wg, wb = LUMA_WEIGHTS
    return a[..., 0] * wr + a[..., 1] * wg + a[..., 2] * wb


def _otsu(grey: np.ndarray) -> np.ndarray:
    from skimage.filters import threshold_otsu

    return grey < threshold_otsu(grey)


def _sauvola(grey: np.ndarray) -> np.ndarray:
    from skimage.filters import threshold_sauvola

    # r: the dynamic range of the standard deviation, 128 for 8-bit pages (Sauvola & Pietikainen
    # 2000); scikit-image's default derives it from the dtype, which is wrong for 0..255 floats
    return grey < threshold_sauvola(grey, window_size=SAUVOLA_WINDOW, k=SAUVOLA_K, r=SAUVOLA_R)


BINARIZERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"otsu": _otsu, "sauvola": _sauvola}


def binarize(rgb: np.ndarray, method: str = "otsu") -> np.ndarray:
    """Ink mask (bool HxW, True = ink) of an RGB or grey uint8 page by ``method`` (otsu, sauvola)."""
    if method not in BINARIZERS:
        raise ValueError(f"unknown binarization {method!r}; one of {', '.join(BINARIZERS)}")
    return BINARIZERS[method](_luma(rgb))


@dataclass(frozen=True)
class Page:
    name: str
    rgb: np.ndarray  # HxWx3 uint8, modcropped to the scale
    gt: np.ndarray  # bool HxW, True = ink
    clean: np.ndarray | None = None  # the clean scan (DIR/clean/NAME.png), if there is one


def load_pages(folder: str | Path, scale: int = 4, limit: int | None = None) -> list[Page]:
    """Pages and masks from ``folder/images`` and ``folder/gt`` (see the module docstring)."""
    from hanrt.errors import InputError
    from hanrt.io.images import list_images

    d = Path(folder)
    img_dir, gt_dir = d / "images", d / "gt"
    if not img_dir.is_dir() or not gt_dir.is_dir():
        raise InputError(f"{str(d)!r} must hold images/ (pages) and gt/ (ink masks, ink dark); "
                         f"make an example with: python -m hanrt_bench.docpages {d} --masks")
    files = list_images(img_dir)
    if not files:
        raise InputError(f"no page images in {str(img_dir)!r}.")
    gts = {f.stem: f for f in list_images(gt_dir)}
    cleans = {f.stem: f for f in list_images(d / "clean")} if (d / "clean").is_dir() else {}
    pages = []
    for f in files[:limit]:
        if f.stem not in gts:
            raise InputError(f"page {f.name} has no ground truth {f.stem}.png in {str(gt_dir)!r}.")
        with Image.open(f) as im:
            rgb = np.asarray(im.convert("RGB"))
        with Image.open(gts[f.stem]) as im:
            gt = np.asarray(im.convert("L")) < 128
        if gt.shape != rgb.shape[:2]:
            raise InputError(f"{f.name}: page {rgb.shape[1]}x{rgb.shape[0]} but ground truth "
                             f"{gt.shape[1]}x{gt.shape[0]}.")
        clean = None
        if f.stem in cleans:
            with Image.open(cleans[f.stem]) as im:
                clean = np.asarray(im.convert("RGB"))
            if clean.shape != rgb.shape:
                raise InputError(f"{f.name}: page {rgb.shape[1]}x{rgb.shape[0]} but clean scan "
                                 f"{clean.shape[1]}x{clean.shape[0]}.")
            clean = modcrop(clean, scale)
        rgb = modcrop(rgb, scale)
        pages.append(Page(f.stem, rgb, gt[:rgb.shape[0], :rgb.shape[1]], clean))
    return pages


def evaluate_binarization(pages: list[Page], upscalers: dict[str, Callable[[np.ndarray], np.ndarray]],
                          *, scale: int = 4, methods: tuple[str, ...] = ("otsu", "sauvola"),
                          keep: Callable[[str, str, np.ndarray], None] | None = None) -> list[dict]:
    """One row per (page, condition, method). Conditions: ``full`` (the page itself), ``clean``
    (its clean scan, for pages that have one), ``bicubic`` and one per entry of ``upscalers`` (name -> function LR uint8 RGB -> x``scale`` uint8 RGB), all
    from the page shrunk ``scale`` times with bicubic. ``keep(page, condition, image)`` sees every
    image that was binarized (for pictures)."""
    rows = []
    for pg in pages:
        lr = bicubic_down(pg.rgb, scale)
        imgs = {"full": pg.rgb}
        if pg.clean is not None:
            imgs["clean"] = pg.clean
        imgs["bicubic"] = bicubic_up(lr, scale)
        for name, up in upscalers.items():
            out = np.asarray(up(lr))
            if out.shape != pg.rgb.shape:
                raise ValueError(f"{name}: output {out.shape} for a page of {pg.rgb.shape}")
            imgs[name] = out
        for cond, img in imgs.items():
            if keep is not None:
                keep(pg.name, cond, img)
            for m in methods:
                rows.append({"page": pg.name, "condition": cond, "method": m, **score(binarize(img, m), pg.gt)})
        log.info("binarize: %s done", pg.name)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Means over pages per (condition, method), in the order first seen."""
    keys: list[tuple[str, str]] = []
    for r in rows:
        if (r["condition"], r["method"]) not in keys:
            keys.append((r["condition"], r["method"]))
    out = []
    for c, m in keys:
        sel = [r for r in rows if r["condition"] == c and r["method"] == m]
        out.append({"condition": c, "method": m, "pages": len(sel),
                    **{k: float(np.mean([r[k] for r in sel])) for k in METRICS}})
    return out


_LABEL = {"full": "full resolution (upper bound)", "bicubic": "bicubic x4",
          "clean": "clean scan, full resolution (no scanner blur, noise, JPEG)"}


def _model_label(condition: str) -> str:
    """``"document"`` -> ``"document x4"``; ``"document x8"`` (an 8-pass self-ensemble, ``--models``)
    -> ``"document x4, 8-pass ensemble"``."""
    name, _, last = condition.rpartition(" ")
    if name and last[:1] == "x" and last[1:].isdigit():
        return f"{name} x4, {last[1:]}-pass ensemble"
    return f"{condition} x4"


def summary_markdown(summary: list[dict]) -> str:
    out = ["| page as binarized | method | F-measure | pseudo-F | PSNR (dB) | DRD |", "| --- | --- | --- | --- | --- | --- |"]
    for s in summary:
        label = _LABEL.get(s["condition"]) or _model_label(s["condition"])
        out.append(f"| {label} | {s['method'].capitalize()} | {s['fm']:.2f} | {s['pfm']:.2f} | "
                   f"{s['psnr']:.2f} | {s['drd']:.2f} |")
    return "\n".join(out)


def comparison_figure(images: dict[str, np.ndarray], gt: np.ndarray, path: str | Path, *,
                      box: tuple[int, int, int, int] | None = None, method: str = "otsu",
                      scale: int = 4) -> Path:
    """A JPEG strip of one page crop: the LR page (pixels enlarged), then each condition other
    than ``full`` and ``clean`` (the two full-resolution pages) binarized by ``method``, then the ground truth; labelled. ``images``: condition
    -> full-size RGB page; ``box`` (x, y, w, h) in page pixels (default: a 320x240 crop at a
    quarter of the page's height)."""
    from PIL import ImageDraw

    from hanrt.io.atomic import atomic_output

    full = images["full"]
    h, w = full.shape[:2]
    x, y, bw, bh = box or (w // 10, h // 4, min(320, w), min(240, h))
    x, y = min(x, w - bw) // scale * scale, min(y, h - bh) // scale * scale
    lr = bicubic_down(full, scale)[y // scale:(y + bh) // scale, x // scale:(x + bw) // scale]
    panels = [("LR page (x1/4)", np.repeat(np.repeat(lr, scale, 0), scale, 1))]
    for cond, img in images.items():
        if cond in ("full", "clean"):
            continue
        ink = binarize(img, method)[y:y + bh, x:x + bw]
        panels.append((f"{cond} + {method.capitalize()}", np.where(ink, 0, 255).astype(np.uint8)))
    panels.append(("ground truth", np.where(gt[y:y + bh, x:x + bw], 0, 255).astype(np.uint8)))
    gap, top = 6, 18
    sheet = Image.new("RGB", (len(panels) * (bw + gap) - gap, bh + top), "white")
    d = ImageDraw.Draw(sheet)
    for i, (label, a) in enumerate(panels):
        im = Image.fromarray(a).convert("RGB")
        sheet.paste(im, (i * (bw + gap), top))
        d.text((i * (bw + gap) + 2, 2), label, fill=(0, 0, 0))
    path = Path(path)
    with atomic_output(path) as tmp:
        sheet.save(tmp, format="JPEG", quality=85)
    return path


def write_results(out: str | Path, rows: list[dict], summary: list[dict], meta: dict) -> list[Path]:
    from hanrt.io.atomic import atomic_output

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_output(out / "per_page.csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["page", "condition", "method", *METRICS])
            w.writeheader()
            w.writerows(rows)
    with atomic_output(out / "summary.json") as tmp:
        tmp.write_text(json.dumps({**meta, "summary": summary}, indent=1))
    with atomic_output(out / "summary.md") as tmp:
        tmp.write_text(summary_markdown(summary) + "\n")
    return [out / "per_page.csv", out / "summary.json", out / "summary.md"]

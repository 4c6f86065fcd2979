"""Synthetic document pages with exact ink masks (training data and the binarization benchmark).

A page is text rendered with openly licensed fonts from Debian packages (:data:`FONTS`: print
faces and handwriting-like faces, several sizes per page) on a procedurally generated paper
texture, then degraded the way old scans are: ink bleed (the ink spreads), faded ink, show-
through of a mirrored verso, stains, fibres, blur, sensor noise, JPEG. The text is rendered at
twice the page resolution and shrunk with bicubic (antialiasing), so strokes have real sub-pixel
edges.

The ground truth is exact: the ink mask is the ink layer's coverage after the bleed, at the page
resolution, thresholded at one half. Stains, show-through and noise are not ink. Masks are
written the DIBCO way: ink black (0), background white (255).

Everything here is numpy + Pillow + scipy (scikit-image's dependency); no torch. Pages are made
from a seed alone (same fonts installed -> same pages).

    python -m hanrt_bench.docpages DIR --pages 48 --seed 1000            # training pages
    python -m hanrt_bench.docpages DIR --pages 12 --seed 0 --masks       # held-out pages + masks
    python -m hanrt_bench.docpages DIR --pages 120 --seed 1000 --clean   # + clean scans (targets)

With ``--clean``, ``DIR/clean/`` holds each page's clean scan (:func:`make_page_pair`): the
training targets of a restoring document model (``hanrt train --data DIR/images --targets
DIR/clean``).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

__all__ = ["FontSource", "FONTS", "available_fonts", "make_page", "make_page_pair", "write_pages",
           "notice_lines", "IMAGES_DIR", "GT_DIR", "CLEAN_DIR"]

IMAGES_DIR = "images"
GT_DIR = "gt"
CLEAN_DIR = "clean"


@dataclass(frozen=True)
class FontSource:
    package: str  # Debian package that ships the file
    version: str  # the version the bundled model was trained with
    path: str
    license: str
    hand: bool = False  # handwriting-like face


_D = "/usr/share/fonts"
FONTS: tuple[FontSource, ...] = (
    *(FontSource("fonts-dejavu-core", "2.37-6", f"{_D}/truetype/dejavu/{f}", "Bitstream-Vera (DejaVu changes: public domain)")
      for f in ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf")),
    *(FontSource("fonts-liberation2", "2.1.5-1", f"{_D}/truetype/liberation2/{f}", "OFL-1.1")
      for f in ("LiberationSerif-Regular.ttf", "LiberationSerif-Italic.ttf", "LiberationSans-Regular.ttf",
                "LiberationMono-Regular.ttf", "LiberationSerif-Bold.ttf")),
    *(FontSource("fonts-urw-base35", "20200910-7", f"{_D}/opentype/urw-base35/{f}",
                 "AGPL-3 with font exception")
      for f in ("C059-Roman.otf", "P052-Roman.otf", "P052-Italic.otf", "NimbusRoman-Regular.otf",
                "URWBookman-Light.otf", "NimbusMonoPS-Regular.otf", "URWGothic-Book.otf")),
    FontSource("fonts-urw-base35", "20200910-7", f"{_D}/opentype/urw-base35/Z003-MediumItalic.otf",
               "AGPL-3 with font exception", hand=True),
    *(FontSource("fonts-freefont-ttf", "20120503-10", f"{_D}/truetype/freefont/{f}", "GPL-3+ with font exception")
      for f in ("FreeSerif.ttf", "FreeSerifItalic.ttf", "FreeSans.ttf")),
    *(FontSource("fonts-dancingscript", "1.2-2", f"{_D}/opentype/dancingscript/{f}", "OFL-1.1", hand=True)
      for f in ("DancingScript-Regular.otf", "DancingScript-Bold.otf")),
    *(FontSource("fonts-dkg-handwriting", "0.17-1", f"{_D}/truetype/fifthhorseman/{f}", "OFL-1.1", hand=True)
      for f in ("dkg.ttf", "dkgIt.ttf")),
    FontSource("fonts-rufscript", "010-6", f"{_D}/truetype/rufscript/Rufscript010.ttf",
               "GPL-3 with font exception", hand=True),
    *(FontSource("fonts-comic-neue", "2.51-4", f"{_D}/opentype/comic-neue/{f}", "OFL-1.1", hand=True)
      for f in ("ComicNeue-Regular.otf", "ComicNeue-Light.otf")),
)


def available_fonts() -> list[FontSource]:
    """The fonts of :data:`FONTS` installed here; InputError-like ValueError when none is."""
    got = [f for f in FONTS if Path(f.path).is_file()]
    if not got:
        raise FileNotFoundError(
            "no fonts for document pages are installed; install them with: apt-get install "
            + " ".join(sorted({f.package for f in FONTS})))
    return got


def notice_lines(fonts: list[FontSource] | None = None) -> list[str]:
    """One line per Debian package of ``fonts`` (default: all): package, version, licence, files."""
    by_pkg: dict[str, list[FontSource]] = {}
    for f in fonts if fonts is not None else FONTS:
        by_pkg.setdefault(f.package, []).append(f)
    return [f"- Debian {pkg} {fs[0].version} ({fs[0].license}): " + ", ".join(Path(f.path).name for f in fs)
            for pkg, fs in by_pkg.items()]


_SYLL = ("an ar ba be ca chi con de di do el en er es fa for ge gra in is it la le li lo ma me mi "
         "mo na ne no nt on or pa pe per pro qu ra re ri ro sa se si so st ta te ti to tr tu un ur "
         "va ve vi th sh ou ea ai ck ll ss").split()


def _words(rng: np.random.Generator, n: int) -> str:
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            w = str(int(rng.integers(1, 2000)))
        else:
            w = "".join(rng.choice(_SYLL, size=int(rng.integers(1, 5))))
            if rng.random() < 0.15:
                w = w.capitalize()
            if rng.random() < 0.1:
                w += str(rng.choice(list(",.;:")))
        out.append(w)
    return " ".join(out)


def _smooth(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth random field in about -1..1 (noise on a coarse grid, enlarged with bicubic)."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    im = Image.fromarray(g, mode="F").resize((w, h), Image.BICUBIC)
    return np.asarray(im, dtype=np.float32)


def _paper(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = np.array([rng.uniform(222, 250), rng.uniform(210, 242), rng.uniform(175, 232)], np.float32)
    if rng.random() < 0.25:  # greyish modern paper
        base[:] = rng.uniform(205, 245)
    f = 1 + 0.035 * _smooth(rng, h, w, 160) + 0.02 * _smooth(rng, h, w, 40) + 0.01 * _smooth(rng, h, w, 8)
    paper = base[None, None, :] * f[..., None]
    # fibres: short faint strokes
    fib = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(fib)
    for _ in range(int(h * w / 4000 * rng.uniform(0.2, 1.0))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        a, ln = rng.uniform(0, np.pi), rng.uniform(4, 20)
        d.line([(x, y), (x + ln * np.cos(a), y + ln * np.sin(a))], fill=int(rng.integers(10, 40)), width=1)
    paper *= (1 - np.asarray(fib, np.float32)[..., None] / 255.0 * 0.5)
    # vignette / yellowed edges
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    edge = np.minimum(np.minimum(yy, h - 1 - yy), np.minimum(xx, w - 1 - xx)) / (0.15 * min(h, w))
    paper *= (1 - rng.uniform(0, 0.12) * np.clip(1 - edge, 0, 1) ** 2)[..., None]
    return paper


def _text_layer(rng: np.random.Generator, h: int, w: int, fonts: list[FontSource], px_scale: float,
                used: set[str]) -> np.ndarray:
    """Ink coverage 0..1 (float32, h x w) of a page of text lines."""
    layer = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(layer)
    hand = [f for f in fonts if f.hand]
    pick = hand if hand and rng.random() < 0.35 else fonts
    body = pick[int(rng.integers(len(pick)))]
    size = int(rng.uniform(28, 64) * px_scale)
    mx, my = int(rng.uniform(0.04, 0.1) * w), int(rng.uniform(0.03, 0.08) * h)
    y = my
    spacing = rng.uniform(1.15, 1.7)
    while True:
        f, s = body, size
        if rng.random() < 0.12:  # a heading or a line in another face
            f = fonts[int(rng.integers(len(fonts)))]
            s = int(size * rng.uniform(1.0, 1.8))
        font = ImageFont.truetype(f.path, s)
        line_h = int(s * spacing)
        if y + line_h > h - my:
            break
        used.add(f.path)
        x = mx + (int(rng.uniform(0, 3) * s) if rng.random() < 0.15 else 0)
        text = _words(rng, 30)
        while text and d.textlength(text, font=font) > w - mx - x:
            text = text.rsplit(" ", 1)[0] if " " in text else ""
        if text and rng.random() > 0.05:  # some blank lines
            d.text((x, y), text, font=font, fill=255)
        y += line_h
    a = np.asarray(layer.rotate(float(rng.uniform(-1.5, 1.5)), resample=Image.BICUBIC), np.float32) / 255.0
    return a


def _gauss(a: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    if sigma <= 0:
        return a
    return gaussian_filter(a, sigma=(sigma, sigma) + (0,) * (a.ndim - 2), mode="nearest")


def make_page(seed: int, *, width: int = 960, height: int = 1280,
              fonts: list[FontSource] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """One degraded page: (RGB uint8 HxWx3, ink mask bool HxW, recipe dict), from ``seed``."""
    out, _clean, mask, recipe = make_page_pair(seed, width=width, height=height, fonts=fonts)
    return out, mask, recipe


def make_page_pair(seed: int, *, width: int = 960, height: int = 1280,
                   fonts: list[FontSource] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """:func:`make_page` plus the page's *clean scan*: (degraded RGB, clean RGB, ink mask, recipe).

    The clean scan is the same page before the scanner's degradations (blur, sensor noise,
    JPEG): paper, fibres, show-through, stains, faded and bled ink are all in it. It is the
    training target of a restoring document model (input: the degraded page, shrunk). The
    degraded page is exactly :func:`make_page`'s (the random draws are the same)."""
    fonts = fonts or available_fonts()
    rng = np.random.default_rng(seed)
    h, w = height, width
    used: set[str] = set()
    # text at 2x, ink bleed there, then bicubic shrink (antialiased edges)
    a2 = _text_layer(rng, 2 * h, 2 * w, fonts, 2.0, used)
    bleed = float(rng.uniform(0.0, 2.0))
    if bleed > 0.2:
        a2 = np.clip(_gauss(a2, bleed) * rng.uniform(1.1, 1.8), 0, 1)
    cover = np.clip(np.asarray(Image.fromarray(a2, mode="F").resize((w, h), Image.BICUBIC)), 0, 1)
    mask = cover >= 0.5
    paper = _paper(rng, h, w)
    # show-through of a mirrored verso (not ink of this page)
    if rng.random() < 0.6:
        verso = _text_layer(rng, h, w, fonts, 1.0, set())[:, ::-1]
        paper *= (1 - rng.uniform(0.08, 0.3) * _gauss(verso, rng.uniform(1.0, 2.5)))[..., None]
    # stains: soft blobs, brownish
    n_st = int(rng.integers(0, 4))
    for _ in range(n_st):
        blob = _smooth(rng, h, w, int(rng.uniform(60, 200)))
        m = np.clip((blob - rng.uniform(0.8, 1.5)) * 2.0, 0, 1)
        tint = np.array([rng.uniform(0.75, 0.95), rng.uniform(0.65, 0.9), rng.uniform(0.5, 0.8)], np.float32)
        paper *= 1 - m[..., None] * (1 - tint)[None, None, :]
    ink = np.array([rng.uniform(5, 60), rng.uniform(5, 50), rng.uniform(5, 70)], np.float32)
    if rng.random() < 0.2:
        ink = np.array([rng.uniform(10, 50), rng.uniform(20, 60), rng.uniform(80, 140)], np.float32)  # blue ink
    strength = np.clip(rng.uniform(0.75, 1.0) + 0.15 * _smooth(rng, h, w, 120), 0.5, 1.0) * cover
    img = paper * (1 - strength[..., None]) + ink[None, None, :] * strength[..., None]
    clean = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    blur = float(rng.uniform(0.0, 1.0))
    img = _gauss(img, blur)
    noise = float(rng.uniform(1.0, 6.0))
    img = img + rng.standard_normal(img.shape).astype(np.float32) * noise
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    q = int(rng.integers(50, 96)) if rng.random() < 0.7 else None
    if q is not None:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=q)
        buf.seek(0)
        out = np.asarray(Image.open(buf).convert("RGB"))
    recipe = {"seed": seed, "size": [w, h], "bleed_sigma_2x": round(bleed, 3), "stains": n_st,
              "blur_sigma": round(blur, 3), "noise_sigma": round(noise, 3), "jpeg_quality": q,
              "fonts": sorted(Path(p).name for p in used), "ink_fraction": round(float(mask.mean()), 4)}
    return out, clean, mask, recipe


def write_pages(dest: str | Path, n: int, seed: int, *, masks: bool = False, width: int = 960,
                height: int = 1280, prefix: str = "page", clean: bool = False) -> list[Path]:
    """Write ``n`` pages (seeds ``seed .. seed+n-1``) as ``dest/images/PREFIX_SEED.png`` (and with
    ``masks`` ``dest/gt/PREFIX_SEED.png``, ink 0 / background 255; with ``clean`` the clean scan
    as ``dest/clean/PREFIX_SEED.png``) plus ``dest/pages.json`` (the recipe of every page and the
    fonts' sources). Returns the image paths."""
    from hanrt.io.atomic import atomic_output

    dest = Path(dest)
    (dest / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    if masks:
        (dest / GT_DIR).mkdir(parents=True, exist_ok=True)
    if clean:
        (dest / CLEAN_DIR).mkdir(parents=True, exist_ok=True)
    fonts = available_fonts()
    recipes, paths = [], []
    for s in range(seed, seed + n):
        img, clean_img, mask, rec = make_page_pair(s, width=width, height=height, fonts=fonts)
        name = f"{prefix}_{s:05d}.png"
        with atomic_output(dest / IMAGES_DIR / name) as tmp:
            Image.fromarray(img).save(tmp, format="PNG")
        if clean:
            with atomic_output(dest / CLEAN_DIR / name) as tmp:
                Image.fromarray(clean_img).save(tmp, format="PNG")
        if masks:
            with atomic_output(dest / GT_DIR / name) as tmp:
                Image.fromarray(np.where(mask, 0, 255).astype(np.uint8)).save(tmp, format="PNG", optimize=True)
        recipes.append({"file": name, **rec})
        paths.append(dest / IMAGES_DIR / name)
        log.info("page %s: %s", name, rec)
    meta = {"generator": "hanrt_bench.docpages", "pages": recipes,
            "fonts": [asdict(f) for f in fonts]}
    with atomic_output(dest / "pages.json") as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=1))
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hanrt_bench.docpages", description=__doc__.split("\n\n")[0])
    p.add_argument("dest")
    p.add_argument("--pages", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--masks", action="store_true", help="also write the ink masks (dest/gt/)")
    p.add_argument("--clean", action="store_true",
                   help="also write each page's clean scan (dest/clean/): targets for hanrt train --targets")
    p.add_argument("--width", type=int, default=960)
    p.add_argument("--height", type=int, default=1280)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        paths = write_pages(args.dest, args.pages, args.seed, masks=args.masks, width=args.width,
                            height=args.height, clean=args.clean)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(paths)} pages in {args.dest}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

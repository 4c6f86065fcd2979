"""Screenshot-like training images, generated from a seed (text, UI chrome, code, tables).

Comics and screenshots are mostly flat colour, hard edges and small text, which the photo set
lacks. Each image here is a made-up application window: title bar, menu, sidebar list, headings
and paragraphs of made-up words in several faces and sizes, a monospace code block, a table
with grid lines, buttons, simple icons and a chart. Text is rendered with Pillow's antialiasing,
as a desktop renders it. Fonts are the openly licensed Debian fonts of
:data:`hanrt_bench.docpages.FONTS` (print faces, plus Comic Neue); the images are ours.

The same seed gives the same pixels as long as the fonts and Pillow's FreeType rendering are the
same; :mod:`hanrt_export.data` records each image's pixel sha256 so that a change is noticed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["SCREEN_SIZES", "make_screen", "screen_fonts", "screen_font_sources"]

SCREEN_SIZES: tuple[tuple[int, int], ...] = ((1280, 800), (1024, 768), (1366, 768), (960, 1280), (1200, 900))
_MONO = ("DejaVuSansMono.ttf", "LiberationMono-Regular.ttf", "NimbusMonoPS-Regular.otf")
_UI = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "LiberationSans-Regular.ttf", "FreeSans.ttf",
       "URWGothic-Book.otf", "DejaVuSerif.ttf", "LiberationSerif-Regular.ttf", "LiberationSerif-Italic.ttf",
       "C059-Roman.otf", "P052-Roman.otf", "ComicNeue-Regular.otf")


def screen_font_sources() -> list:
    """The :class:`hanrt_bench.docpages.FontSource` of every face used here (installed or not)."""
    from hanrt_bench.docpages import FONTS

    by_name = {Path(f.path).name: f for f in FONTS}
    return [by_name[n] for n in (*_UI, *_MONO)]


def screen_fonts() -> tuple[list, list]:
    """(UI faces, monospace faces) among :data:`hanrt_bench.docpages.FONTS`, in a fixed order.

    Raises FileNotFoundError naming the Debian packages to install when a face is missing (the
    pixels, and so the recorded digests, depend on every face being there)."""
    want = screen_font_sources()
    missing = sorted({f.package for f in want if not Path(f.path).is_file()})
    if missing:
        raise FileNotFoundError("the screenshot generator needs these font packages: apt-get install "
                                + " ".join(missing))
    return want[:len(_UI)], want[len(_UI):]


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))


class _Font:
    """A face at a layout size; drawn at ``size * scale`` pixels."""

    def __init__(self, path: str, size: int, scale: int) -> None:
        self.size, self.real = size, ImageFont.truetype(path, size * scale)


class _ScaledDraw:
    """ImageDraw in layout units: every coordinate, width and font size is multiplied by ``k``
    (a HiDPI rendering of the same layout: sharper strokes, not a blurry enlargement)."""

    def __init__(self, im: Image.Image, k: int) -> None:
        self.d, self.k = ImageDraw.Draw(im), k

    def _xy(self, xy):
        return [v * self.k for v in xy] if not isinstance(xy[0], tuple) else [(x * self.k, y * self.k) for x, y in xy]

    def rectangle(self, xy, **kw):
        self.d.rectangle(self._xy(xy), width=self.k, **kw)

    def rounded_rectangle(self, xy, radius: int = 0, **kw):
        self.d.rounded_rectangle(self._xy(xy), radius=radius * self.k, width=self.k, **kw)

    def ellipse(self, xy, **kw):
        self.d.ellipse(self._xy(xy), **kw)

    def polygon(self, xy, **kw):
        self.d.polygon(self._xy(xy), **kw)

    def line(self, xy, width: int = 1, **kw):
        self.d.line(self._xy(xy), width=width * self.k, **kw)

    def text(self, xy, text: str, font: _Font, **kw):
        self.d.text(tuple(self._xy(xy)), text, font=font.real, **kw)

    def textlength(self, text: str, font: _Font) -> float:
        return self.d.textlength(text, font=font.real) / self.k


def make_screen(seed: int, scale: int = 2) -> Image.Image:
    """One RGB screenshot-like image from ``seed`` (deterministic for given fonts and Pillow).

    ``scale``: pixels per layout unit. The default 2 is a HiDPI screenshot (2560x1600 for a
    1280x800 layout), so that the training recipe's random shrink (0.25-0.6 by default) yields
    text at 5-22 pixels, the sizes of ordinary screenshots, instead of unreadable specks."""
    from hanrt_bench.docpages import _words

    ui, mono = screen_fonts()
    rng = np.random.default_rng(seed)
    w, h = _pick(rng, SCREEN_SIZES)
    dark = rng.random() < 0.3
    bg = _colour(rng, 20, 60) if dark else _colour(rng, 235, 256)
    fg = _colour(rng, 200, 256) if dark else _colour(rng, 0, 50)
    accent = _colour(rng, 40, 220)
    im = Image.new("RGB", (w * scale, h * scale), bg)
    d = _ScaledDraw(im, scale)

    def font(src, size: int) -> _Font:
        return _Font(src.path, size, scale)

    # title bar + menu
    tb = int(rng.integers(24, 40))
    d.rectangle([0, 0, w, tb], fill=accent)
    d.text((10, tb // 2), _words(rng, 4), font=font(_pick(rng, ui), tb * 6 // 10), fill=(255, 255, 255), anchor="lm")
    for i in range(3):
        d.ellipse([w - 30 * (i + 1), tb // 2 - 7, w - 30 * (i + 1) + 14, tb // 2 + 7], fill=_colour(rng, 120, 256))
    mf = font(_pick(rng, ui), int(rng.integers(12, 17)))
    x = 10
    for _ in range(int(rng.integers(4, 8))):
        word = _words(rng, 1)
        d.text((x, tb + 6), word, font=mf, fill=fg)
        x += int(d.textlength(word, font=mf)) + 18
    top = tb + 30
    d.line([0, top - 4, w, top - 4], fill=_colour(rng, 120, 200), width=1)

    # sidebar list with icons
    sw = int(w * rng.uniform(0.16, 0.26))
    side_bg = tuple(max(0, min(255, c + (12 if dark else -12))) for c in bg)
    d.rectangle([0, top, sw, h], fill=side_bg)
    lf = font(_pick(rng, ui), int(rng.integers(11, 16)))
    y = top + 10
    while y < h - 24:
        c = _colour(rng, 30, 230)
        if rng.random() < 0.5:
            d.rectangle([10, y + 2, 24, y + 16], fill=c, outline=fg)
        else:
            d.polygon([(10, y + 16), (17, y + 2), (24, y + 16)], fill=c)
        d.text((32, y), _words(rng, int(rng.integers(1, 4))), font=lf, fill=fg)
        y += int(rng.integers(20, 30))

    # body: headings, paragraphs, code, table, buttons, chart
    x0, y = sw + 20, top + 12
    right = w - 20
    while y < h - 40:
        kind = rng.choice(["para", "para", "head", "code", "table", "buttons", "chart"])
        if kind == "head":
            f = font(_pick(rng, ui), int(rng.integers(20, 36)))
            d.text((x0, y), _words(rng, int(rng.integers(2, 6))), font=f, fill=accent if rng.random() < 0.5 else fg)
            y += int(f.size * 1.5)
        elif kind == "para":
            f = font(_pick(rng, ui), int(rng.integers(10, 19)))
            line_h = int(f.size * rng.uniform(1.25, 1.6))
            for _ in range(int(rng.integers(2, 7))):
                words = _words(rng, 40).split()
                line = ""
                for wd in words:
                    if d.textlength(line + " " + wd, font=f) > right - x0:
                        break
                    line = (line + " " + wd).strip()
                d.text((x0, y), line, font=f, fill=fg)
                y += line_h
            y += line_h // 2
        elif kind == "code":
            f = font(_pick(rng, mono), int(rng.integers(11, 16)))
            n = int(rng.integers(3, 9))
            code_bg = _colour(rng, 30, 50) if rng.random() < 0.5 else _colour(rng, 238, 250)
            code_fg = (220, 220, 220) if sum(code_bg) < 300 else (30, 30, 30)
            d.rectangle([x0, y, right, y + n * int(f.size * 1.4) + 12], fill=code_bg)
            for i in range(n):
                indent = "    " * int(rng.integers(0, 3))
                words = _words(rng, int(rng.integers(2, 7)))
                txt = indent + words.replace(" ", str(rng.choice(["_", "(", " = ", ".", " "])))
                d.text((x0 + 8, y + 6 + i * int(f.size * 1.4)), txt, font=f,
                       fill=_colour(rng, 60, 256) if rng.random() < 0.3 else code_fg)
            y += n * int(f.size * 1.4) + 24
        elif kind == "table":
            f = font(_pick(rng, ui), int(rng.integers(10, 15)))
            cols, rows = int(rng.integers(3, 7)), int(rng.integers(3, 9))
            cw, rh = (right - x0) // cols, int(f.size * 1.9)
            for r in range(rows + 1):
                if r == 0:
                    d.rectangle([x0, y, x0 + cols * cw, y + rh], fill=_colour(rng, 180, 240))
                for c in range(cols):
                    d.text((x0 + c * cw + 5, y + r * rh + rh // 2),
                           _words(rng, 1) if r == 0 or rng.random() < 0.5 else f"{rng.uniform(0, 1e4):.2f}",
                           font=f, fill=(0, 0, 0) if r == 0 else fg, anchor="lm")
                d.line([x0, y + r * rh, x0 + cols * cw, y + r * rh], fill=_colour(rng, 90, 200))
            for c in range(cols + 1):
                d.line([x0 + c * cw, y, x0 + c * cw, y + (rows + 1) * rh], fill=_colour(rng, 90, 200))
            y += (rows + 1) * rh + 16
        elif kind == "buttons":
            f = font(_pick(rng, ui), int(rng.integers(12, 17)))
            x = x0
            for _ in range(int(rng.integers(2, 5))):
                t = _words(rng, 1)
                tw = int(d.textlength(t, font=f)) + 24
                d.rounded_rectangle([x, y, x + tw, y + f.size + 14], radius=int(rng.integers(0, 9)),
                                    fill=_colour(rng, 40, 240), outline=fg)
                d.text((x + tw // 2, y + (f.size + 14) // 2), t, font=f, fill=(255, 255, 255), anchor="mm")
                x += tw + 12
            y += f.size + 30
        else:  # chart
            ch = int(rng.integers(80, 180))
            n = int(rng.integers(5, 20))
            bw = (right - x0) // (n * 2)
            for i in range(n):
                bh = int(rng.uniform(0.1, 1.0) * ch)
                d.rectangle([x0 + i * 2 * bw, y + ch - bh, x0 + i * 2 * bw + bw, y + ch], fill=_colour(rng, 30, 230))
            d.line([x0, y + ch, right, y + ch], fill=fg, width=2)
            y += ch + 20
    return im

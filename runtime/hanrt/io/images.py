"""Reading and writing images (PNG, JPEG, WebP, TIFF, BMP, GIF) through Pillow.

Reading (:func:`read_image`) returns pixels as numpy ``HxW`` (grey), ``HxWx2`` (grey + alpha),
``HxWx3`` (RGB) or ``HxWx4`` (RGBA), dtype ``uint8`` or ``uint16``:

- the EXIF orientation is applied (the pixels are upright; the tag is not carried over);
- the ICC profile is kept (:attr:`ImageData.icc_profile`) and written back by :func:`write_image`;
- 16-bit stays 16-bit: grey (``I;16``) through Pillow; 16-bit colour (which Pillow reduces to 8
  bits) through OpenCV when it is installed (``'hanrt[camera]'``), else 8 bits with a warning;
- palette images become RGB(A), CMYK/YCbCr/LAB become RGB, 1-bit becomes grey;
- Pillow's decompression-bomb guard is replaced by an explicit limit (``max_pixels``), refused
  with one message that names the flag lifting it (``--max-pixels``);
- missing, unreadable, truncated or non-image files raise :class:`~hanrt.errors.InputError`.

:func:`read_rgb8` reads the same way (same guards) and returns plain ``HxWx3`` ``uint8`` RGB, for
callers that want nothing else (calibration, benchmarks, quality evaluation): grey is replicated,
alpha dropped, 16 bits rounded to 8 (:func:`to_rgb8`).

Writing (:func:`write_image`) is atomic (:func:`hanrt.io.atomic.atomic_output`): a temporary file
in the target folder, flushed to disk, then a rename, so a failure leaves nothing half-written.
PNGs are written by a small streaming encoder here (8 and 16 bits; Pillow cannot hold 16-bit colour, and would copy a large 8-bit image once more); 16-bit colour (and grey + alpha) TIFF needs OpenCV; JPEG,
WebP and BMP are 8-bit formats (16-bit input is reduced with a warning). Pillow's encoders write
into memory first, and the bytes are written with an ordinary checked ``write`` (Pillow's JPEG
writer does not report a short write on a full disk).

Animations (an animated GIF, WebP or PNG: more than one frame) are read whole by
:func:`read_animation` (frames, per-frame durations, loop count) and written by
:func:`write_animation` as an animated GIF, WebP or PNG (:data:`ANIMATION_FORMATS`); a still
format for an animation is refused by :func:`check_animation_output`. :func:`frame_count` tells
them apart without decoding.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputError, UsageError
from .atomic import atomic_output

__all__ = [
    "ImageData",
    "read_image",
    "read_rgb8",
    "to_rgb8",
    "write_image",
    "IMAGE_SUFFIXES",
    "DEFAULT_MAX_PIXELS",
    "format_for",
    "apply_orientation",
    "Animation",
    "ANIMATION_FORMATS",
    "frame_count",
    "read_animation",
    "write_animation",
    "check_animation_output",
]

log = logging.getLogger(__name__)

#: File suffixes handled here and the Pillow format written for each.
IMAGE_SUFFIXES: dict[str, str] = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP",
    ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP", ".gif": "GIF",
}
#: Formats an animation can be written to.
ANIMATION_FORMATS = ("GIF", "WEBP", "PNG")
#: Largest input accepted by default (Pillow's own default guard: 89,478,485 pixels).
DEFAULT_MAX_PIXELS = 89_478_485

_PIL_LOCK = threading.Lock()


@dataclass(frozen=True)
class ImageData:
    """A decoded image. ``pixels``: see the module docstring (owned by the caller).
    ``bits``: 8 or 16. ``format``: Pillow's format name of the source (``"PNG"``...)."""

    pixels: np.ndarray
    icc_profile: bytes | None
    format: str
    bits: int
    source: str = ""

    @property
    def has_alpha(self) -> bool:
        return self.pixels.ndim == 3 and self.pixels.shape[2] in (2, 4)


def format_for(path: str | os.PathLike) -> str:
    """Pillow format for an output path's suffix; UsageError for an unknown suffix."""
    suf = Path(path).suffix.lower()
    if suf not in IMAGE_SUFFIXES:
        raise UsageError(
            f"cannot write {str(path)!r}: unknown image suffix {suf or '(none)'!r}; use one of "
            f"{', '.join(sorted(IMAGE_SUFFIXES))}."
        )
    return IMAGE_SUFFIXES[suf]


def apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Return ``a`` (HxW[xC]) turned upright for EXIF orientation 1..8 (as ``ImageOps.exif_transpose``)."""
    if orientation == 2:
        a = a[:, ::-1]
    elif orientation == 3:
        a = a[::-1, ::-1]
    elif orientation == 4:
        a = a[::-1]
    elif orientation == 5:
        a = a.swapaxes(0, 1)
    elif orientation == 6:
        a = np.rot90(a, -1)
    elif orientation == 7:
        a = np.rot90(a, 2).swapaxes(0, 1)
    elif orientation == 8:
        a = np.rot90(a, 1)
    return np.ascontiguousarray(a)


def _bomb_message(path: str, w: int, h: int, limit: int) -> str:
    return (
        f"{path!r} is {w}x{h} = {w * h:,} pixels, above the limit of {limit:,} pixels (a guard "
        f"against decompression bombs). If you trust this file, raise the limit: hanrt upscale "
        f"--max-pixels {w * h} (0: no limit), or max_pixels= in Python; elsewhere, shrink or "
        f"crop the image first."
    )


def read_image(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageData:
    """Read an image file (see the module docstring). ``max_pixels``: ``None``/``0`` = no limit."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    src = str(p)
    if not p.exists():
        raise InputError(f"{src!r} does not exist.")
    if p.is_dir():
        raise InputError(f"{src!r} is a folder, not an image.")
    if p.stat().st_size == 0:
        raise InputError(f"{src!r} is empty (0 bytes).")
    # Pillow warns (UserWarning) about damaged metadata it skips, e.g. corrupt EXIF: a log line, not
    # a Python warning on stderr (or an error where warnings are errors)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return _read_image(p, src, max_pixels)
        finally:
            for w in caught:
                if not issubclass(w.category, DeprecationWarning) and "DecompressionBomb" not in w.category.__name__:
                    log.warning("%s: %s", p.name, w.message)


def _read_image(p: Path, src: str, max_pixels: int | None) -> ImageData:
    from PIL import Image, UnidentifiedImageError

    with _PIL_LOCK:  # Pillow's guard is a module global: we lift it only while we check our own
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(p)
        except UnidentifiedImageError:
            raise InputError(f"{src!r} is not an image Pillow can read (unknown or corrupt format).") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise InputError(f"cannot read {src!r}: {exc}.") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    with im:
        w, h = im.size
        if w == 0 or h == 0:
            raise InputError(f"{src!r} is empty ({w}x{h} pixels).")
        if max_pixels and w * h > max_pixels:
            raise InputError(_bomb_message(src, w, h, max_pixels))
        raw = _rawmode(im)  # before anything loads the pixels: load() clears im.tile
        try:
            orientation = int(im.getexif().get(0x0112, 1) or 1)
        except (ValueError, TypeError, OSError, SyntaxError, struct.error):
            orientation = 1
        icc = im.info.get("icc_profile") or None
        fmt = im.format or ""
        try:
            im.load()
        except (OSError, ValueError, SyntaxError, struct.error, zlib.error) as exc:
            raise InputError(f"cannot decode {src!r} (truncated or corrupt): {exc}.") from None
        pixels, bits, icc = _to_array(im, p, icc, raw)
    if orientation in range(2, 9):
        pixels = apply_orientation(pixels, orientation)
    return ImageData(pixels, icc, fmt, bits, src)


def read_rgb8(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image as ``HxWx3`` ``uint8`` RGB (C-contiguous, owned by the caller).

    Reads through :func:`read_image` (EXIF orientation applied, ``max_pixels`` guard, the same
    :class:`~hanrt.errors.InputError` for bad files), then :func:`to_rgb8`.
    """
    return to_rgb8(read_image(path, max_pixels=max_pixels).pixels)


def to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """``HxWx3`` ``uint8`` RGB from any shape/dtype :func:`read_image` returns: grey (``HxW``,
    ``HxWx1``) is replicated to three channels, alpha (``HxWx2``, ``HxWx4``) is dropped (not
    composited), 16-bit values are rounded to 8 bits (``v / 257``, so 65535 -> 255)."""
    a = np.asarray(pixels)
    if a.dtype == np.uint16:
        a = _to_8bit(a)
    elif a.dtype != np.uint8:
        raise UsageError(f"expected uint8 or uint16 pixels, got {a.dtype}.")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise UsageError(f"expected HxW or HxWxC (C = 1..4) pixels, got shape {a.shape}.")
    a = a[..., :3] if a.shape[2] >= 3 else np.repeat(a[..., :1], 3, axis=2)
    return np.ascontiguousarray(a)


def _to_8bit(a: np.ndarray) -> np.ndarray:
    """uint16 -> uint8, rounded (``(v + 128) // 257``)."""
    return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _rawmode(im) -> str:
    try:
        args = im.tile[0][3]
    except (IndexError, TypeError, AttributeError):
        return ""
    return str(args[0] if isinstance(args, tuple) and args else args)


def _to_array(im, path: Path, icc: bytes | None, raw: str) -> tuple[np.ndarray, int, bytes | None]:
    mode = im.mode
    if mode in ("RGB", "RGBA"):
        deep = _is_16bit_colour(im, path, raw)
        if deep is not None:
            return deep, 16, icc
        return np.asarray(im), 8, icc
    if mode in ("L", "LA"):
        return np.asarray(im), 8, icc
    if mode == "1":
        return np.asarray(im.convert("L")), 8, icc
    if mode in ("P", "PA"):
        alpha = mode == "PA" or "transparency" in im.info
        return np.asarray(im.convert("RGBA" if alpha else "RGB")), 8, icc
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16, copy=False), 16, icc
    if mode == "I":
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise InputError(f"{str(path)!r} holds 32-bit integer pixels outside 0..65535; hanrt reads 8 and 16 bits.")
        return a.astype(np.uint16), 16, icc
    if mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
        # An ICC profile of a CMYK/LAB image describes that space, not the RGB we hand on.
        return np.asarray(im.convert("RGB")), 8, (icc if mode in ("YCbCr", "RGBX", "RGBa") else None)
    raise InputError(f"{str(path)!r} has pixel mode {mode!r}, which hanrt does not upscale (8/16-bit grey or colour).")


def _is_16bit_colour(im, path: Path, raw: str) -> np.ndarray | None:
    """Pillow reduces 16-bit colour PNG/TIFF (and 16-bit grey+alpha PNG) to 8 bits; read the full
    depth with OpenCV if present."""
    bps = None
    if im.format == "TIFF":
        try:
            bps = im.tag_v2.get(258)
        except AttributeError:
            bps = None
    deep = ";16" in raw or (isinstance(bps, tuple) and bps and bps[0] == 16)
    if not deep:
        return None
    try:
        import cv2
    except ImportError:
        log.warning("%s is 16-bit colour; Pillow reads it as 8 bits. Install OpenCV "
                    "(pip install 'hanrt[camera]') to keep 16 bits.", path.name)
        return None
    data = np.fromfile(str(path), dtype=np.uint8)
    a = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if a is None or a.dtype != np.uint16 or a.ndim != 3:
        return None
    if a.shape[2] == 3:
        return np.ascontiguousarray(a[..., ::-1])  # BGR -> RGB
    if a.shape[2] == 4:
        if raw.startswith("LA"):
            return np.ascontiguousarray(a[..., [0, 3]])  # grey + alpha, decoded by OpenCV as BGRA
        return np.ascontiguousarray(a[..., [2, 1, 0, 3]])
    return None


# --- writing ---------------------------------------------------------------------------------

def write_image(
    path: str | os.PathLike,
    pixels: np.ndarray,
    *,
    icc_profile: bytes | None = None,
    overwrite: bool = False,
    quality: int = 95,
    fsync: bool = True,
) -> None:
    """Write ``pixels`` (shapes/dtypes as :func:`read_image` returns) to ``path`` atomically.

    The format comes from the suffix (:data:`IMAGE_SUFFIXES`). ``quality``: JPEG/WebP quality.
    ``fsync=False`` skips flushing to the disk before the rename (still never half-written for
    readers; only a power cut may lose the newest file) — for video frames, where a flush per
    frame costs throughput on SD cards.
    Raises OutputError if the file exists and ``overwrite`` is false, or it cannot be written.
    """
    from PIL import Image

    p = Path(path)
    fmt = format_for(p)
    a = np.asarray(pixels)
    if a.dtype not in (np.uint8, np.uint16) or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 2, 3, 4)):
        raise UsageError(f"cannot write a {a.shape} {a.dtype} array as an image.")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.dtype == np.uint16 and fmt in ("JPEG", "WEBP", "BMP", "GIF"):
        log.warning("%s holds 8 bits per channel: the 16-bit result is reduced to 8 bits (write .png or .tif to keep 16).", p.name)
        a = _to_8bit(a)
    c = 1 if a.ndim == 2 else a.shape[2]
    if fmt == "JPEG" and c in (2, 4):
        log.warning("%s: JPEG has no alpha channel; the alpha is dropped (write .png/.webp/.tif to keep it).", p.name)
        a = a[..., 0] if c == 2 else a[..., :3]
        c = 1 if c == 2 else 3
    try:
        with atomic_output(p, overwrite=overwrite, fsync=fsync) as tmp:
            if fmt == "PNG":
                with open(tmp, "wb") as f:
                    _write_png(f, np.ascontiguousarray(a), icc_profile)
            elif a.dtype == np.uint16 and c != 1:
                _write_tiff16_colour(tmp, a, p)
            else:
                if a.dtype == np.uint16:
                    im = Image.fromarray(np.ascontiguousarray(a))  # I;16 grey: PNG and TIFF keep 16 bits
                elif c == 2:
                    im = Image.fromarray(np.ascontiguousarray(a), "LA")
                    if fmt in ("BMP", "WEBP", "GIF"):
                        im = im.convert("RGBA")
                else:
                    im = Image.fromarray(np.ascontiguousarray(a))
                kw: dict = {}
                if icc_profile and fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
                    kw["icc_profile"] = icc_profile
                if fmt in ("JPEG", "WEBP"):
                    kw["quality"] = quality
                if fmt == "GIF" and im.mode not in ("L", "P"):
                    log.warning("%s: GIF holds 256 colours; the result is quantized (write .png to keep all).", p.name)
                _write_bytes(tmp, _encode(im, fmt, **kw))
    except OSError as exc:
        raise OutputError(f"cannot write {str(p)!r}: {exc.strerror or exc}.") from None
    except ValueError as exc:  # Pillow's encoders refuse some sizes/modes this way (WebP > 16383 px)
        raise OutputError(f"cannot encode {str(p)!r} as {fmt}: {exc}.") from None


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _paeth_filter(raw: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """PNG filter type 4 (Paeth) of ``raw`` rows (uint8, ``rows x bytes``) given the row above the
    first (``prev``). Encoding is vectorizable: every predictor input is an unfiltered byte."""
    up = np.empty_like(raw)
    up[0] = prev
    up[1:] = raw[:-1]
    a = np.zeros(raw.shape, np.int16)
    a[:, bpp:] = raw[:, :-bpp]
    b = up.astype(np.int16)
    c = np.zeros(raw.shape, np.int16)
    c[:, bpp:] = b[:, :-bpp]
    pa = np.abs(b - c)          # |p - a| with p = a + b - c
    pb = np.abs(a - c)          # |p - b|
    pc = np.abs(a + b - 2 * c)  # |p - c|
    pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    return (raw.astype(np.int16) - pred).astype(np.uint8)


def _write_png(f, a: np.ndarray, icc: bytes | None, *, level: int = 6, rows_per_strip: int = 32) -> None:
    """Streaming PNG encoder for uint8/uint16 grey, grey+alpha, RGB and RGBA (Paeth filter).

    Rows are filtered and compressed a strip at a time, so memory stays at the image plus a strip
    (Pillow would first copy the whole image into its own 4-bytes-per-pixel storage). Pillow cannot
    hold 16-bit colour at all; this writes it.
    """
    h, w = a.shape[:2]
    c = 1 if a.ndim == 2 else a.shape[2]
    depth = 16 if a.dtype == np.uint16 else 8
    bpp = c * depth // 8
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    f.write(b"\x89PNG\r\n\x1a\n")
    f.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0)))
    if icc:
        f.write(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    comp = zlib.compressobj(level)
    idat = bytearray()
    prev = np.zeros(w * bpp, np.uint8)
    for y in range(0, h, rows_per_strip):
        strip = a[y:y + rows_per_strip]
        n = strip.shape[0]
        raw = (strip.astype(">u2") if depth == 16 else np.ascontiguousarray(strip)).reshape(n, -1).view(np.uint8)
        rows = np.empty((n, 1 + w * bpp), dtype=np.uint8)
        rows[:, 0] = 4
        rows[:, 1:] = _paeth_filter(raw, prev, bpp)
        prev = raw[-1].copy()
        idat += comp.compress(rows.tobytes())
        if len(idat) > (1 << 20):
            f.write(_png_chunk(b"IDAT", bytes(idat)))
            idat.clear()
    idat += comp.flush()
    f.write(_png_chunk(b"IDAT", bytes(idat)))
    f.write(_png_chunk(b"IEND", b""))


def _write_tiff16_colour(tmp: Path, a: np.ndarray, p: Path) -> None:
    """16-bit TIFF of ``a`` (HxWx2 grey + alpha, HxWx3 RGB or HxWx4 RGBA) through OpenCV. Grey +
    alpha is written as RGBA (TIFF through OpenCV has no 2-channel form); it reads back as HxWx4."""
    try:
        import cv2
    except ImportError:
        raise OutputError(
            f"cannot write {p.name}: 16-bit colour TIFF needs OpenCV (pip install 'hanrt[camera]'); "
            f"write a .png to keep 16 bits without it."
        ) from None
    # OpenCV writes 1, 3 or 4 channels: grey + alpha goes out as BGRA (grey in B, G and R).
    order = {2: [0, 0, 0, 1], 3: [2, 1, 0], 4: [2, 1, 0, 3]}[a.shape[2]]
    bgr = a[..., order]
    ok, buf = cv2.imencode(".tiff", np.ascontiguousarray(bgr))
    if not ok:
        raise OutputError(f"OpenCV could not encode {p.name} as a 16-bit TIFF.")
    _write_bytes(tmp, buf)


def _encode(im, fmt: str, **kw) -> memoryview:
    """Pillow's encoding of ``im`` as ``fmt``, in memory."""
    import io

    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getbuffer()


def _write_bytes(tmp: Path, data) -> None:
    """Write ``data`` to ``tmp`` with checked writes (a full disk raises OSError, never truncates)."""
    with open(tmp, "wb") as f:
        n = f.write(data)
    size = memoryview(data).nbytes
    if n != size or tmp.stat().st_size != size:  # belt and braces: a short write is an error
        raise OSError(f"short write: {tmp.stat().st_size} of {size} bytes")


# --- animations ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Animation:
    """An animated image: ``frames`` (each ``HxWx3`` or ``HxWx4`` uint8, one size, owned by the
    caller), ``durations`` (ms each), ``loop`` (0: forever; ``None``: play once)."""

    frames: list
    durations: list
    loop: int | None
    source: str = ""


def frame_count(path: str | os.PathLike) -> int:
    """Number of frames of an image file (1 for stills, and for files Pillow cannot open: the
    reader then reports them)."""
    from PIL import Image

    try:
        with _PIL_LOCK:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    im = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        with im:
            if im.format not in ANIMATION_FORMATS:
                return 1
            return int(getattr(im, "n_frames", 1) or 1)
    except Exception:  # noqa: BLE001 - any failure here is reported by read_image with its reason
        return 1


def check_animation_output(src: str | os.PathLike, dst: str | os.PathLike, frames: int) -> None:
    """UsageError unless ``dst`` can hold an animation of ``frames`` frames read from ``src``."""
    fmt = format_for(dst)
    if fmt not in ANIMATION_FORMATS:
        raise UsageError(
            f"{str(src)!r} is an animation ({frames} frames) and {fmt} holds one picture: write it to "
            f".gif, .webp or .png (animated), e.g. --output {Path(dst).with_suffix('.gif').name}."
        )


def read_animation(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Animation:
    """Read every frame of an animated GIF/WebP/PNG as RGB (RGBA when any frame has transparency).
    ``max_pixels`` limits the pixels of all frames together (``None``/``0``: no limit)."""
    from PIL import Image, ImageSequence

    first = read_image(path, max_pixels=max_pixels)  # the same checks and messages as a still
    src = first.source
    try:
        with Image.open(path) as im:
            n = int(getattr(im, "n_frames", 1) or 1)
            w, h = im.size
            if max_pixels and n * w * h > max_pixels:
                raise InputError(
                    f"{src!r} is an animation of {n} frames of {w}x{h} = {n * w * h:,} pixels, above the "
                    f"limit of {max_pixels:,} pixels. If you trust this file, raise the limit: hanrt "
                    f"upscale --max-pixels {n * w * h} (0: no limit).")
            frames, durations = [], []
            alpha = any(f.mode in ("RGBA", "LA", "PA") or "transparency" in f.info
                        for f in ImageSequence.Iterator(im))
            for f in ImageSequence.Iterator(im):
                durations.append(int(f.info.get("duration", im.info.get("duration", 100)) or 100))
                frames.append(np.asarray(f.convert("RGBA" if alpha else "RGB")))
            loop = im.info.get("loop")
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error) as exc:
        raise InputError(f"cannot decode {src!r} (truncated or corrupt animation): {exc}.") from None
    if any(f.shape != frames[0].shape for f in frames):
        raise InputError(f"{src!r}: the frames of this animation differ in size.")
    return Animation(frames, durations, None if loop is None else int(loop), src)


def write_animation(path: str | os.PathLike, anim: Animation, *, overwrite: bool = False,
                    quality: int = 95) -> None:
    """Write ``anim`` as an animated GIF, WebP or PNG (by suffix), atomically."""
    from PIL import Image

    p = Path(path)
    fmt = format_for(p)
    check_animation_output(anim.source or p, p, len(anim.frames))
    ims = [Image.fromarray(np.ascontiguousarray(f)) for f in anim.frames]
    kw: dict = {"save_all": True, "append_images": ims[1:], "duration": list(anim.durations)}
    if anim.loop is not None:
        kw["loop"] = anim.loop
    if fmt == "WEBP":
        kw["quality"] = quality
    if fmt == "GIF":
        kw["disposal"] = 2 if ims[0].mode == "RGBA" else 1
    try:
        with atomic_output(p, overwrite=overwrite) as tmp:
            _write_bytes(tmp, _encode(ims[0], fmt, **kw))
    except OSError as exc:
        raise OutputError(f"cannot write {str(p)!r}: {exc.strerror or exc}.") from None
    except ValueError as exc:
        raise OutputError(f"cannot encode {str(p)!r} as an animated {fmt}: {exc}.") from None

"""Image reading and writing with Pillow: formats, EXIF orientation, ICC, 16 bits, grey/alpha,
the decompression-bomb guard, bad files, atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from hanrt.errors import InputError, OutputError, UsageError
from hanrt.io.images import apply_orientation, format_for, read_image, read_rgb8, to_rgb8, write_image


@pytest.fixture(scope="module")
def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture()
def rgb(photo_small):
    return photo_small


@pytest.mark.parametrize("suffix,lossless", [(".png", True), (".bmp", True), (".tif", True),
                                              (".webp", False), (".jpg", False)])
def test_round_trip_formats(tmp_path, rgb, suffix, lossless):
    p = tmp_path / f"x{suffix}"
    write_image(p, rgb)
    back = read_image(p)
    assert back.pixels.shape == rgb.shape and back.pixels.dtype == np.uint8 and back.bits == 8
    if lossless:
        np.testing.assert_array_equal(back.pixels, rgb)
    else:
        assert np.abs(back.pixels.astype(int) - rgb.astype(int)).mean() < 6


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied(tmp_path, orientation):
    a = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = orientation
    p = tmp_path / "o.jpg"
    im.save(p, exif=exif, quality=100)
    got = read_image(p).pixels
    with Image.open(p) as raw:
        ref = np.asarray(ImageOps.exif_transpose(raw))
    np.testing.assert_array_equal(got, ref)
    assert got.shape[:2] == ((7, 5) if orientation >= 5 else (5, 7))
    np.testing.assert_array_equal(apply_orientation(a, 1), a)


def test_icc_profile_kept(tmp_path, rgb, srgb_icc):
    src = tmp_path / "in.png"
    Image.fromarray(rgb).save(src, icc_profile=srgb_icc)
    img = read_image(src)
    assert img.icc_profile == srgb_icc
    for suf in (".png", ".jpg", ".webp", ".tif"):
        out = tmp_path / f"out{suf}"
        write_image(out, img.pixels, icc_profile=img.icc_profile)
        with Image.open(out) as im:
            assert im.info.get("icc_profile") == srgb_icc, suf


def test_16bit_grey_stays_16bit(tmp_path):
    g = np.random.default_rng(0).integers(0, 65536, (9, 11), dtype=np.uint16)
    for suf in (".png", ".tif"):
        p = tmp_path / f"g{suf}"
        write_image(p, g)
        back = read_image(p)
        assert back.bits == 16 and back.pixels.dtype == np.uint16
        np.testing.assert_array_equal(back.pixels, g)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_colour_png_round_trip(tmp_path, channels, srgb_icc):
    pytest.importorskip("cv2")  # Pillow reads 16-bit colour as 8 bits; OpenCV keeps 16
    a = np.random.default_rng(channels).integers(0, 65536, (9, 11, channels), dtype=np.uint16)
    p = tmp_path / "c16.png"
    write_image(p, a, icc_profile=srgb_icc)
    back = read_image(p)
    assert back.bits == 16 and back.icc_profile == srgb_icc
    np.testing.assert_array_equal(back.pixels, a)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_colour_and_grey_alpha_tiff(tmp_path, channels):
    """16-bit TIFF through OpenCV; grey + alpha (what a 16-bit LA PNG reads as) is written as RGBA."""
    pytest.importorskip("cv2")
    a = np.random.default_rng(10 + channels).integers(0, 65536, (9, 11, channels), dtype=np.uint16)
    p = tmp_path / "c16.tif"
    write_image(p, a)
    back = read_image(p)
    assert back.bits == 16 and back.pixels.dtype == np.uint16
    if channels == 2:
        np.testing.assert_array_equal(back.pixels, a[..., [0, 0, 0, 1]])
    else:
        np.testing.assert_array_equal(back.pixels, a)
    assert [f.name for f in tmp_path.iterdir()] == ["c16.tif"]  # no temporary file left


def test_16bit_png_is_a_valid_png_for_pillow(tmp_path):
    a = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 4000).astype(np.uint16)
    p = tmp_path / "c16.png"
    write_image(p, a)
    with Image.open(p) as im:
        im.load()
        assert im.mode == "RGB" and im.size == (5, 4)
        # Pillow reduces to the high byte
        np.testing.assert_array_equal(np.asarray(im), (a >> 8).astype(np.uint8))


def test_16bit_to_8bit_formats_warns_and_reduces(tmp_path, caplog):
    a = np.full((4, 4, 3), 257 * 200, np.uint16)
    write_image(tmp_path / "x.jpg", a)
    assert any("8 bits" in r.getMessage() for r in caplog.records)
    assert abs(int(read_image(tmp_path / "x.jpg").pixels.mean()) - 200) <= 1


def test_grey_alpha_palette(tmp_path):
    rng = np.random.default_rng(5)
    g = rng.integers(0, 256, (6, 8), dtype=np.uint8)
    write_image(tmp_path / "g.png", g)
    assert read_image(tmp_path / "g.png").pixels.shape == (6, 8)
    la = rng.integers(0, 256, (6, 8, 2), dtype=np.uint8)
    write_image(tmp_path / "la.png", la)
    np.testing.assert_array_equal(read_image(tmp_path / "la.png").pixels, la)
    rgba = rng.integers(0, 256, (6, 8, 4), dtype=np.uint8)
    write_image(tmp_path / "a.webp", rgba)  # lossy colour, but alpha present
    assert read_image(tmp_path / "a.webp").pixels.shape == (6, 8, 4)
    p = Image.fromarray(g).convert("P")
    p.info["transparency"] = 0
    p.save(tmp_path / "p.png", transparency=0)
    assert read_image(tmp_path / "p.png").pixels.shape == (6, 8, 4)
    Image.fromarray(g > 128).save(tmp_path / "b.png")
    assert read_image(tmp_path / "b.png").pixels.dtype == np.uint8


def test_jpeg_drops_alpha_with_a_warning(tmp_path, caplog):
    rgba = np.zeros((4, 4, 4), np.uint8)
    write_image(tmp_path / "x.jpg", rgba)
    assert read_image(tmp_path / "x.jpg").pixels.shape == (4, 4, 3)
    assert any("alpha" in r.getMessage() for r in caplog.records)


def test_decompression_bomb_guard_names_the_flag(tmp_path, monkeypatch):
    p = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(p)
    with pytest.raises(InputError, match=r"--max-pixels 60000"):
        read_image(p, max_pixels=1000)
    # Pillow's own global guard is replaced by ours: a tiny Pillow limit does not interfere
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    assert read_image(p, max_pixels=0).pixels.shape == (200, 300, 3)
    assert Image.MAX_IMAGE_PIXELS == 10  # restored


def _png_header_only(path, w: int, h: int) -> None:
    """A PNG that claims ``w`` x ``h`` pixels (IHDR) and holds none: what a decompression bomb
    looks like before decoding."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_read_rgb8_16bit_png_is_rounded_to_8_bits(tmp_path):
    g = np.array([[0, 128, 129, 257], [32767, 65278, 65407, 65535]], np.uint16)
    Image.fromarray(g).save(tmp_path / "g16.png")  # I;16 grey through Pillow
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I;16")
    want = np.array([[0, 0, 1, 1], [127, 254, 255, 255]], np.uint8)  # round(v / 257)
    got = read_rgb8(tmp_path / "g16.png")
    assert got.dtype == np.uint8 and got.shape == (2, 4, 3) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, np.repeat(want[..., None], 3, axis=2))


def test_read_rgb8_16bit_colour_png(tmp_path):
    pytest.importorskip("cv2")  # without OpenCV Pillow reads 16-bit colour as 8 bits (its high byte)
    a = np.random.default_rng(3).integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    write_image(tmp_path / "c16.png", a)
    assert read_image(tmp_path / "c16.png").bits == 16
    np.testing.assert_array_equal(read_rgb8(tmp_path / "c16.png"), ((a.astype(np.uint32) + 128) // 257).astype(np.uint8))


def test_read_rgb8_drops_alpha_without_compositing(tmp_path):
    rgba = np.random.default_rng(4).integers(0, 256, (6, 7, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: the colour must still come back as stored
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = read_rgb8(tmp_path / "a.png")
    assert got.shape == (6, 7, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, rgba[..., :3])
    la = rgba[..., [0, 3]]
    Image.fromarray(np.ascontiguousarray(la), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_rgb8(tmp_path / "la.png"), np.repeat(la[..., :1], 3, axis=2))


def test_read_rgb8_applies_exif_orientation(tmp_path):
    a = np.random.default_rng(6).integers(0, 256, (5, 8, 3), dtype=np.uint8)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    p = tmp_path / "r.jpg"
    im.save(p, exif=exif, quality=100)
    got = read_rgb8(p)
    with Image.open(p) as raw:
        ref = np.asarray(ImageOps.exif_transpose(raw).convert("RGB"))
        plain = np.asarray(raw.convert("RGB"))  # what a bare Image.open(...).convert("RGB") gives
    assert got.shape == (8, 5, 3) and plain.shape == (5, 8, 3)
    np.testing.assert_array_equal(got, ref)


def test_read_rgb8_refuses_oversized_images(tmp_path):
    p = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(p)
    with pytest.raises(InputError, match=r"above the limit of 1,000 pixels.*--max-pixels 60000"):
        read_rgb8(p, max_pixels=1000)
    assert read_rgb8(p, max_pixels=0).shape == (200, 300, 3)
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 20000, 5000)  # 100 M pixels: over the default limit, refused before decoding
    with pytest.raises(InputError, match=r"100,000,000 pixels, above the limit of 89,478,485"):
        read_rgb8(bomb)
    with pytest.raises(InputError, match="not an image"):
        (tmp_path / "t.png").write_text("text")
        read_rgb8(tmp_path / "t.png")


def test_to_rgb8_shapes_and_dtypes():
    g = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(to_rgb8(g), np.repeat(g[..., None], 3, axis=2))
    np.testing.assert_array_equal(to_rgb8(g[..., None]), np.repeat(g[..., None], 3, axis=2))
    rgb = np.random.default_rng(7).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    out = to_rgb8(rgb)
    np.testing.assert_array_equal(out, rgb)
    assert np.shares_memory(out, rgb)  # already RGB8: no copy
    np.testing.assert_array_equal(to_rgb8(np.full((2, 2, 4), 65535, np.uint16)), np.full((2, 2, 3), 255, np.uint8))
    with pytest.raises(UsageError, match="uint8 or uint16"):
        to_rgb8(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(UsageError, match="shape"):
        to_rgb8(np.zeros((2, 2, 5), np.uint8))


def test_bad_files(tmp_path, rgb):
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("hello, not an image")
    with pytest.raises(InputError, match="not an image"):
        read_image(tmp_path / "text.png")
    with pytest.raises(InputError, match="folder"):
        read_image(tmp_path)
    good = tmp_path / "good.png"
    Image.fromarray(rgb).save(good)
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated|corrupt"):
        read_image(tmp_path / "trunc.png")
    Image.fromarray(rgb).save(tmp_path / "good.jpg")
    data = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError):
        read_image(tmp_path / "trunc.jpg")


def test_write_is_atomic_and_refuses_overwrite(tmp_path, rgb):
    p = tmp_path / "out.png"
    p.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="--overwrite"):
        write_image(p, rgb)
    assert p.read_bytes() == b"keep me"
    write_image(p, rgb, overwrite=True)
    np.testing.assert_array_equal(read_image(p).pixels, rgb)
    with pytest.raises(UsageError, match="cannot write a"):
        write_image(tmp_path / "bad.png", np.zeros((4, 4, 3), np.float32))
    with pytest.raises(OutputError, match="does not exist"):
        write_image(tmp_path / "no" / "dir.png", rgb)
    with pytest.raises(UsageError, match="suffix"):
        write_image(tmp_path / "x.jp2", rgb)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["out.png"]  # no temporary files left
    mode = os.stat(p).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_failed_encode_leaves_nothing(tmp_path):
    # WebP cannot hold an image this large: the encoder fails, no file (and no temp) remains
    a = np.zeros((1, 20000, 3), np.uint8)
    with pytest.raises(OutputError):
        write_image(tmp_path / "wide.webp", a)
    assert list(tmp_path.iterdir()) == []


def test_format_for():
    assert format_for("a.JPEG") == "JPEG" and format_for("b.tiff") == "TIFF"

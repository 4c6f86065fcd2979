"""Property-based tests of the input paths (issue 12), with Hypothesis.

Generated inputs: random bytes, truncations and header mutations of real PNG, JPEG, TIFF, WebP,
GIF (animated) and MP4 files, and random option values, through the ``hanrt`` command (in
process: an exception that escapes ``main`` fails the test with its traceback) and through
``read_image`` + the ``Upscaler``. The properties: never an unexpected exception, always an exit
code from the README's table, never a partial output file or a temporary left behind, never a
damaged existing file.

Example counts (derandomized, so every run tries the same inputs): 120 through read_image and
the Upscaler, 60 image files and 12 videos through ``hanrt upscale``, 30 option sets; about 30 s
on a shared 2-core CPU with the tiny model. ``HANRT_PROPERTY_SCALE=N`` runs N times as many.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hanrt.cli import main  # noqa: E402
from hanrt.errors import InputError  # noqa: E402
from hanrt.io.images import read_image  # noqa: E402
from hanrt_testkit import EXIT_CODES, make_test_video, temporaries  # noqa: E402

pytest.importorskip("onnxruntime")

FAST = ["--backend", "ort-cpu", "--threads", "1", "--tile", "32", "--margin", "4"]
#: Inputs are small; a mutated header may declare a huge image: the bomb guard refuses it early.
MAX_PIXELS = 1 << 16
#: HANRT_PROPERTY_SCALE=N multiplies every example count (a longer hunt; the default suite uses 1).
SCALE = max(1, int(os.environ.get("HANRT_PROPERTY_SCALE", "1")))
SETTINGS = dict(deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _seed_files(photo) -> dict[str, bytes]:
    img = photo[150:166, 220:244]  # 24x16: fast through the tiny model
    out: dict[str, bytes] = {}
    for ext, fmt, kw in (("png", "PNG", {}), ("jpg", "JPEG", {"quality": 90}), ("tif", "TIFF", {}),
                         ("webp", "WEBP", {"quality": 80})):
        b = io.BytesIO()
        Image.fromarray(img).save(b, format=fmt, **kw)
        out[ext] = b.getvalue()
    b = io.BytesIO()
    frames = [Image.fromarray(np.roll(img, 3 * i, axis=1)) for i in range(3)]
    frames[0].save(b, format="GIF", save_all=True, append_images=frames[1:], duration=90, loop=0)
    out["gif"] = b.getvalue()
    return out


@pytest.fixture(scope="module")
def seeds(photo, tmp_path_factory):
    s = _seed_files(photo)
    v = make_test_video(tmp_path_factory.mktemp("prop") / "v.mp4", frames=4, width=32, height=16, audio=False)
    s["mp4"] = v.read_bytes()
    return s


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """Random bytes, a truncation, or byte changes (half of them in the first 64 bytes: the header)."""
    kind = draw(st.sampled_from(["random", "truncate", "mutate", "mutate_header"]))
    if kind == "random":
        return draw(st.binary(min_size=0, max_size=600))
    if kind == "truncate":
        return data[:draw(st.integers(0, max(0, len(data) - 1)))]
    buf = bytearray(data)
    hi = min(64, len(buf)) if kind == "mutate_header" else len(buf)
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, hi - 1))
        buf[pos] = draw(st.integers(0, 255))
    return bytes(buf)


def _check_outputs(folder: Path, out: Path, rc: int, existing: bytes | None) -> None:
    """The properties every run must keep, whatever its input."""
    assert rc in EXIT_CODES, rc
    assert temporaries(folder) == []
    if rc == 0:
        if out.suffix == ".mp4":
            import av

            with av.open(str(out)) as c:
                assert sum(1 for _ in c.decode(video=0)) >= 1
        else:
            with Image.open(out) as im:
                for i in range(getattr(im, "n_frames", 1)):
                    im.seek(i)
                    im.load()  # complete: raises on a truncated file
    elif existing is not None:
        assert out.read_bytes() == existing  # never damaged
    else:
        assert not out.exists()  # never a partial file


@pytest.fixture(scope="module")
def upscaler(tiny_onnx):
    from hanrt.upscaler import Upscaler

    with Upscaler(tiny_onnx, backend="ort-cpu", tile=32, margin=4, threads=1) as up:
        yield up


@pytest.mark.parametrize("ext", ["png", "jpg", "tif", "webp", "gif"])
def test_read_and_upscale_mutated_images(seeds, upscaler, ext):
    """read_image returns pixels or raises InputError; the Upscaler upscales whatever it returns."""

    ran = []

    @settings(max_examples=24 * SCALE, **SETTINGS)
    @given(data=mutated(seeds[ext]))
    def check(data):
        ran.append(1)
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / f"x.{ext}"
            p.write_bytes(data)
            try:
                img = read_image(p, max_pixels=MAX_PIXELS)
            except InputError:
                return
            out = upscaler.upscale(img.pixels)
            assert out.shape[:2] == (img.pixels.shape[0] * 4, img.pixels.shape[1] * 4)
            assert out.dtype == img.pixels.dtype

    check()
    print(f"{ext}: {len(ran)} generated inputs through read_image + Upscaler")
    assert len(ran) >= 12


@pytest.mark.parametrize("ext,examples", [("png", 12), ("jpg", 12), ("tif", 12), ("webp", 12), ("gif", 12),
                                          ("mp4", 12)])
def test_the_command_on_mutated_files(seeds, tiny_onnx, ext, examples):
    out_ext = "mp4" if ext == "mp4" else ext

    ran = []

    @settings(max_examples=examples * SCALE, **SETTINGS)
    @given(data=mutated(seeds[ext]), existing=st.booleans(), overwrite=st.booleans())
    def check(data, existing, overwrite):
        ran.append(1)
        with tempfile.TemporaryDirectory() as d:
            folder = Path(d)
            src = folder / f"in.{ext}"
            src.write_bytes(data)
            out = folder / f"out.{out_ext}"
            keep = seeds[ext] if existing else None
            if keep is not None:
                out.write_bytes(keep)
            argv = ["-q", "upscale", str(src), "-o", str(out), "-m", str(tiny_onnx), *FAST,
                    "--max-pixels", str(MAX_PIXELS)] + (["--overwrite"] if overwrite else [])
            rc = main(argv)
            if existing and not overwrite:
                assert rc == 4 and out.read_bytes() == keep
            _check_outputs(folder, out, rc, keep)

    check()
    print(f"{ext}: {len(ran)} generated inputs through hanrt upscale")
    assert len(ran) >= examples // 2


@settings(max_examples=30 * SCALE, **SETTINGS)
@given(threads=st.integers(-5, 10**6), tile=st.integers(-50, 40000), margin=st.integers(-5, 60),
       batch=st.integers(-3, 5000), quality=st.integers(-20, 1000), max_pixels=st.integers(-10, 10**10),
       suffix=st.sampled_from(["png", "jpg", "webp", "tif", "bmp", "gif", "xyz"]))
def test_random_option_values(seeds, tiny_onnx, threads, tile, margin, batch, quality, max_pixels, suffix):
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        src = folder / "in.png"
        src.write_bytes(seeds["png"])
        out = folder / f"out.{suffix}"
        rc = main(["-q", "upscale", str(src), "-o", str(out), "-m", str(tiny_onnx), "--backend", "ort-cpu",
                   "--threads", str(threads), "--tile", str(tile), "--margin", str(margin), "--batch", str(batch),
                   "--quality", str(quality), "--max-pixels", str(max_pixels)])
        _check_outputs(folder, out, rc, None)
        assert read_image(src).pixels.shape == (16, 24, 3)  # the input is never touched


def test_found_by_the_properties_a_video_cut_inside_its_stream_header(seeds, tmp_path):
    """Found by the scaled-up run: an MP4 cut inside the track's header opened with a stream that
    has no codec context (an AttributeError escaped). Now an InputError, and nothing is written."""
    data = seeds["mp4"]
    cut = data[:data.index(b"vide", data.index(b"hdlr")) + 4]  # the handler type of the video track
    src = tmp_path / "cut.mp4"
    src.write_bytes(cut)
    out = tmp_path / "out.mp4"
    assert main(["-q", "upscale", str(src), "-o", str(out), "--backend", "ort-cpu"]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4"]

"""``hanrt upscale`` end to end, in-process (``hanrt.cli.main``), on real files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hanrt.cli import main
from hanrt.io.images import read_image, write_image
from hanrt.upscaler import Upscaler

pytest.importorskip("onnxruntime")

COMMON = ["--backend", "ort-cpu", "--threads", "1", "--tile", "32", "--margin", "8"]


@pytest.fixture()
def files(tmp_path, photo):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(photo[:40, :56]).save(d / "a.png")
    Image.fromarray(photo[100:133, 200:229]).save(d / "b.jpg", quality=95)
    Image.fromarray(photo[300:320, 10:50, 0]).save(d / "grey.png")
    rgba = np.dstack([photo[:24, :24], np.tile(np.arange(24, dtype=np.uint8) * 10, (24, 1))])
    Image.fromarray(rgba).save(d / "alpha.png")
    return d


def _run(*argv):
    return main(["-q", "upscale", *map(str, argv)])


def test_single_file_equals_the_api(tmp_path, files, tiny_onnx):
    out = tmp_path / "a_x4.png"
    assert _run(files / "a.png", "--output", out, "--model", tiny_onnx, *COMMON) == 0
    got = read_image(out).pixels
    with Upscaler(tiny_onnx, backend="ort-cpu", tile=32, margin=8, threads=1) as up:
        ref = up.upscale(read_image(files / "a.png").pixels)
    np.testing.assert_array_equal(got, ref)


def test_folder_and_glob_into_a_folder(tmp_path, files, tiny_onnx, capsys):
    out = tmp_path / "out"
    rc = _run(files, "--output", out, "--model", tiny_onnx, *COMMON)
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a.png", "alpha.png", "b.jpg", "grey.png"]
    assert read_image(out / "grey.png").pixels.shape == (80, 160)  # grey stays grey
    a = read_image(out / "alpha.png").pixels
    assert a.shape == (96, 96, 4)
    np.testing.assert_array_equal(
        a[..., 3], np.asarray(Image.open(files / "alpha.png").getchannel("A").resize((96, 96), Image.BICUBIC)))
    out2 = tmp_path / "out2"
    assert _run(str(files / "*.png"), "--output", out2, "--model", tiny_onnx, *COMMON) == 0
    assert sorted(p.name for p in out2.iterdir()) == ["a.png", "alpha.png", "grey.png"]


def test_bad_files_are_counted_and_the_batch_goes_on(tmp_path, files, tiny_onnx, capsys):
    (files / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (files / "text.jpg").write_text("not a jpeg")
    out = tmp_path / "out"
    rc = main(["upscale", str(files), str(tmp_path / "missing.png"), "--output", str(out),
               "--model", str(tiny_onnx), *COMMON])
    err = capsys.readouterr().err
    assert rc == 3  # InputError
    assert "broken.png" in err and "text.jpg" in err and "missing.png" in err
    assert "4 upscaled, 3 failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "alpha.png", "b.jpg", "grey.png"]


def test_unknown_output_suffix_fails_that_file_only(tmp_path, files, tiny_onnx, capsys):
    """The output keeps the input's name: an input whose suffix is no image format to write is
    counted as failed, and the rest of the batch is still done."""
    (tmp_path / "b.img").write_bytes((files / "a.png").read_bytes())
    out = tmp_path / "out"
    rc = main(["upscale", str(files / "a.png"), str(tmp_path / "b.img"), "--output", str(out),
               "--model", str(tiny_onnx), *COMMON])
    err = capsys.readouterr().err
    assert rc == 2  # UsageError, the first failure's class
    assert "b.img" in err and "unknown image suffix" in err and "1 upscaled, 1 failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]


def test_video_suffixes_are_those_of_the_video_module(tmp_path, monkeypatch):
    """``hanrt upscale`` and ``hanrt stream`` agree on what a video is: a .flv goes to the pipeline."""
    import hanrt.cli.stream as stream_cli
    import hanrt.io.images as images_io
    import hanrt.io.video as video_io
    from hanrt.cli import upscale as up_cli

    assert up_cli.VIDEO_SUFFIXES is video_io.VIDEO_SUFFIXES
    assert up_cli.IMAGE_SUFFIXES is images_io.IMAGE_SUFFIXES
    clip = tmp_path / "clip.flv"
    clip.write_bytes(b"FLV")  # never decoded: the video branch is replaced below
    pic = tmp_path / "pic.png"
    Image.new("RGB", (4, 4)).save(pic)
    seen = []

    def fake(args, videos, images, misses, upscale_images):
        seen.append((videos, images))
        return 0

    monkeypatch.setattr(stream_cli, "run_upscale_videos", fake)
    assert _run(clip, "--output", tmp_path / "out.mp4") == 0
    assert _run(clip, pic, "--output", tmp_path / "o") == 0
    assert seen == [([clip], []), ([clip], [pic])]


def test_ensemble_option_equals_the_api_and_bad_sizes_are_refused(tmp_path, files, tiny_onnx, capsys):
    out = tmp_path / "a_x4.png"
    assert _run(files / "a.png", "--output", out, "--model", tiny_onnx, "--ensemble", "4", *COMMON) == 0
    with Upscaler(tiny_onnx, backend="ort-cpu", tile=32, margin=8, threads=1, ensemble=4) as up:
        ref = up.upscale(read_image(files / "a.png").pixels)
    np.testing.assert_array_equal(read_image(out).pixels, ref)
    with pytest.raises(SystemExit) as e:
        _run(files / "a.png", "--output", tmp_path / "b.png", "--model", tiny_onnx, "--ensemble", "3")
    assert e.value.code == 2 and "--ensemble" in capsys.readouterr().err
    assert not (tmp_path / "b.png").exists()


def test_existing_output_needs_overwrite(tmp_path, files, tiny_onnx, capsys):
    out = tmp_path / "a.png"
    out.write_bytes(b"old")
    assert _run(files / "a.png", "--output", out, "--model", tiny_onnx, *COMMON) == 4
    assert out.read_bytes() == b"old"
    assert "--overwrite" in capsys.readouterr().err
    assert _run(files / "a.png", "--output", out, "--model", tiny_onnx, "--overwrite", *COMMON) == 0
    assert read_image(out).pixels.shape == (160, 224, 3)


def test_tile_zero_and_large_tile_are_whole_image(tmp_path, files, tiny_onnx):
    a, b = tmp_path / "t0.png", tmp_path / "t999.png"
    assert _run(files / "a.png", "--output", a, "--model", tiny_onnx, "--backend", "ort-cpu", "--tile", "0") == 0
    assert _run(files / "a.png", "--output", b, "--model", tiny_onnx, "--backend", "ort-cpu", "--tile", "999") == 0
    np.testing.assert_array_equal(read_image(a).pixels, read_image(b).pixels)


def test_16bit_stays_16bit(tmp_path, tiny_onnx, photo):
    pytest.importorskip("cv2")
    src = tmp_path / "deep.png"
    write_image(src, photo[:20, :20].astype(np.uint16) * 257 + 77)
    out = tmp_path / "deep_x4.png"
    assert _run(src, "--output", out, "--model", tiny_onnx, *COMMON) == 0
    back = read_image(out)
    assert back.bits == 16 and back.pixels.shape == (80, 80, 3)


def test_16bit_grey_alpha_png_to_tiff(tmp_path, tiny_onnx, photo):
    """A 16-bit grey + alpha PNG reads as HxWx2 uint16 (with OpenCV); its TIFF result is RGBA."""
    pytest.importorskip("cv2")
    src = tmp_path / "la16.png"
    grey = photo[:12, :10, 1].astype(np.uint16) * 257
    write_image(src, np.dstack([grey, np.full_like(grey, 40000)]))
    assert read_image(src).pixels.shape == (12, 10, 2)
    out = tmp_path / "la16_x4.tif"
    assert _run(src, "--output", out, "--model", tiny_onnx, *COMMON) == 0
    back = read_image(out)
    assert back.bits == 16 and back.pixels.shape == (48, 40, 4)
    np.testing.assert_array_equal(back.pixels[..., 0], back.pixels[..., 2])  # grey in R, G and B


def test_compare_picture(tmp_path, files, tiny_onnx):
    out = tmp_path / "o"
    assert _run(files / "a.png", "--output", out, "--model", tiny_onnx, "--compare", *COMMON) == 0
    cmp = read_image(out / "a_compare.png").pixels
    assert cmp.ndim == 3 and cmp.shape[1] >= 2 * 224  # two full-size panels side by side


def test_timings_print_one_line_per_image(tmp_path, files, tiny_onnx, capsys):
    import re

    out = tmp_path / "o"
    assert _run(files / "a.png", files / "alpha.png", "--output", out, "--model", tiny_onnx, "--timings", *COMMON) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("hanrt: timings ")]
    assert [ln.split()[2] for ln in lines] == ["a.png:", "alpha.png:"]
    for ln in lines:
        total = float(re.search(r": upscale ([\d.]+) ms = ", ln).group(1))
        stages = dict((k, float(v)) for k, v in re.findall(r"(\w+) ([\d.]+) ms \(\d+%\)", ln))
        assert list(stages) == ["prepare", "gather", "compute", "stitch", "finish", "other"]
        assert stages["compute"] > 0 and sum(stages.values()) == pytest.approx(total, abs=0.35)  # 6 x 0.1 ms rounding
        assert re.search(r"; read [\d.]+ ms, write [\d.]+ ms$", ln)
    # without --timings nothing is printed, and the images are the same
    assert _run(files / "a.png", "--output", tmp_path / "p.png", "--model", tiny_onnx, *COMMON) == 0
    assert "timings" not in capsys.readouterr().err
    np.testing.assert_array_equal(read_image(out / "a.png").pixels, read_image(tmp_path / "p.png").pixels)


def test_bomb_guard_message(tmp_path, files, tiny_onnx, capsys):
    rc = _run(files / "a.png", "--output", tmp_path / "x.png", "--model", tiny_onnx, "--max-pixels", "100", *COMMON)
    assert rc == 3 and "--max-pixels 2240" in capsys.readouterr().err


def test_usage_errors(tmp_path, files, tiny_onnx, capsys):
    assert _run(files / "a.png", "--output", tmp_path / "x.jp2", "--model", tiny_onnx) == 2
    assert _run(files / "a.png", "--output", tmp_path / "x.png", "--model", tiny_onnx, "--tile", "16", "--margin", "8") == 2
    assert _run(tmp_path / "nothing*.png", "--output", tmp_path / "o", "--model", tiny_onnx) == 3
    assert _run(files, "--output", tmp_path / "one.png", "--model", tiny_onnx) == 2
    assert "output folder" in capsys.readouterr().err


def test_missing_model(tmp_path, files, capsys):
    assert _run(files / "a.png", "--output", tmp_path / "x.png", "--model", tmp_path / "m.onnx") == 6
    assert "does not exist" in capsys.readouterr().err


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["upscale", "--help"])
    assert e.value.code == 0
    h = capsys.readouterr().out
    for opt in ("--model", "--backend", "--tile", "--margin", "--overwrite", "--compare", "--max-pixels", "--timings"):
        assert opt in h


def test_auto_backend_says_what_it_picked(tmp_path, files, tiny_onnx, capsys):
    assert main(["upscale", str(files / "a.png"), "--output", str(tmp_path / "x.png"), "--model", str(tiny_onnx),
                 "--threads", "1", "--tile", "0"]) == 0
    err = capsys.readouterr().err
    assert "hanrt: backend ort-" in err and "ONNX Runtime" in err
